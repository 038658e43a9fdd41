"""The store and its exposition: what a scrape shows after a sequence of probe results."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.outcome import Check, Phase, Reason
from exporter.result import Findings, ProbeResult
from exporter.serve.metrics import FAMILIES, render
from exporter.state import Store

CONFIG = """
defaults:
  smtp: {host: h, username: u@x.org, password: p}
  imap: {host: h, username: u@x.org, password: p}
targets:
  - name: a
  - name: b
    checks: [smtp_login]
"""


def _scrape(store: Store) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = render(store)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _result(check: Check, success: bool, **kwargs: object) -> ProbeResult:
    """A result; keyword arguments name fields of the result or of its findings."""
    own = {k: v for k, v in kwargs.items() if k in ProbeResult.__dataclass_fields__}
    found = Findings(**{k: v for k, v in kwargs.items() if k not in own})  # type: ignore[arg-type]
    return ProbeResult(
        target="a",
        check=check,
        success=success,
        started=time.time(),
        duration=0.5,
        found=found,
        **own,  # type: ignore[arg-type]
    )


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_known_series_exist_before_any_probe() -> None:
    store = Store()
    store.configure(config.parse(CONFIG))
    samples = _scrape(store)
    for reason in Reason:
        assert (
            samples[
                _key(
                    "mailbox_probe_failures_total",
                    target="a",
                    check="roundtrip",
                    reason=reason.value,
                )
            ]
            == 0
        )
    assert samples[_key("mailbox_roundtrip_delivery_seconds_count", target="a")] == 0
    assert _key("mailbox_roundtrip_delivery_seconds_count", target="b") not in samples
    assert _key("mailbox_probe_success", target="a", check="roundtrip") not in samples


def test_failures_in_a_row_and_what_failed() -> None:
    store = Store()
    store.configure(config.parse(CONFIG))
    rt = {"target": "a", "check": "roundtrip"}
    for _ in range(2):
        store.record(
            _result(Check.ROUNDTRIP, False, reason=Reason.NOT_DELIVERED, phase=Phase.DELIVERY)
        )
    samples = _scrape(store)
    assert samples[_key("mailbox_probe_success", **rt)] == 0
    assert samples[_key("mailbox_probe_consecutive_failures", **rt)] == 2
    assert samples[_key("mailbox_probe_failures_total", **rt, reason="not_delivered")] == 2
    assert (
        samples[_key("mailbox_probe_failed_info", **rt, phase="delivery", reason="not_delivered")]
        == 1
    )

    store.record(
        _result(
            Check.ROUNDTRIP,
            True,
            delivery_seconds=0.3,
            cleanup_deleted=2,
            late_arrivals=1,
            phases={Phase.DELIVERY: 0.3},
        )
    )
    samples = _scrape(store)
    assert samples[_key("mailbox_probe_success", **rt)] == 1
    assert samples[_key("mailbox_probe_consecutive_failures", **rt)] == 0
    assert not any(name == "mailbox_probe_failed_info" for name, _ in samples)
    assert samples[_key("mailbox_probe_phase_duration_seconds", **rt, phase="delivery")] == 0.3
    assert samples[_key("mailbox_roundtrip_delivery_seconds_bucket", target="a", le="0.25")] == 0
    assert samples[_key("mailbox_roundtrip_delivery_seconds_bucket", target="a", le="0.5")] == 1
    assert samples[_key("mailbox_roundtrip_delivery_seconds_count", target="a")] == 1
    assert samples[_key("mailbox_roundtrip_late_arrivals_total", target="a")] == 1
    assert samples[_key("mailbox_cleanup_deleted_total", target="a")] == 2
    assert samples[_key("mailbox_probes_total", **rt)] == 3


def test_reload_keeps_remaining_state_and_drops_the_rest() -> None:
    store = Store()
    store.configure(config.parse(CONFIG))
    store.record(_result(Check.ROUNDTRIP, True))
    store.configure(
        config.parse(
            CONFIG.replace("  - name: a\n", "  - name: a\n    checks: [roundtrip]\n").replace(
                "  - name: b\n    checks: [smtp_login]\n", ""
            )
        )
    )
    samples = _scrape(store)
    assert samples[_key("mailbox_probes_total", target="a", check="roundtrip")] == 1
    assert not any(dict(labels).get("target") == "b" for _, labels in samples)
    assert not any(dict(labels).get("check") == "smtp_login" for _, labels in samples)


def test_target_info_carries_each_targets_labels() -> None:
    store = Store()
    store.configure(
        config.parse(
            CONFIG.replace("  - name: a\n", "  - name: a\n    labels: {provider: google}\n")
        )
    )
    samples = _scrape(store)
    assert samples[_key("mailbox_target_info", target="a", provider="google")] == 1
    assert samples[_key("mailbox_target_info", target="b", provider="")] == 1


def test_the_exposition_passes_promtool_and_escapes_label_values(tmp_path: Path) -> None:
    """Checked against Prometheus' own parser, with a label value that needs escaping."""
    store = Store()
    store.configure(
        config.parse(
            CONFIG.replace(
                "  - name: a\n", '  - name: a\n    labels: {site: "quote \\" back \\\\ slash"}\n'
            )
        )
    )
    store.record(_result(Check.ROUNDTRIP, False, reason=Reason.TIMEOUT, phase=Phase.DELIVERY))
    samples = _scrape(store)
    assert samples[_key("mailbox_target_info", target="a", site='quote " back \\ slash')] == 1
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/bootstrap"
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=render(store).encode(),
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_is_documented() -> None:
    names = set(FAMILIES) | {f.on_demand for f in FAMILIES.values() if f.on_demand}
    assert len(names) >= 20
    documented = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert sorted(n for n in names if f"`{n}" not in documented) == []

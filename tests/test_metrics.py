"""The store and its exposition: what a scrape shows after a sequence of probe results."""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.outcome import Check, Phase, Reason
from exporter.result import Findings, ProbeResult
from exporter.serve import metrics
from exporter.serve.metrics import FAMILIES, render, render_async
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
        target=str(own.pop("target", "a")),
        check=check,
        success=success,
        started=time.time(),
        duration=0.5,
        found=found,
        **own,  # type: ignore[arg-type]
    )


SMTP = "{host: h, username: u, password: p}"


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_known_series_exist_before_any_probe() -> None:
    """The counters rules take rates of are there at 0 from the start; those by reason and the
    on-demand refusals appear at their first increment."""
    store = Store()
    store.configure(config.parse(CONFIG))
    samples = _scrape(store)
    for check in ("roundtrip", "smtp_login", "imap_login"):
        assert samples[_key("mailbox_probes_total", target="a", check=check)] == 0
        assert samples[_key("mailbox_probes_failed_total", target="a", check=check)] == 0
    assert samples[_key("mailbox_roundtrip_junk_total", target="a")] == 0
    assert samples[_key("mailbox_cleanup_failures_total", target="a")] == 0
    absent = ("mailbox_probe_failures_total", "mailbox_on_demand_refused_total")
    assert not [key for key in samples if key[0] in absent]
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
    assert samples[_key("mailbox_probes_failed_total", **rt)] == 2
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
    assert samples[_key("mailbox_roundtrip_delivery_seconds_bucket", target="a", le="1.0")] == 1
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


def test_a_refused_on_demand_probe_is_counted_from_its_first() -> None:
    store = Store()
    store.configure(config.parse(CONFIG))
    store.refused_on_demand("a", Check.ROUNDTRIP)
    samples = _scrape(store)
    assert samples[_key("mailbox_on_demand_refused_total", target="a", check="roundtrip")] == 1
    assert _key("mailbox_on_demand_refused_total", target="a", check="imap_login") not in samples


def test_a_scrape_gives_the_event_loop_back_while_it_writes() -> None:
    """The first scrape of a large store is written in slices: other tasks run in between,
    waiting about a slice each, and the text is what writing it at once gives."""
    store = _large_store(2000)
    waits: list[float] = []
    took: list[float] = []

    async def scrape() -> str:
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                waits.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        begin = time.perf_counter()
        text = b"".join(await render_async(store)).decode()
        took.append(time.perf_counter() - begin)
        done.set()
        await ticking
        return text

    gc.disable()  # the collector's pauses are the whole process's, not the scrape's
    try:
        text = asyncio.run(scrape())
    finally:
        gc.enable()
    assert text == _fresh(store)
    # Medians: a busy machine can stop the process in the middle of any slice.
    assert len(waits) >= 10, (len(waits), took)
    assert statistics.median(waits) < took[0] / 10, (statistics.median(waits), took)


def test_a_reload_during_a_scrape_shows_the_new_configuration() -> None:
    """A reload between two slices replaces the targets: the scrape writes them afresh, and
    the scrapes after it stay what writing everything gives."""
    store = _large_store(400)
    smaller = "targets:\n" + "".join(
        f"  - name: t{i}\n    checks: [smtp_login]\n    smtp: {SMTP}\n" for i in range(0, 800, 2)
    )

    async def scrape() -> str:
        writing = asyncio.create_task(render_async(store))
        for _ in range(3):
            await asyncio.sleep(0)
        store.configure(config.parse(smaller))
        store.record(_result(Check.SMTP_LOGIN, False, reason=Reason.TIMEOUT, target="t2"))
        return b"".join(await writing).decode()

    with _slices(0.0):
        text = asyncio.run(scrape())
    assert 'target="t1"' not in text and 'target="t798"' in text
    assert text == _fresh(store)
    store.record(_result(Check.SMTP_LOGIN, True, target="t4"))
    assert render(store) == _fresh(store)


def test_scrapes_at_once_each_get_a_whole_exposition() -> None:
    store = _large_store(300)

    async def scrapes() -> list[str]:
        done = await asyncio.gather(*(render_async(store) for _ in range(3)))
        return [b"".join(chunks).decode() for chunks in done]

    with _slices(0.0):
        texts = asyncio.run(scrapes())
    assert texts == [_fresh(store)] * 3


def _large_store(targets: int) -> Store:
    store = Store()
    store.configure(
        config.parse(
            "defaults:\n"
            "  smtp: {host: h, username: u@x.org, password: p}\n"
            "  imap: {host: h, username: u@x.org, password: p}\n"
            "targets:\n" + "".join(f"  - name: t{i}\n" for i in range(targets))
        )
    )
    for i in range(targets):
        for check in (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN):
            store.record(_result(check, True, target=f"t{i}", phases={Phase.SMTP_CONNECT: 0.1}))
    return store


def _fresh(store: Store) -> str:
    """What the store renders with nothing kept from earlier scrapes."""
    kept = metrics._EXPOSITIONS.pop(store, None)
    try:
        return render(store)
    finally:
        if kept is not None:
            metrics._EXPOSITIONS[store] = kept


@contextmanager
def _slices(seconds: float) -> Iterator[None]:
    """Scrapes written in slices of ``seconds`` (0: one target or family each)."""
    kept = metrics.SLICE_SECONDS
    metrics.SLICE_SECONDS = seconds  # type: ignore[misc]
    try:
        yield
    finally:
        metrics.SLICE_SECONDS = kept  # type: ignore[misc]

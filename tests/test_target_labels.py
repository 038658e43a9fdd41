"""Static target labels, from the configuration to ``/metrics``: whatever the loader accepts,
Prometheus can parse; whatever it could not, the loader refuses with the key path."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.config import ConfigError
from exporter.serve import metrics
from exporter.state import Store

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
OWN = {"target", "check", "phase", "reason", "protocol", "version", "le", "method", "result"}
SCRAPE = {"job", "instance"}


def _document(labels: dict[str, Any]) -> str:
    """A one-target configuration; YAML escapes all but ASCII, so that the strings read back
    are the strings written (YAML folds U+0085 and U+2028 written as such into spaces)."""
    target = {
        "name": "t",
        "labels": labels,
        "imap": {"host": "h", "username": "u", "password": "p"},
    }
    return yaml.safe_dump({"targets": [target]}, allow_unicode=False)


def _exposition(loaded: config.Config) -> str:
    store = Store()
    store.configure(loaded)
    return metrics.render(store)


def _info_labels(text: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mailbox_target_info"
    ]


def test_config_check_refuses_a_label_name_ending_in_a_line_break(tmp_path: Path) -> None:
    """``$`` also matches before a final line break: such a name passed the check, and its
    series made every scrape of ``/metrics`` unparseable."""
    file = tmp_path / "c.yml"
    file.write_text(_document({"team\n": "mail"}))
    run = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(file), "--config.check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "targets[0].labels.team\\n: expected a Prometheus label name" in run.stderr
    assert "Traceback" not in run.stderr


NAMES = (
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,70}", fullmatch=True)
    | st.sampled_from(
        [*OWN, *SCRAPE, "provider", "__meta", "team\n", "team\r\n", "a-b", "1a", "é", " a", ""]
    )
    | st.text(max_size=8)
)
VALUES = (
    st.text(max_size=140)
    | st.sampled_from(['"', "\\", "\n", '\\"', "a\\nb", "\u2028\x85\r\t\x00", "\ud800", ""])
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
)


def _acceptable(labels: dict[str, Any]) -> bool:
    """Prometheus' rules for a label, with the exporter's own names kept out."""
    for name, value in labels.items():
        if not PROMETHEUS_LABEL.fullmatch(name) or name.startswith("__") or len(name) > 63:
            return False
        if name in OWN | SCRAPE:
            return False
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return False
        text = str(value)
        if not text or len(text) > 128 or any(0xD800 <= ord(ch) < 0xE000 for ch in text):
            return False
    return True


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, VALUES, max_size=4))
def test_labels_the_loader_accepts_are_exported_exactly(labels: dict[str, Any]) -> None:
    try:
        loaded = config.parse(_document(labels))
    except ConfigError as exc:
        assert not _acceptable(labels), exc
        return
    assert _acceptable(labels)
    expected = {name: str(value) for name, value in labels.items()}
    assert loaded.targets[0].labels == expected
    assert _info_labels(_exposition(loaded)) == [{"target": "t", **expected}]


HOSTILE: tuple[dict[str, str], ...] = (
    {"team\n": "mail"},
    {"team\r\n": "mail"},
    {"team": 'say "hi"\\n\nthen\r\x00\t\u2028\x85 \\'},
    {"team": "\\", "region": '"', "tier": "\n"},
    {"provider": "microsoft", "zone": "é✓😀"},
)


def test_promtool_accepts_every_exposition_of_labels_the_loader_accepts() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/bootstrap"
    for labels in HOSTILE:
        try:
            loaded = config.parse(_document(labels))
        except ConfigError as exc:
            assert "expected a Prometheus label name" in str(exc)
            continue
        text = _exposition(loaded)
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert checked.returncode == 0, (labels, checked.stdout + checked.stderr)
        assert _info_labels(text) == [{"target": "t", **labels}]

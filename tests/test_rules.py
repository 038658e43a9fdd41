"""The shipped Prometheus rules and Alertmanager configuration, checked by their own tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is installed by scripts/bootstrap"
    return path


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rules_are_valid() -> None:
    assert [p.name for p in RULES] == ["mailbox.rules.yml"]
    out = _run(_tool("promtool"), "check", "rules", *map(str, RULES))
    assert "SUCCESS: 36 rules found" in out


@pytest.mark.services  # promtool's rule tests: not in the quick tier
def test_every_alert_fires_and_stays_silent_when_it_should() -> None:
    out = _run(_tool("promtool"), "test", "rules", "tests/prometheus/mailbox-rules.test.yml")
    assert "SUCCESS" in out


def test_every_alert_has_a_rule_test_and_a_runbook_section() -> None:
    alerts = [
        line.split(":", 1)[1].strip()
        for path in RULES
        for line in path.read_text().splitlines()
        if line.strip().startswith("- alert:")
    ]
    tested = (ROOT / "tests" / "prometheus" / "mailbox-rules.test.yml").read_text()
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for alert in alerts:
        assert f"alertname: {alert}," in tested or f"alertname: {alert}\n" in tested, alert
        assert f"## {alert}" in runbook, alert
        assert f"#{alert.lower()}" in "".join(p.read_text() for p in RULES), alert


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("amtool", ["check-config", "deploy/alertmanager/alertmanager.yml"]),
        ("promtool", ["check", "config", "deploy/prometheus/prometheus.yml"]),
    ],
)
def test_example_configurations_are_valid(tool: str, args: list[str]) -> None:
    _run(_tool(tool), *args)

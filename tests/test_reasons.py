"""The reason labels are one contract in code, docs, README, rules and runbook.

Metrics initialise a series per reason, alerts match reasons by regular expression, and
on-call reads the docs: a reason added or renamed in one place only would page wrongly.
(The Kubernetes copy of the rules is kept equal to them by tests/test_deploy_kubernetes.py.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from exporter.outcome import Reason

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "mailbox.rules.yml"
REASONS = {reason.value for reason in Reason}
_MATCHER = re.compile(r'reason\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    return text[start : following if following >= 0 else len(text)]


def _alerts() -> dict[str, str]:
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def _matched(expr: str) -> set[str]:
    """The reasons an alert expression lets through, as Prometheus matches labels."""
    matched = set(REASONS)
    for op, value in _MATCHER.findall(expr):
        if op in ("=", "!="):
            hit = {reason for reason in REASONS if reason == value}
        else:
            hit = {reason for reason in REASONS if re.fullmatch(value, reason)}
        matched &= hit if op in ("=", "=~") else REASONS - hit
    return matched


def test_the_reason_table_documents_every_reason_and_no_other() -> None:
    table = _section(ROOT / "docs" / "metrics.md", "## Reasons")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == REASONS


def test_every_reason_row_gives_an_example_reply() -> None:
    table = _section(ROOT / "docs" / "metrics.md", "## Reasons")
    for row in re.findall(r"^\| `[a-z_]+` \|.*$", table, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) >= 3 and cells[2], row


def test_the_readme_lists_every_reason() -> None:
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("a failed probe names the phase and one reason") :]
    sentence = sentence[: sentence.index(". ")]
    assert set(re.findall(r"`([a-z_]+)`", sentence)) == REASONS


def test_the_runbook_says_what_to_do_for_every_reason() -> None:
    section = _section(ROOT / "docs" / "runbook.md", "## What to do for each reason")
    assert set(re.findall(r"`([a-z_]+)`", section)) >= REASONS


def test_every_reason_named_in_the_rules_is_a_reason() -> None:
    named = {
        name for _, value in _MATCHER.findall(RULES.read_text()) for name in re.split(r"\|", value)
    }
    assert named, "the rules match on reasons"
    assert named <= REASONS, named - REASONS


def test_unavailable_pages_with_the_outage_alerts_and_never_as_a_login_failure() -> None:
    alerts = _alerts()
    outage = _matched(alerts["MailboxServerUnreachable"])
    login = _matched(alerts["MailboxLoginFailing"])
    assert Reason.UNAVAILABLE in outage and Reason.CONNECT_REFUSED in outage
    assert Reason.UNAVAILABLE not in login
    # Every reason pages as exactly one of the two.
    assert outage | login == REASONS and not outage & login
    assert Reason.UNAVAILABLE in _matched(alerts["MailboxRoundTripFailing"])
    # The provider-wide and widespread alerts count failing targets whatever their reason.
    for name in ("MailboxProviderOutage", "MailboxWidespreadOutage"):
        assert "reason" not in alerts[name], name

"""Sending budgets: each sending account's daily volume against its provider's cap, refused
past the documented share with the key to change, printed by --config.check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter import config
from exporter.config import ConfigError, budget
from exporter.outcome import Check

ROOT = Path(__file__).parent.parent

GMAIL_SMTP = (
    "    smtp: {host: smtp.gmail.com, username: probe@corp.example, password: p}\n"
    "    imap: {host: imap.gmail.com, username: probe@corp.example, password: p}\n"
)
GRAPH = "    graph: {tenant: t, client_id: c, client_secret: s, mailbox: probe@corp.example}\n"
OWN = (
    "    smtp: {host: mail.corp.example, username: probe@corp.example, password: p}\n"
    "    imap: {host: mail.corp.example, username: probe@corp.example, password: p}\n"
)


def _parse(text: str) -> config.Config:
    return config.parse(text)


@pytest.mark.parametrize("section", [GMAIL_SMTP, GRAPH], ids=["gmail-smtp", "graph"])
def test_the_defaults_of_a_hosted_account_stay_well_inside_its_cap(section: str) -> None:
    parsed = _parse("targets:\n  - name: t\n" + section)
    (account,) = budget.accounts(parsed)
    assert account.cap is not None and account.over() is None
    assert account.per_day <= budget.SHARE * account.cap.per_day / 1.5, "well inside"


def test_a_round_trip_every_minute_through_gmail_is_refused_naming_the_key() -> None:
    text = "targets:\n  - name: t\n    interval: {roundtrip: 1m}\n" + GMAIL_SMTP
    with pytest.raises(ConfigError) as raised:
        _parse(text)
    message = str(raised.value)
    assert message.startswith("line 3: targets[0].interval.roundtrip: probe@corp.example")
    assert "1,728 probe messages a day" in message and "Google Workspace's 2,000" in message


def test_on_demand_round_trips_count_at_their_spacing() -> None:
    text = (
        "global: {on_demand: {roundtrip_every: 1m}}\n"
        "targets:\n  - name: t\n    interval: {roundtrip: 30m}\n" + GMAIL_SMTP
    )
    with pytest.raises(ConfigError, match="1,488 probe messages a day"):
        _parse(text)


def test_targets_sending_as_one_account_count_together() -> None:
    """Exchange Online's 30 messages a minute per mailbox: eight targets sending as one
    mailbox may all send in the same minute, scheduled and on demand."""
    targets = "".join(f"  - name: t{i}\n{GRAPH}" for i in range(8))
    with pytest.raises(ConfigError, match=r"a minute at most.*with targets\[1\]"):
        _parse("targets:\n" + targets)
    assert _parse("targets:\n" + "".join(f"  - name: t{i}\n{GRAPH}" for i in range(7)))


def test_a_server_of_ones_own_has_no_cap() -> None:
    parsed = _parse("targets:\n  - name: t\n    interval: 10s\n" + OWN)
    (account,) = budget.accounts(parsed)
    assert account.cap is None and account.over() is None
    assert parsed.targets[0].interval(Check.ROUNDTRIP) == 10


def test_config_check_prints_each_accounts_volume(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - name: m365\n" + GRAPH + "  - name: own\n" + OWN)
    run = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "probe@corp.example: 576 messages a day; 6% of Exchange Online's 10,000" in run.stdout
    assert "probe@corp.example: 1,728 messages a day; no published cap" in run.stdout

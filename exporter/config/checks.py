"""What each check needs and how often it runs by default: the facts configuration loading
checks a target against. The probers themselves are in :mod:`exporter.probes.registry`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from exporter.config.model import Schedule, Target
from exporter.outcome import Check


@dataclass(frozen=True)
class CheckSpec:
    schedule: Schedule
    """The default interval and timeout."""
    login_of: str | None = None
    """For a login check: the transport whose fresh login it checks."""

    def needs(self, target: Target) -> tuple[str, ...]:
        """The transport sections the check needs on ``target``."""
        if self.login_of is not None:
            return (self.login_of,)
        return (target.sender, target.receiver)


LOGIN: Final = Schedule(interval=30.0, timeout=15.0)
"""Logins are checked twice as often as mail is sent: a login outage then pages within two
minutes, while the round trip stays within hosted providers' daily sending limits."""

CHECKS: Final[dict[Check, CheckSpec]] = {
    Check.ROUNDTRIP: CheckSpec(Schedule(interval=60.0, timeout=30.0)),
    Check.SMTP_LOGIN: CheckSpec(LOGIN, login_of="smtp"),
    Check.IMAP_LOGIN: CheckSpec(LOGIN, login_of="imap"),
    Check.GRAPH_LOGIN: CheckSpec(LOGIN, login_of="graph"),
    Check.GMAIL_LOGIN: CheckSpec(LOGIN, login_of="gmail"),
    Check.POP3_LOGIN: CheckSpec(LOGIN, login_of="pop3"),
}

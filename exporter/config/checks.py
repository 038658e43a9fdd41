"""What each check needs and how often it runs by default: the facts configuration loading
checks a target against. The probers themselves are in :mod:`exporter.probes.registry`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from exporter.config.model import Schedule, Target
from exporter.outcome import Check, Reason


@dataclass(frozen=True)
class CheckSpec:
    schedule: Schedule
    """The default interval and timeout."""
    reasons: frozenset[Reason]
    """The reasons its probes can fail with (docs/metrics.md, "Reasons by check"). Their
    ``mailbox_probe_failures_total`` series appear at their first failure; the rules take
    ``rate()`` only of ``mailbox_probes_failed_total``, present from the start."""
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

ARRIVAL: Final = frozenset({Reason.NOT_DELIVERED, Reason.JUNK})
"""How a message can fail to arrive: only a round trip looks for one."""
LOGGING_IN: Final = frozenset(Reason) - ARRIVAL - {Reason.SEND_REJECTED}
"""A login check connects, negotiates TLS, gets a token or logs in, and opens the mailbox
where its protocol has one (an IMAP folder, a POP3 maildrop, an API's mailbox); it sends
nothing."""
SMTP_LOGGING_IN: Final = LOGGING_IN - {Reason.MAILBOX_UNAVAILABLE} | {Reason.SEND_REJECTED}
"""SMTP opens no mailbox before sending; a reply naming a refused sender (5.1.7, 5.1.8) counts
as a refused sending whenever it comes, the greeting and AUTH included."""

CHECKS: Final[dict[Check, CheckSpec]] = {
    Check.ROUNDTRIP: CheckSpec(Schedule(interval=60.0, timeout=30.0), frozenset(Reason)),
    Check.SMTP_LOGIN: CheckSpec(LOGIN, SMTP_LOGGING_IN, login_of="smtp"),
    Check.IMAP_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="imap"),
    Check.GRAPH_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="graph"),
    Check.GMAIL_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="gmail"),
    Check.POP3_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="pop3"),
    Check.EWS_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="ews"),
    Check.JMAP_LOGIN: CheckSpec(LOGIN, LOGGING_IN, login_of="jmap"),
}

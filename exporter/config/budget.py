"""Sending budgets: how much probe mail each account sends a day, against its provider's cap.

Hosted providers cap what one account may send (Gmail blocks an account that reaches its daily
limit for up to 24 hours; Exchange Online refuses a mailbox past its recipient rate). A round
trip every minute is 1,440 messages a day, and every on-demand round trip comes on top: the
monitor must never be what exhausts the account. The configuration is refused if the probes
of one account, scheduled and on demand at their spacing, would use more than :data:`SHARE`
of its cap. Pure: reads a configuration, does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from exporter.config.model import (
    Config,
    GmailConfig,
    GraphConfig,
    ServerConfig,
    Target,
    TransportConfig,
)
from exporter.outcome import Check

SHARE: Final = 0.5
"""The part of an account's cap the probes may use: the rest is for the people (and
programs) who send as that account, and for the retries and on-call probes nobody planned."""
DAY: Final = 86_400.0
MINUTE: Final = 60.0
HOSTED_ROUNDTRIP_INTERVAL: Final = 300.0
"""The default round-trip interval for an account with a published cap (one every minute is
for servers of one's own): 288 a day, and as many on demand at the default spacing."""


@dataclass(frozen=True)
class Cap:
    """A provider's published sending limit for one account."""

    provider: str
    per_day: int
    per_minute: int | None
    source: str


GMAIL: Final = Cap(
    "Google Workspace",
    2_000,
    None,
    "Gmail sending limits in Google Workspace: 2,000 messages a day (500 for trial and "
    "consumer accounts), the account blocked for up to 24 hours once reached",
)
EXCHANGE_ONLINE: Final = Cap(
    "Exchange Online",
    10_000,
    30,
    "Exchange Online limits: 10,000 recipients a day, 30 messages a minute per mailbox",
)
HOST_CAPS: Final[dict[str, Cap]] = {
    "smtp.gmail.com": GMAIL,
    "gmail.googleapis.com": GMAIL,
    "www.googleapis.com": GMAIL,
    "smtp.office365.com": EXCHANGE_ONLINE,
    "smtp-mail.outlook.com": EXCHANGE_ONLINE,
    "graph.microsoft.com": EXCHANGE_ONLINE,
    "graph.microsoft.us": EXCHANGE_ONLINE,
    "dod-graph.microsoft.us": EXCHANGE_ONLINE,
    "microsoftgraph.chinacloudapi.cn": EXCHANGE_ONLINE,
}
"""The providers' submission hosts and mail APIs, whose accounts have published caps; other
servers are one's own (or a gateway in front of the provider, which has limits of its own)."""


def cap_of(section: TransportConfig) -> Cap | None:
    """The cap of the account ``section`` sends as, if its provider publishes one."""
    if isinstance(section, ServerConfig):
        host = section.host
    elif isinstance(section, GraphConfig):
        host = urlsplit(section.graph_url).hostname or ""
    elif isinstance(section, GmailConfig):
        host = urlsplit(section.api_url).hostname or ""
    else:
        return None
    return HOST_CAPS.get(host.lower().rstrip("."))


@dataclass(frozen=True)
class Account:
    """One sending account and what the configuration makes it send."""

    provider: str
    username: str
    cap: Cap | None
    per_day: float
    per_minute: float
    targets: tuple[str, ...]
    """Paths of the targets sending as it, for errors: ``targets[3]``."""

    def over(self) -> str | None:
        """What exceeds :data:`SHARE` of the cap, in words; None if nothing does."""
        if self.cap is None:
            return None
        allowed = SHARE * self.cap.per_day
        if self.per_day > allowed:
            return (
                f"{self.per_day:,.0f} probe messages a day, more than {SHARE:.0%} of "
                f"{self.cap.provider}'s {self.cap.per_day:,} ({self.cap.source})"
            )
        if self.cap.per_minute is not None and self.per_minute > SHARE * self.cap.per_minute:
            return (
                f"{self.per_minute:.1f} probe messages a minute at most, more than {SHARE:.0%} "
                f"of {self.cap.provider}'s {self.cap.per_minute} ({self.cap.source})"
            )
        return None


def _sending(config: Config) -> Iterator[tuple[str, Target, TransportConfig]]:
    """Each target that sends round trips, with its path and its sender's section."""
    for index, target in enumerate(config.targets):
        if Check.ROUNDTRIP in target.checks:
            section = target.sections().get(target.sender)
            if section is not None:
                yield f"targets[{index}]", target, section


@dataclass
class _Tally:
    """One account's volume, added up target by target."""

    provider: str
    username: str
    cap: Cap | None
    per_day: float = 0.0
    per_minute: float = 0.0
    targets: list[str] = field(default_factory=list)


def accounts(config: Config, *, capped: bool = False) -> list[Account]:
    """Every account probe mail is sent as, with its volume: a round trip per interval and an
    on-demand one per ``global.on_demand.roundtrip_every``, for each target sending as it.
    ``capped``: only the accounts whose provider publishes a cap."""
    found: dict[tuple[str, str], _Tally] = {}
    on_demand = config.on_demand.roundtrip_every
    for path, target, section in _sending(config):
        if not section.username:
            continue
        cap = cap_of(section)
        if capped and cap is None:
            continue
        provider = cap.provider if cap else target.sender
        key = (provider, section.username.lower())
        interval = target.interval(Check.ROUNDTRIP)
        tally = found.get(key)
        if tally is None:
            tally = found[key] = _Tally(provider, section.username, cap)
        tally.username = section.username  # as the last target spells it
        tally.per_day = tally.per_day + DAY / interval + DAY / on_demand
        tally.per_minute = (
            tally.per_minute + max(1.0, MINUTE / interval) + max(1.0, MINUTE / on_demand)
        )
        tally.targets.append(path)
    return [
        Account(
            provider=tally.provider,
            username=tally.username,
            cap=tally.cap,
            per_day=tally.per_day,
            per_minute=tally.per_minute,
            targets=tuple(tally.targets),
        )
        for tally in found.values()
    ]


def problem(config: Config) -> tuple[str, str] | None:
    """The key path to change and why, for the first account over its share; else None."""
    for account in accounts(config, capped=True):  # an account without a cap is never over
        words = account.over()
        if words is not None:
            where = f"{account.targets[0]}.interval.roundtrip"
            others = (
                "" if len(account.targets) == 1 else f" (with {', '.join(account.targets[1:])})"
            )
            return (
                where,
                f"{account.username} would send {words}{others}; lengthen the round-trip "
                "interval or global.on_demand.roundtrip_every, or send from another account",
            )
    return None


def summary(config: Config) -> list[str]:
    """One line per sending account: its daily volume against its provider's cap."""
    lines = []
    for account in accounts(config):
        cap = (
            f"{account.per_day / account.cap.per_day:.0%} of {account.cap.provider}'s "
            f"{account.cap.per_day:,} a day (at most {SHARE:.0%} allowed)"
            if account.cap
            else "no published cap"
        )
        lines.append(f"  {account.username}: {account.per_day:,.0f} messages a day; {cap}")
    return lines

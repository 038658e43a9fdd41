"""Probe results kept in memory: what ``/metrics`` and the status page read.

The scheduler records results into a :class:`Store`; a scrape only reads it, so ``/metrics``
answers at once whatever the mail servers are doing. A target removed by a reload is
dropped from the store and its series disappear with it.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.config import Config, ServerConfig
from exporter.incidents.model import Provider, ProviderState
from exporter.outcome import Check, Reason
from exporter.result import ProbeResult, TlsSession

RECENT_PROBES = 20
"""Probe results kept per target for the status page."""
STRIP_LENGTH = 30
"""Outcomes kept per check for the status page's strip (a few numbers each)."""

DELIVERY_BUCKETS: tuple[float, ...] = (0.25, 1, 2.5, 5, 10, 30, 60, 300)
"""Upper bounds of the delivery-time histogram: eight, as each costs a series per target. Fine
below ten seconds, where mail that works is delivered; 30 s is the round trip's default
timeout, 60 s the threshold of ``MailboxDeliverySlow`` (a bound above it lets its 90th
percentile cross it), 300 s for longer timeouts."""


@dataclass
class CheckState:
    interval: float
    timeout: float
    last: ProbeResult | None = None
    probes: int = 0
    failed: int = 0
    """Failed probes, whatever their reason (``mailbox_probes_failed_total``)."""
    consecutive_failures: int = 0
    failures: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(Reason, 0))
    last_success: float | None = None
    on_demand_refused: int = 0
    """On-demand probes refused because one ran too recently."""
    since: float | None = None
    """When the current state (succeeding or failing) began."""
    history: deque[Outcome] = field(default_factory=lambda: deque(maxlen=STRIP_LENGTH))
    """The last outcomes, oldest first: the status page's strip and sparkline."""
    version: int = 0
    """Counts the changes to this check's state: ``/metrics`` writes a check again only when
    it has changed since the last scrape."""


@dataclass(frozen=True)
class Outcome:
    """One probe's outcome, small enough to keep many of."""

    ended: float
    success: bool
    reason: Reason | None
    phase: str
    delivery_seconds: float | None


@dataclass
class TargetState:
    checks: dict[Check, CheckState] = field(default_factory=dict)
    delivery_counts: list[int] = field(default_factory=lambda: [0] * len(DELIVERY_BUCKETS))
    delivery_sum: float = 0.0
    delivery_count: int = 0
    late_arrivals: int = 0
    junk: int = 0
    bounces: int = 0
    cleanup_deleted: int = 0
    cleanup_failures: int = 0
    tls: dict[str, TlsSession] = field(default_factory=dict)
    token_expiry: dict[str, float] = field(default_factory=dict)
    credential_expiry: dict[str, float] = field(default_factory=dict)
    """When the app credential each transport authenticates with expires (a certificate's
    notAfter, a client secret's stated expiry), from the configuration."""
    token_failures: dict[str, int] = field(default_factory=dict)
    lookalikes: int | None = None
    authentication: dict[str, str] = field(default_factory=dict)
    """The last verdict of each authentication method on a received probe."""
    labels: dict[str, str] = field(default_factory=dict)
    recent: deque[ProbeResult] = field(default_factory=lambda: deque(maxlen=RECENT_PROBES))
    last_delivery: float | None = None
    version: int = 0
    """Counts the changes to this target's state (its checks' included): ``/metrics`` writes
    a target again only when it has changed since the last scrape."""

    def observe_delivery(self, seconds: float) -> None:
        index = bisect.bisect_left(DELIVERY_BUCKETS, seconds)
        if index < len(DELIVERY_BUCKETS):
            self.delivery_counts[index] += 1
        self.delivery_sum += seconds
        self.delivery_count += 1


class Store:
    """Everything the exporter knows about its targets, by target name."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetState] = {}
        self.reload_successful = False
        self.reload_success_timestamp: float | None = None
        self.probe_key_persistent = False
        """Whether the probe-id key is kept in a file (:mod:`exporter.probekey`)."""
        self.providers: dict[Provider, ProviderState] = {}
        """What each watched provider's status page says (``provider_status``)."""

    def configure(self, config: Config) -> None:
        """Keep state of targets and checks that remain; start others at zero."""
        targets: dict[str, TargetState] = {}
        for target in config.targets:
            state = self.targets.get(target.name) or TargetState()
            state.version += 1
            state.labels = dict(target.labels)
            if target.authserv_id is None:
                state.authentication = {}
            old_checks, state.checks = state.checks, {}
            for check in target.checks:
                kept = old_checks.get(check) or CheckState(0.0, 0.0)
                settings = (target.interval(check), target.timeout(check))
                if settings != (kept.interval, kept.timeout):
                    kept.interval, kept.timeout = settings
                    kept.version += 1
                state.checks[check] = kept
            sections = target.sections()
            oauth = {name for name, section in sections.items() if section.oauth2 is not None}
            state.token_failures = {p: state.token_failures.get(p, 0) for p in sorted(oauth)}
            state.token_expiry = {p: t for p, t in state.token_expiry.items() if p in oauth}
            state.credential_expiry = {
                name: expires
                for name, section in sorted(sections.items())
                if section.oauth2 is not None
                and (expires := section.oauth2.credential_expires()) is not None
            }
            plaintext = {
                name
                for name, section in sections.items()
                if isinstance(section, ServerConfig) and section.tls == "none"
            }
            state.tls = {p: t for p, t in state.tls.items() if p in sections and p not in plaintext}
            targets[target.name] = state
        self.targets = targets

    def configure_providers(self, providers: Iterable[Provider]) -> None:
        """Keep the status of providers still watched; start others empty, drop the rest."""
        self.providers = {p: self.providers.get(p) or ProviderState() for p in providers}

    def refused_on_demand(self, target: str, check: Check) -> None:
        state = self.targets.get(target)
        if state is not None and check in state.checks:
            state.checks[check].on_demand_refused += 1
            state.checks[check].version += 1
            state.version += 1

    def record(self, result: ProbeResult) -> None:
        """Add one probe result; results of targets no longer configured are dropped."""
        target = self.targets.get(result.target)
        if target is None or result.check not in target.checks:
            return
        target.version += 1
        state = target.checks[result.check]
        state.version += 1
        if state.last is None or state.last.success != result.success:
            state.since = result.ended
        state.last = result
        state.history.append(
            Outcome(
                ended=result.ended,
                success=result.success,
                reason=result.reason,
                phase=result.phase.value if result.phase else "",
                delivery_seconds=result.delivery_seconds,
            )
        )
        target.recent.append(result)
        state.probes += 1
        if result.success:
            state.last_success = result.ended
            state.consecutive_failures = 0
        else:
            state.consecutive_failures += 1
            state.failed += 1
            if result.reason is not None:
                state.failures[result.reason] += 1
        found = result.found
        if found.delivery_seconds is not None:
            target.observe_delivery(found.delivery_seconds)
            target.last_delivery = found.delivery_seconds
        target.late_arrivals += found.late_arrivals
        target.junk += int(found.junk)
        target.bounces += found.bounces
        target.cleanup_deleted += found.cleanup_deleted
        target.cleanup_failures += int(found.cleanup_failed)
        if found.lookalikes is not None:
            target.lookalikes = found.lookalikes
        target.tls.update(found.tls)
        if found.delivery_seconds is not None:
            # The verdicts on the probe that arrived, all of them: a method the server no
            # longer reports is gone, and none reported shows none. A probe that did not
            # arrive leaves the last ones.
            target.authentication = dict(found.authentication)
        target.token_expiry.update(found.token_expiry)
        for protocol in found.token_failed:
            target.token_failures[protocol] = target.token_failures.get(protocol, 0) + 1

"""Probe results kept in memory, and a collector that exposes them.

The scheduler records results into a :class:`Store`; a scrape only reads it, so ``/metrics``
answers at once whatever the mail servers are doing. A target removed by a reload is
dropped from the store and its series disappear with it.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import Config
from exporter.net import TlsSession
from exporter.outcome import Check, Reason
from exporter.probes import ProbeResult

RECENT_PROBES = 20
"""Probe results kept per target for the status page."""

DELIVERY_BUCKETS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    180,
    300,
    600,
)


@dataclass
class CheckState:
    interval: float
    timeout: float
    last: ProbeResult | None = None
    probes: int = 0
    consecutive_failures: int = 0
    failures: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(Reason, 0))
    last_success: float | None = None
    since: float | None = None
    """When the current state (succeeding or failing) began."""


@dataclass
class TargetState:
    checks: dict[Check, CheckState] = field(default_factory=dict)
    delivery_counts: list[int] = field(default_factory=lambda: [0] * len(DELIVERY_BUCKETS))
    delivery_sum: float = 0.0
    delivery_count: int = 0
    late_arrivals: int = 0
    cleanup_deleted: int = 0
    cleanup_failures: int = 0
    tls: dict[str, TlsSession] = field(default_factory=dict)
    token_expiry: dict[str, float] = field(default_factory=dict)
    token_failures: dict[str, int] = field(default_factory=dict)
    lookalikes: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    recent: deque[ProbeResult] = field(default_factory=lambda: deque(maxlen=RECENT_PROBES))
    last_delivery: float | None = None

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

    def configure(self, config: Config) -> None:
        """Keep state of targets and checks that remain; start others at zero."""
        targets: dict[str, TargetState] = {}
        for target in config.targets:
            state = self.targets.get(target.name) or TargetState()
            state.labels = dict(target.labels)
            old_checks, state.checks = state.checks, {}
            for check in target.checks:
                kept = old_checks.get(check) or CheckState(0.0, 0.0)
                kept.interval, kept.timeout = target.interval(check), target.timeout(check)
                state.checks[check] = kept
            oauth = {
                name
                for name, server in (("smtp", target.smtp), ("imap", target.imap))
                if server.oauth2 is not None
            }
            state.token_failures = {p: state.token_failures.get(p, 0) for p in sorted(oauth)}
            state.token_expiry = {p: t for p, t in state.token_expiry.items() if p in oauth}
            state.tls = {
                p: t
                for p, t in state.tls.items()
                if (target.smtp if p == "smtp" else target.imap).tls != "none"
            }
            targets[target.name] = state
        self.targets = targets

    def record(self, result: ProbeResult) -> None:
        """Add one probe result; results of targets no longer configured are dropped."""
        target = self.targets.get(result.target)
        if target is None or result.check not in target.checks:
            return
        state = target.checks[result.check]
        if state.last is None or state.last.success != result.success:
            state.since = result.started + result.duration
        state.last = result
        target.recent.append(result)
        state.probes += 1
        if result.success:
            state.last_success = result.started + result.duration
            state.consecutive_failures = 0
        else:
            state.consecutive_failures += 1
            if result.reason is not None:
                state.failures[result.reason] += 1
        if result.delivery_seconds is not None:
            target.observe_delivery(result.delivery_seconds)
            target.last_delivery = result.delivery_seconds
        target.late_arrivals += result.late_arrivals
        target.cleanup_deleted += result.cleanup_deleted
        target.cleanup_failures += int(result.cleanup_failed)
        if result.lookalikes is not None:
            target.lookalikes = result.lookalikes
        target.tls.update(result.tls)
        target.token_expiry.update(result.token_expiry)
        for protocol in result.token_failed:
            target.token_failures[protocol] = target.token_failures.get(protocol, 0) + 1


def _gauge(name: str, doc: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels, unit=unit)


class StoreCollector(Collector):
    """Exposes a :class:`Store` in the Prometheus format; reads memory only."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        tc = ["target", "check"]
        success = _gauge("mailbox_probe_success", "1 if the last probe succeeded, else 0.", tc)
        duration = _gauge("mailbox_probe_duration_seconds", "How long the last probe took.", tc)
        phase = _gauge(
            "mailbox_probe_phase_duration_seconds",
            "How long each phase of the last probe took (phases it reached).",
            [*tc, "phase"],
        )
        probes = CounterMetricFamily("mailbox_probes", "Probes completed.", labels=tc)
        failures = CounterMetricFamily(
            "mailbox_probe_failures", "Failed probes by reason.", labels=[*tc, "reason"]
        )
        last_success = _gauge(
            "mailbox_probe_last_success_timestamp_seconds",
            "When the last successful probe ended.",
            tc,
        )
        consecutive = _gauge(
            "mailbox_probe_consecutive_failures",
            "Failed probes in a row, up to the last one (0 after a success).",
            tc,
        )
        failed = _gauge(
            "mailbox_probe_failed_info",
            "Present (1) while the last probe failed: where and why.",
            [*tc, "phase", "reason"],
        )
        last_probe = _gauge(
            "mailbox_probe_last_timestamp_seconds",
            "When the last probe, successful or not, ended.",
            tc,
        )
        interval = _gauge("mailbox_probe_interval_seconds", "Configured probe interval.", tc)
        timeout = _gauge("mailbox_probe_timeout_seconds", "Configured probe timeout.", tc)
        delivery = HistogramMetricFamily(
            "mailbox_roundtrip_delivery_seconds",
            "Time from the server accepting a probe message to its arrival in the mailbox.",
            labels=["target"],
        )
        late = CounterMetricFamily(
            "mailbox_roundtrip_late_arrivals",
            "Probe messages that arrived after their probe gave up.",
            labels=["target"],
        )
        deleted = CounterMetricFamily(
            "mailbox_cleanup_deleted", "Probe messages deleted from the mailbox.", labels=["target"]
        )
        lookalikes = _gauge(
            "mailbox_cleanup_lookalikes",
            "Messages carrying this exporter's probe id prefix whose id did not verify, seen by "
            "the last successful round trip; left alone.",
            ["target"],
        )
        cleanup_failures = CounterMetricFamily(
            "mailbox_cleanup_failures", "Round trips whose cleanup failed.", labels=["target"]
        )
        for name, target in self.store.targets.items():
            for check, state in target.checks.items():
                labels = [name, check.value]
                probes.add_metric(labels, state.probes)
                interval.add_metric(labels, state.interval)
                timeout.add_metric(labels, state.timeout)
                for reason, count in state.failures.items():
                    failures.add_metric([*labels, reason.value], count)
                if state.last_success is not None:
                    last_success.add_metric(labels, state.last_success)
                last = state.last
                if last is None:
                    continue
                success.add_metric(labels, 1.0 if last.success else 0.0)
                consecutive.add_metric(labels, state.consecutive_failures)
                if not last.success and last.reason is not None:
                    where = last.phase.value if last.phase else ""
                    failed.add_metric([*labels, where, last.reason.value], 1)
                duration.add_metric(labels, last.duration)
                last_probe.add_metric(labels, last.started + last.duration)
                for phase_name, seconds in last.phases.items():
                    phase.add_metric([*labels, phase_name.value], seconds)
            if Check.ROUNDTRIP in target.checks:
                cumulative, buckets = 0, []
                for bound, count in zip(DELIVERY_BUCKETS, target.delivery_counts, strict=True):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                buckets.append(("+Inf", target.delivery_count))
                delivery.add_metric([name], buckets, target.delivery_sum)
                late.add_metric([name], target.late_arrivals)
                deleted.add_metric([name], target.cleanup_deleted)
                cleanup_failures.add_metric([name], target.cleanup_failures)
                if target.lookalikes is not None:
                    lookalikes.add_metric([name], target.lookalikes)
        yield from (
            success,
            duration,
            phase,
            probes,
            failures,
            consecutive,
            failed,
            last_success,
            last_probe,
            interval,
            timeout,
            delivery,
            late,
            deleted,
            cleanup_failures,
            lookalikes,
        )

        yield from self._tls_and_tokens()
        yield self._target_info()

        build = _gauge(
            "mailbox_exporter_build_info", "Version of the exporter; always 1.", ["version"]
        )
        build.add_metric([__version__], 1)
        reload_ok = _gauge(
            "mailbox_exporter_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded, else 0.",
            [],
        )
        reload_ok.add_metric([], 1.0 if self.store.reload_successful else 0.0)
        yield build
        yield reload_ok
        if self.store.reload_success_timestamp is not None:
            reload_ts = _gauge(
                "mailbox_exporter_config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully.",
                [],
            )
            reload_ts.add_metric([], self.store.reload_success_timestamp)
            yield reload_ts

    def _target_info(self) -> Metric:
        """One series per target with its configured labels, to join onto the others."""
        names = sorted({name for state in self.store.targets.values() for name in state.labels})
        info = _gauge(
            "mailbox_target_info",
            "Static labels of each target, from its configuration; always 1.",
            ["target", *names],
        )
        for target, state in self.store.targets.items():
            info.add_metric([target, *(state.labels.get(name, "") for name in names)], 1)
        return info

    def _tls_and_tokens(self) -> Iterator[Metric]:
        labels = ["target", "protocol"]
        expiry = _gauge(
            "mailbox_tls_certificate_expiry_timestamp_seconds",
            "When the certificate the server last presented expires (notAfter).",
            labels,
        )
        version = _gauge(
            "mailbox_tls_version_info",
            "The TLS version last negotiated with the server; always 1.",
            [*labels, "version"],
        )
        token_expiry = _gauge(
            "mailbox_oauth_token_expiry_timestamp_seconds",
            "When the OAuth2 access token last used expires.",
            labels,
        )
        token_failures = CounterMetricFamily(
            "mailbox_oauth_token_refresh_failures",
            "Probes that could not get an OAuth2 access token.",
            labels=labels,
        )
        for name, target in self.store.targets.items():
            for protocol, session in sorted(target.tls.items()):
                if session.not_after is not None:
                    expiry.add_metric([name, protocol], session.not_after)
                version.add_metric([name, protocol, session.version], 1)
            for protocol, expires in sorted(target.token_expiry.items()):
                token_expiry.add_metric([name, protocol], expires)
            for protocol, count in target.token_failures.items():
                token_failures.add_metric([name, protocol], count)
        yield from (expiry, version, token_expiry, token_failures)


def _le(bound: float) -> str:
    return str(float(bound))

"""Probe results kept in memory, and their exposition in the Prometheus text format.

The scheduler records results into a :class:`Store`; a scrape only reads it, so ``/metrics``
answers at once whatever the mail servers are doing. A target removed by a reload is
dropped from the store and its series disappear with it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

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


class _Family:
    """One metric family of the exposition, written as text as it is filled."""

    __slots__ = ("help", "kind", "lines", "name")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.lines: list[str] = []

    def add(self, labels: str, value: float, suffix: str = "") -> None:
        """Add a sample; ``labels`` is already written (``a="x",b="y"``)."""
        braces = f"{{{labels}}}" if labels else ""
        self.lines.append(f"{self.name}{suffix}{braces} {_number(value)}\n")

    def text(self) -> str:
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.kind}\n" + "".join(
            self.lines
        )


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return f'{name}="{escaped}"'


def render(store: Store) -> str:
    """The store in the Prometheus text format (0.0.4).

    Written directly rather than through prometheus_client's collector objects: at a thousand
    targets that is ten times faster, and a scrape holds the event loop for its whole length.
    Label values are escaped once per target.
    """
    g, c = "gauge", "counter"
    success = _Family("mailbox_probe_success", g, "1 if the last probe succeeded, else 0.")
    duration = _Family("mailbox_probe_duration_seconds", g, "How long the last probe took.")
    phase = _Family(
        "mailbox_probe_phase_duration_seconds",
        g,
        "How long each phase of the last probe took (phases it reached).",
    )
    probes = _Family("mailbox_probes_total", c, "Probes completed.")
    failures = _Family("mailbox_probe_failures_total", c, "Failed probes by reason.")
    consecutive = _Family(
        "mailbox_probe_consecutive_failures",
        g,
        "Failed probes in a row, up to the last one (0 after a success).",
    )
    failed = _Family(
        "mailbox_probe_failed_info", g, "Present (1) while the last probe failed: where and why."
    )
    last_success = _Family(
        "mailbox_probe_last_success_timestamp_seconds", g, "When the last successful probe ended."
    )
    last_probe = _Family(
        "mailbox_probe_last_timestamp_seconds", g, "When the last probe, successful or not, ended."
    )
    interval = _Family("mailbox_probe_interval_seconds", g, "Configured probe interval.")
    timeout = _Family("mailbox_probe_timeout_seconds", g, "Configured probe timeout.")
    delivery = _Family(
        "mailbox_roundtrip_delivery_seconds",
        "histogram",
        "Time from the server accepting a probe message to its arrival in the mailbox.",
    )
    late = _Family(
        "mailbox_roundtrip_late_arrivals_total",
        c,
        "Probe messages that arrived after their probe gave up.",
    )
    deleted = _Family(
        "mailbox_cleanup_deleted_total", c, "Probe messages deleted from the mailbox."
    )
    cleanup_failures = _Family(
        "mailbox_cleanup_failures_total", c, "Round trips whose cleanup failed."
    )
    lookalikes = _Family(
        "mailbox_cleanup_lookalikes",
        g,
        "Messages carrying this exporter's probe id prefix whose id did not "
        "verify, seen by the last successful round trip; left alone.",
    )
    tls_expiry = _Family(
        "mailbox_tls_certificate_expiry_timestamp_seconds",
        g,
        "When the certificate the server last presented expires (notAfter).",
    )
    tls_version = _Family(
        "mailbox_tls_version_info", g, "The TLS version last negotiated with the server; always 1."
    )
    token_expiry = _Family(
        "mailbox_oauth_token_expiry_timestamp_seconds",
        g,
        "When the OAuth2 access token last used expires.",
    )
    token_failures = _Family(
        "mailbox_oauth_token_refresh_failures_total",
        c,
        "Probes that could not get an OAuth2 access token.",
    )
    info = _Family(
        "mailbox_target_info", g, "Static labels of each target, from its configuration; always 1."
    )
    info_names = sorted({name for state in store.targets.values() for name in state.labels})
    reasons = [(reason, f',reason="{reason.value}"') for reason in Reason]
    bounds = [f',le="{float(bound)}"' for bound in DELIVERY_BUCKETS]

    for name, target in store.targets.items():
        t = _label("target", name)
        for check, state in target.checks.items():
            tc = f'{t},check="{check.value}"'
            probes.add(tc, state.probes)
            interval.add(tc, state.interval)
            timeout.add(tc, state.timeout)
            for reason, label in reasons:
                failures.add(tc + label, state.failures[reason])
            if state.last_success is not None:
                last_success.add(tc, state.last_success)
            last = state.last
            if last is None:
                continue
            success.add(tc, 1 if last.success else 0)
            consecutive.add(tc, state.consecutive_failures)
            if not last.success and last.reason is not None:
                where = last.phase.value if last.phase else ""
                failed.add(f'{tc},phase="{where}",reason="{last.reason.value}"', 1)
            duration.add(tc, last.duration)
            last_probe.add(tc, last.started + last.duration)
            for phase_name, seconds in last.phases.items():
                phase.add(f'{tc},phase="{phase_name.value}"', seconds)
        if Check.ROUNDTRIP in target.checks:
            cumulative = 0
            for label, count in zip(bounds, target.delivery_counts, strict=True):
                cumulative += count
                delivery.add(t + label, cumulative, "_bucket")
            delivery.add(t + ',le="+Inf"', target.delivery_count, "_bucket")
            delivery.add(t, target.delivery_sum, "_sum")
            delivery.add(t, target.delivery_count, "_count")
            late.add(t, target.late_arrivals)
            deleted.add(t, target.cleanup_deleted)
            cleanup_failures.add(t, target.cleanup_failures)
            if target.lookalikes is not None:
                lookalikes.add(t, target.lookalikes)
        for protocol, session in sorted(target.tls.items()):
            tp = f'{t},protocol="{protocol}"'
            if session.not_after is not None:
                tls_expiry.add(tp, session.not_after)
            tls_version.add(tp + "," + _label("version", session.version), 1)
        for protocol, expires in sorted(target.token_expiry.items()):
            token_expiry.add(f'{t},protocol="{protocol}"', expires)
        for protocol, count in target.token_failures.items():
            token_failures.add(f'{t},protocol="{protocol}"', count)
        info.add(",".join([t, *(_label(n, target.labels.get(n, "")) for n in info_names)]), 1)

    build = _Family("mailbox_exporter_build_info", g, "Version of the exporter; always 1.")
    build.add(_label("version", __version__), 1)
    reload_ok = _Family(
        "mailbox_exporter_config_last_reload_successful",
        g,
        "1 if the last configuration (re)load succeeded, else 0.",
    )
    reload_ok.add("", 1 if store.reload_successful else 0)
    families = [
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
        tls_expiry,
        tls_version,
        token_expiry,
        token_failures,
        info,
        build,
        reload_ok,
    ]
    if store.reload_success_timestamp is not None:
        reload_ts = _Family(
            "mailbox_exporter_config_last_reload_success_timestamp_seconds",
            g,
            "When the configuration was last loaded successfully.",
        )
        reload_ts.add("", store.reload_success_timestamp)
        families.append(reload_ts)
    return "".join(family.text() for family in families)

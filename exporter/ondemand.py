"""One probe run now, on request: for Prometheus' multi-target scrapes and for on-call.

Only targets from the configuration can be probed, so the endpoint cannot be turned into a
scanner of arbitrary hosts. The result is rendered as that probe's metrics only (the
blackbox_exporter convention), or as a readable transcript with credentials redacted.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.config import Config, Target
from exporter.outcome import Check
from exporter.probes import ProbeResult


class UnknownProbe(ValueError):
    """The request names no configured target, or a check the target does not run."""


def resolve(
    config: Config, target_name: str | None, check_name: str | None
) -> tuple[Target, Check]:
    """The configured target and check a request names; :class:`UnknownProbe` otherwise."""
    if not target_name:
        raise UnknownProbe("the target parameter is missing")
    target = config.target(target_name)
    if target is None:
        known = ", ".join(t.name for t in config.targets)
        raise UnknownProbe(f"unknown target {target_name!r}; configured targets: {known}")
    if not check_name:
        return target, target.checks[0]
    if check_name not in {c.value for c in Check}:
        raise UnknownProbe(
            f"unknown check {check_name!r}; checks: {', '.join(c.value for c in Check)}"
        )
    check = Check(check_name)
    if check not in target.checks:
        raise UnknownProbe(
            f"target {target.name!r} does not run the {check} check; it runs "
            f"{', '.join(c.value for c in target.checks)}"
        )
    return target, check


class _ResultCollector(Collector):
    def __init__(self, result: ProbeResult) -> None:
        self.result = result

    def collect(self) -> Iterator[Metric]:
        result = self.result
        success = GaugeMetricFamily("probe_success", "1 if the probe succeeded, else 0.")
        success.add_metric([], 1.0 if result.success else 0.0)
        duration = GaugeMetricFamily("probe_duration_seconds", "How long the probe took.")
        duration.add_metric([], result.duration)
        phases = GaugeMetricFamily(
            "probe_phase_duration_seconds",
            "How long each phase of the probe took.",
            labels=["phase"],
        )
        for phase, seconds in result.phases.items():
            phases.add_metric([phase.value], seconds)
        yield from (success, duration, phases)
        if not result.success and result.reason is not None:
            failed = GaugeMetricFamily(
                "probe_failed_info", "Where and why the probe failed.", labels=["phase", "reason"]
            )
            failed.add_metric([result.phase.value if result.phase else "", result.reason], 1)
            yield failed
        if result.delivery_seconds is not None:
            delivery = GaugeMetricFamily(
                "probe_delivery_seconds", "Time from acceptance to arrival of the probe message."
            )
            delivery.add_metric([], result.delivery_seconds)
            yield delivery
        expiry = GaugeMetricFamily(
            "probe_tls_certificate_expiry_timestamp_seconds",
            "When the server certificate expires.",
            labels=["protocol"],
        )
        for protocol, session in sorted(result.tls.items()):
            if session.not_after is not None:
                expiry.add_metric([protocol], session.not_after)
        yield expiry


def exposition(result: ProbeResult) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ResultCollector(result))
    return generate_latest(registry)


def report(result: ProbeResult) -> str:
    """A readable account of one probe: every step, then the outcome."""
    lines = [f"{result.check} probe of target {result.target}", *result.transcript, ""]
    if result.success:
        lines.append(f"result: success in {result.duration:.3f}s")
    else:
        lines.append(f"result: FAILED in phase {result.phase}: {result.reason} ({result.detail})")
    if result.delivery_seconds is not None:
        lines.append(f"delivery: {result.delivery_seconds:.3f}s")
    timings = ", ".join(f"{phase}={seconds:.3f}s" for phase, seconds in result.phases.items())
    lines.append(f"phases: {timings}")
    return "\n".join(lines) + "\n"

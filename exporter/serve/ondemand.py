"""One probe run now, on request: for Prometheus' multi-target scrapes and for on-call.

Only targets from the configuration can be probed, so the endpoint cannot be turned into a
scanner of arbitrary hosts. The result is rendered as that probe's metrics only (the
blackbox_exporter convention), or as a readable transcript with credentials redacted.
"""

from __future__ import annotations

from exporter.config import Config, Target
from exporter.outcome import Check
from exporter.result import ProbeResult
from exporter.serve import metrics


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


def exposition(result: ProbeResult) -> bytes:
    return metrics.render_result(result).encode()


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

"""One probe run now, on request: for Prometheus' multi-target scrapes and for on-call.

Only targets from the configuration can be probed, so the endpoint cannot be turned into a
scanner of arbitrary hosts. The result is rendered as that probe's metrics only (the
blackbox_exporter convention), or as a readable transcript with credentials redacted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from exporter.config import Config, Target
from exporter.config.checks import CHECKS
from exporter.config.model import OnDemand
from exporter.outcome import Check
from exporter.result import ProbeResult
from exporter.serve import metrics


class UnknownProbe(ValueError):
    """The request names no configured target, or a check the target does not run."""


class TooSoon(Exception):
    """An on-demand probe of this target and check ran too recently to run another."""

    def __init__(self, retry_after: float, spacing: float) -> None:
        super().__init__(
            f"an on-demand probe of this target ran less than {spacing:g}s ago; "
            f"retry in {math.ceil(retry_after)}s"
        )
        self.retry_after = retry_after


Key = tuple[str, Check]


class Rations:
    """Keeps on-demand probes from harming the mailbox: a round trip sends mail through the
    monitored account and a login check is a login, so requests for the same target and
    check that arrive together share one run, and a new run starts only once the configured
    spacing has passed since the last one began."""

    def __init__(self, policy: OnDemand, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._running: dict[Key, asyncio.Future[ProbeResult]] = {}
        self._started: dict[Key, float] = {}

    def spacing(self, check: Check) -> float:
        sends_mail = CHECKS[check].login_of is None
        return self.policy.roundtrip_every if sends_mail else self.policy.login_every

    async def run(
        self, target: Target, check: Check, probe: Callable[[], Awaitable[ProbeResult]]
    ) -> ProbeResult:
        """The result of the run in flight, or of a new run; :class:`TooSoon` if neither."""
        key = (target.name, check)
        running = self._running.get(key)
        if running is None:
            now, spacing = self._clock(), self.spacing(check)
            started = self._started.get(key)
            if started is not None and now - started < spacing:
                raise TooSoon(spacing - (now - started), spacing)
            self._started[key] = now
            running = asyncio.ensure_future(probe())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)


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

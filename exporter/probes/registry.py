"""The probers: what runs each check. Every check has exactly one; an unknown check is a
configuration error long before anything here is asked (see :mod:`exporter.config.checks`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from exporter.config import Target
from exporter.config.checks import CHECKS
from exporter.outcome import Check
from exporter.probes import roundtrip
from exporter.probes.context import ProbeContext
from exporter.trace import Trace
from exporter.transports import registry

Prober = Callable[[Target, Trace, ProbeContext], Awaitable[None]]


def _login(transport: str) -> Prober:
    check = registry.login(transport)

    async def probe(target: Target, trace: Trace, context: ProbeContext) -> None:
        await check(target.section(transport), trace, context.tokens)

    return probe


PROBERS: Final[dict[Check, Prober]] = {
    Check.ROUNDTRIP: roundtrip.probe,
    **{check: _login(spec.login_of) for check, spec in CHECKS.items() if spec.login_of},
}
if PROBERS.keys() != set(Check):
    raise RuntimeError(f"checks without a prober: {sorted(set(Check) - PROBERS.keys())}")

"""Probes: one module per check, and :func:`run`, which turns any probe into a result.

A probe is a function from a target (and a deadline: the target's timeout) to a
:class:`ProbeResult` that knows its own metrics. Nothing here schedules, exports or logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import Target
from exporter.outcome import Check, Phase, ProbeFailure, Reason
from exporter.probes import imap_login, roundtrip, smtp_login
from exporter.probes.roundtrip import SentProbes
from exporter.probes.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe of one check of one target."""

    target: str
    check: Check
    success: bool
    started: float
    """Wall-clock start, seconds since the epoch."""
    duration: float
    phases: Mapping[Phase, float] = field(default_factory=dict)
    reason: Reason | None = None
    phase: Phase | None = None
    """The phase the probe failed in."""
    detail: str = ""
    delivery_seconds: float | None = None
    late_arrivals: int = 0
    cleanup_deleted: int = 0
    cleanup_failed: bool = False


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Remove every configured secret from text that came from a server or a library."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "<redacted>")
    return text


async def run(target: Target, check: Check, sent: SentProbes | None = None) -> ProbeResult:
    """Run one probe, bounded by the target's timeout; never raises but for cancellation."""
    trace = Trace()
    started, clock = time.time(), time.monotonic()
    failure: ProbeFailure | None = None
    timeout = target.timeout(check)
    try:
        async with asyncio.timeout(timeout):
            if check is Check.ROUNDTRIP:
                await roundtrip.probe(target, trace, sent if sent is not None else SentProbes())
            elif check is Check.SMTP_LOGIN:
                await smtp_login.probe(target, trace)
            else:
                await imap_login.probe(target, trace)
    except TimeoutError:
        failure = ProbeFailure(
            Reason.TIMEOUT, f"no answer within the timeout of {timeout:g}s", trace.failed_in
        )
    except ProbeFailure as exc:
        failure = exc
    except Exception as exc:
        log.exception("probe of %s %s failed unexpectedly", target.name, check)
        failure = ProbeFailure(
            Reason.PROTOCOL_ERROR, f"unexpected {type(exc).__name__}", trace.failed_in
        )
    return ProbeResult(
        target=target.name,
        check=check,
        success=failure is None,
        started=started,
        duration=time.monotonic() - clock,
        phases=dict(trace.phases),
        reason=failure.reason if failure else None,
        phase=(failure.phase or trace.failed_in) if failure else None,
        detail=redact(failure.detail, target.secrets()) if failure else "",
        delivery_seconds=trace.delivery_seconds,
        late_arrivals=trace.late_arrivals,
        cleanup_deleted=trace.cleanup_deleted,
        cleanup_failed=trace.cleanup_failed,
    )

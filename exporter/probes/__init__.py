"""Probes: :func:`run` turns any check of any target into a :class:`ProbeResult`.

A probe is a function from a target, a trace and the shared :class:`ProbeContext` to
findings in the trace; :mod:`.registry` names the one for each check. Nothing here
schedules, exports or logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from exporter.config import Target
from exporter.outcome import Check, ProbeFailure, Reason, shorten
from exporter.probes.context import ProbeContext
from exporter.probes.guard import Hold
from exporter.probes.registry import PROBERS
from exporter.result import Findings, ProbeResult
from exporter.trace import Trace

log = logging.getLogger(__name__)

MIN_SECRET = 3
"""Secrets shorter than this are not redacted: replacing every "a" would garble the text."""


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Remove every configured secret from text that came from a server or a library."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, "<redacted>")
    return text


async def run(
    target: Target,
    check: Check,
    context: ProbeContext,
    *,
    time_limit: float | None = None,
    transcript: bool = False,
) -> ProbeResult:
    """Run one probe, bounded by ``time_limit`` (default: the check's timeout); never raises
    but for cancellation. ``transcript`` keeps a redacted record of what was said.

    While the lock-out guard holds the probe's credentials back, nothing is tried and the
    result says so (see :mod:`.guard`).
    """
    hold = context.guard.admit(target, check)
    if hold is not None:
        return _held(target, check, hold)
    try:
        result = await _run(target, check, context, time_limit, transcript)
    except BaseException:
        context.guard.release(target, check)
        raise
    context.guard.record(target, check, result)
    return result


def _held(target: Target, check: Check, hold: Hold) -> ProbeResult:
    """The result of a probe that did not log in, because its credentials were refused too
    often: still a failure, so that alerts keep firing, with the check's own last reason and
    phase where it failed since its last success (else the refusal)."""
    last = hold.last
    said = f"not tried after {hold.refusals} refusals in a row (lock-out guard); "
    return ProbeResult(
        target=target.name,
        check=check,
        success=False,
        started=time.time(),
        duration=0.0,
        reason=last.reason if last is not None else Reason.AUTH_REJECTED,
        phase=last.phase if last is not None else hold.phase,
        detail=said + (f"last: {last.detail}" if last is not None else f"last: {hold.detail}"),
        found=Findings(backoff_since=hold.since, backoff_until=hold.until),
    )


async def _run(
    target: Target, check: Check, context: ProbeContext, time_limit: float | None, transcript: bool
) -> ProbeResult:
    # A NaN or infinite limit would never fire: such a probe, and whatever waits on it, would
    # run for ever. Callers check what they are given; this holds whatever they pass.
    timeout = target.timeout(check)
    if time_limit is not None and math.isfinite(time_limit):
        timeout = time_limit
    started, clock = time.time(), time.monotonic()
    trace = Trace(deadline=clock + timeout, record_transcript=transcript, started=clock)
    failure: ProbeFailure | None = None
    try:
        async with asyncio.timeout(timeout):
            await PROBERS[check](target, trace, context)
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
    duration = time.monotonic() - clock
    secrets = (*target.secrets(), *trace.tokens)
    if failure is not None:
        trace.say(
            f"FAILED in {failure.phase or trace.failed_in}: {failure.reason} ({failure.said})"
        )
        trace.found.lookalikes = None
    else:
        trace.say(f"SUCCESS in {duration:.3f}s")
    return ProbeResult(
        target=target.name,
        check=check,
        success=failure is None,
        started=started,
        duration=duration,
        phases=dict(trace.phases),
        reason=failure.reason if failure else None,
        phase=(failure.phase or trace.failed_in) if failure else None,
        detail=shorten(redact(failure.said, secrets)) if failure else "",
        found=trace.found,
        transcript=tuple(redact(line, secrets) for line in trace.transcript),
    )

"""Probes: one module per check, and :func:`run`, which turns any probe into a result.

A probe is a function from a target and a deadline to a :class:`ProbeResult` that knows its
own metrics. Nothing here schedules, exports or logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import Target
from exporter.message import ProbeIds
from exporter.net import TlsSession
from exporter.oauth import TokenCache
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
    lookalikes: int | None = None
    tls: Mapping[str, TlsSession] = field(default_factory=dict)
    token_expiry: Mapping[str, float] = field(default_factory=dict)
    token_failed: frozenset[str] = frozenset()
    transcript: tuple[str, ...] = ()


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Remove every configured secret from text that came from a server or a library."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "<redacted>")
    return text


async def run(
    target: Target,
    check: Check,
    *,
    sent: SentProbes | None = None,
    tokens: TokenCache | None = None,
    ids: ProbeIds | None = None,
    time_limit: float | None = None,
    transcript: bool = False,
) -> ProbeResult:
    """Run one probe, bounded by ``time_limit`` (default: the check's timeout); never raises
    but for cancellation. ``transcript`` keeps a redacted record of what was said."""
    timeout = target.timeout(check) if time_limit is None else time_limit
    own_tokens = tokens is None
    tokens = TokenCache() if tokens is None else tokens
    started, clock = time.time(), time.monotonic()
    trace = Trace(deadline=clock + timeout, record_transcript=transcript, started=clock)
    failure: ProbeFailure | None = None
    try:
        async with asyncio.timeout(timeout):
            if check is Check.ROUNDTRIP:
                await roundtrip.probe(
                    target, trace, sent or SentProbes(), tokens, ids or ProbeIds()
                )
            elif check is Check.SMTP_LOGIN:
                await smtp_login.probe(target, trace, tokens)
            else:
                await imap_login.probe(target, trace, tokens)
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
    finally:
        if own_tokens:
            await tokens.close()
    duration = time.monotonic() - clock
    secrets = (*target.secrets(), *trace.tokens)
    if failure is not None:
        trace.say(
            f"FAILED in {failure.phase or trace.failed_in}: {failure.reason} ({failure.detail})"
        )
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
        detail=redact(failure.detail, secrets) if failure else "",
        delivery_seconds=trace.delivery_seconds,
        late_arrivals=trace.late_arrivals,
        cleanup_deleted=trace.cleanup_deleted,
        cleanup_failed=trace.cleanup_failed,
        lookalikes=trace.lookalikes if check is Check.ROUNDTRIP and failure is None else None,
        tls=dict(trace.tls),
        token_expiry=dict(trace.token_expiry),
        token_failed=frozenset(trace.token_failed),
        transcript=tuple(redact(line, secrets) for line in trace.transcript),
    )

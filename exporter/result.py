"""What one probe found: value types shared by the probes and by everything that reports them.

Nothing here speaks a protocol, so the metrics, the status page, ``/probe`` and the log line
read results without importing protocol code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from exporter.outcome import Check, Phase, Reason


@dataclass(frozen=True)
class TlsSession:
    """What a TLS handshake established: the protocol version and the leaf's expiry."""

    version: str
    not_after: float | None


@dataclass
class Findings:
    """What a probe learnt about the mailbox besides success and timing.

    Declared once: transports and probers fill it in as they go, and the store, ``/probe``,
    the status page and the log line read it from here.
    """

    delivery_seconds: float | None = None
    """Time from the server accepting the probe message to its arrival (round trips)."""
    late_arrivals: int = 0
    """Probe messages found that an earlier probe had given up on."""
    cleanup_deleted: int = 0
    """Probe messages (and their bounces and Sent copies) deleted."""
    cleanup_failed: bool = False
    junk: bool = False
    """The probe message was filed in the junk folder."""
    bounces: int = 0
    """Bounces of this exporter's probes found (and deleted)."""
    lookalikes: int | None = None
    """Messages with this exporter's id prefix whose id did not verify: left alone. Known only
    after a successful round trip."""
    tls: dict[str, TlsSession] = field(default_factory=dict)
    """TLS sessions by transport (``smtp``, ``imap``, ...)."""
    token_expiry: dict[str, float] = field(default_factory=dict)
    """Wall-clock expiry of the access token used, by transport."""
    token_failed: set[str] = field(default_factory=set)
    """Transports for which no access token could be had."""
    login_refused: str | None = None
    """The transport whose credentials the server refused (``auth_rejected``), if any: the
    lock-out guard counts these by credentials."""
    logged_in: set[str] = field(default_factory=set)
    """Transports whose login succeeded in this probe: the lock-out guard clears their
    refusals."""
    backoff_since: float | None = None
    """While logins with the probe's credentials are held back after refusals: since when
    (wall clock). The probe did not log in."""
    backoff_until: float | None = None
    """...and when the next attempt is due (wall clock)."""
    requests: int = 0
    """HTTP requests made to a mail API (Graph, Gmail) during the probe."""
    retry_after: float | None = None
    """Seconds the provider asked us to wait before the next request (HTTP 429)."""
    authentication: dict[str, str] = field(default_factory=dict)
    """The receiving server's verdict on the probe by method (``spf``, ``dkim``, ``dmarc``,
    ...: :mod:`exporter.authres`), where the target names its ``authserv_id``."""

    def logged(self) -> dict[str, str]:
        """The findings worth a log field, as text; empty and zero values left out."""
        values: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value in (None, 0, False) or (isinstance(value, dict | set) and not value):
                continue
            if isinstance(value, float):
                values[item.name] = f"{value:.3f}"
            elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                values[item.name] = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif isinstance(value, dict | set):
                values[item.name] = ",".join(sorted(value))
            else:
                values[item.name] = str(value)
        return values


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
    found: Findings = field(default_factory=Findings)
    transcript: tuple[str, ...] = ()

    @property
    def ended(self) -> float:
        return self.started + self.duration

    @property
    def delivery_seconds(self) -> float | None:
        return self.found.delivery_seconds

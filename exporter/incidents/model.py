"""What a provider's status page says, as the exporter keeps it: no I/O, no protocol code.

Only *open* incidents and advisories of *watched* services are kept, at most
:data:`MAX_INCIDENTS` per provider (configurable), so that the label values exported for them
stay few: a resolved incident's series disappear at the next successful fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from exporter.outcome import Reason

Provider = Literal["microsoft", "google"]
PROVIDERS: Final[tuple[Provider, ...]] = ("microsoft", "google")
"""The providers whose status can be read; a target's ``provider`` label names one of them."""
MAX_INCIDENTS: Final = 20
"""Open incidents kept per provider unless ``provider_status.max_incidents`` says otherwise."""
LABEL_LIMIT: Final = 64
"""Characters kept of a service name, incident id or status used as a label value."""
FETCH_REASONS: Final[tuple[Reason, ...]] = (
    Reason.DNS,
    Reason.CONNECT_REFUSED,
    Reason.NETWORK,
    Reason.TIMEOUT,
    Reason.TLS,
    Reason.OAUTH_TOKEN,
    Reason.AUTH_REJECTED,
    Reason.THROTTLED,
    Reason.UNAVAILABLE,
    Reason.PROTOCOL_ERROR,
)
"""Why a fetch of a status source can fail: the reasons its failure counter is kept for."""


def label_value(text: str) -> str:
    """A provider's string made fit for a label value: one line, at most :data:`LABEL_LIMIT`."""
    return " ".join(text.split())[:LABEL_LIMIT]


@dataclass(frozen=True)
class Incident:
    """One open incident or advisory of a watched service, as its provider published it."""

    provider: Provider
    service: str
    id: str
    classification: str
    """``incident`` (the service is affected) or ``advisory`` (limited or informational)."""
    status: str
    """The provider's word for where it stands: Graph's ``serviceDegradation``,
    ``investigating``...; the Google feed's ``SERVICE_DISRUPTION``, ``SERVICE_OUTAGE``..."""
    start: float | None
    """When the provider says the incident began (seconds since the epoch)."""
    title: str = ""
    modified: float | None = None
    url: str = ""


@dataclass
class ProviderState:
    """What the exporter knows of one provider's status page."""

    incidents: tuple[Incident, ...] = ()
    """Open incidents of watched services, at most the configured number."""
    open_count: int = 0
    """Open incidents of watched services, before the cap."""
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str = ""
    """Why the last fetch failed; empty after a success."""
    failures: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(FETCH_REASONS, 0))

    def fetched(self, incidents: list[Incident], limit: int, now: float) -> None:
        """A successful fetch: keep the ``limit`` most important open incidents.

        Incidents come before advisories, then the most recently started first.
        """
        ranked = sorted(
            incidents,
            key=lambda i: (i.classification != "incident", -(i.start or 0.0), i.id),
        )
        self.incidents = tuple(ranked[:limit])
        self.open_count = len(incidents)
        self.last_success = self.last_attempt = now
        self.last_error = ""

    def failed(self, reason: Reason, detail: str, now: float) -> None:
        """A failed fetch: counted; the incidents of the last successful fetch are kept."""
        self.failures[reason if reason in self.failures else Reason.PROTOCOL_ERROR] += 1
        self.last_attempt = now
        self.last_error = f"{reason.value}: {detail}"

"""Ways to reach a mailbox, one module per transport, and the small contract they share.

A transport offers some of three roles: a :class:`Sender` submits the probe message, a
:class:`Receiver` watches the mailbox and cleans up, and a login check opens a fresh session.
The round trip is written once over any sender and any receiver
(:mod:`exporter.probes.roundtrip`); :mod:`.registry` says which transport plays which role.
Everything here reports into the probe's :class:`~exporter.trace.Trace` and raises
:class:`~exporter.outcome.ProbeFailure`; none of it bounds its own time: the caller's
deadline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol


@dataclass(frozen=True)
class ProbeMessage:
    """One probe message, in the forms transports need: raw RFC 5322 bytes for mail
    protocols, and its parts for APIs that build the message themselves."""

    probe_id: str
    mail_from: str
    mail_to: str
    subject: str
    text: str
    headers: tuple[tuple[str, str], ...]
    """Header fields beyond From, To and Subject, in order (the probe id among them)."""
    raw: bytes


@dataclass(frozen=True)
class Envelope:
    """What the round trip reads of a candidate message's header."""

    probe_id: str
    subject: str = ""
    authentication_results: tuple[str, ...] = ()
    """Every ``Authentication-Results`` field, topmost first (RFC 8601)."""


READ_FIELDS: Final = ("Subject", "Authentication-Results")
"""Header fields read besides the probe id (``exporter.message.PROBE_HEADER``)."""


class Sender(Protocol):
    async def send(self, probe: ProbeMessage) -> float:
        """Submit the message; return the monotonic time at which the server accepted it."""
        ...


class Receiver(Protocol):
    """A mailbox being watched; references to messages are opaque strings."""

    async def open(self) -> None:
        """Connect, log in, open the mailbox and start watching: arrivals from now on are
        noticed."""
        ...

    async def wait(self, deadline: float) -> float | None:
        """Wait until mail may have arrived, at most until ``deadline`` (monotonic).

        Returns when it arrived (monotonic), or None if nothing was announced.
        """
        ...

    async def find(self, prefix: str) -> list[str]:
        """Messages in the watched folder whose probe id header starts with ``prefix``."""
        ...

    async def junk(self, prefix: str) -> list[str]:
        """Messages with that header that arrived in the junk folder since :meth:`open`
        (cheaply: nothing is searched while the folder has no new mail)."""
        ...

    async def reports(self, prefix: str) -> list[str]:
        """Delivery status notifications that arrived since :meth:`open` and quote a header
        starting with ``prefix``; [] where the transport cannot search message text."""
        ...

    async def sent_copies(self, prefix: str) -> list[str]:
        """Copies of probe messages in the account's Sent folder, where the server keeps
        them (Exchange does for mail submitted over SMTP)."""
        ...

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        """The probe id and the other :data:`READ_FIELDS` of each message."""
        ...

    async def raw(self, ref: str, limit: int) -> bytes:
        """The first ``limit`` bytes of a message."""
        ...

    async def delete(self, refs: Sequence[str]) -> bool:
        """Remove exactly these messages for good; False if they could only be marked."""
        ...

    async def close(self) -> None:
        """Log out politely; a server that hangs up first is not a failure."""
        ...

    def abort(self) -> None:
        """Drop every connection at once."""
        ...

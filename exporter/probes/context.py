"""What every probe shares, scheduled or on demand: built once by whoever runs probes.

A probe that sent a message and gave up leaves it to a later probe of the same target, which
can only recognise it with the same key and the same memory of what was sent: so the key,
the sent ids and the token cache are one object, passed to every probe, never defaulted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from exporter.message import ProbeIds
from exporter.probes.guard import LoginGuard
from exporter.transports import net
from exporter.transports.oauth import ConnectionPools, TokenCache

REMEMBERED: Final = 200
"""Probe ids kept per target for late arrivals; the oldest are forgotten first."""


class SentProbes:
    """Probe ids of one mailbox this process has sent or found, so that a late arrival is
    counted once even if deleting it takes several tries."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._limit = limit
        self._sent: OrderedDict[str, bool] = OrderedDict()
        self.awaited: set[str] = set()
        """Ids of messages a round trip in flight is waiting for: no other round trip of the
        same mailbox (scheduled or on demand) touches them."""

    def add(self, probe_id: str) -> None:
        self._remember(probe_id, found=False)
        self.awaited.add(probe_id)

    def done(self, probe_id: str) -> None:
        """Its round trip is over, however it ended: from now on it is anyone's to clean."""
        self.awaited.discard(probe_id)

    def seen(self, probe_id: str) -> bool:
        """Note that a message was found; True the first time it is found.

        Ids this process does not remember (sent before a restart) count as found now.
        """
        first = not self._sent.get(probe_id, False)
        self._remember(probe_id, found=True)
        return first

    def _remember(self, probe_id: str, found: bool) -> None:
        self._sent[probe_id] = found
        while len(self._sent) > self._limit:
            self._sent.popitem(last=False)

    def forget(self, probe_ids: Iterable[str]) -> None:
        for probe_id in probe_ids:
            self._sent.pop(probe_id, None)


@dataclass
class ProbeContext:
    """The probe-id key, the access tokens, the lock-out guard and the sent probes of every
    target; through its token cache, the HTTP connection pools every probe reuses."""

    ids: ProbeIds
    tokens: TokenCache
    guard: LoginGuard
    _sent: dict[str, SentProbes] = field(default_factory=dict)

    def sent(self, target: str) -> SentProbes:
        """The probes sent to ``target``, whether scheduled or on demand."""
        return self._sent.setdefault(target, SentProbes())

    def keep_only(self, targets: Iterable[str]) -> None:
        """Forget the sent probes of targets no longer configured."""
        names = set(targets)
        self._sent = {name: sent for name, sent in self._sent.items() if name in names}

    @property
    def pools(self) -> ConnectionPools:
        """The mail APIs' and token endpoints' connections, kept across probes: they travel
        with the token cache, which every transport is given."""
        return self.tokens.pools

    def renew_connections(self, grace: float) -> None:
        """After a reload: TLS contexts are read afresh, since a CA file may now hold another
        CA, and new pooled connections use them; the old ones close after ``grace`` seconds."""
        net.tls_context.cache_clear()
        self.pools.renew(grace)

    async def close(self) -> None:
        """Close the token cache and with it every pooled connection."""
        await self.tokens.close()

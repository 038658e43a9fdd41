"""roundtrip: does mail sent to the mailbox arrive, and how long does it take?

The probe logs in over IMAP and starts watching (IDLE, or polling where IDLE is not offered)
before it submits the probe message over SMTP, so that the arrival is seen the moment the
server announces it. Delivery time runs from the server's reply to DATA to that announcement.
It then confirms the message by its probe id header and deletes it by UID.

Only messages whose id verifies under this exporter's key for this target are ever deleted
(see :class:`exporter.message.ProbeIds`). A message that arrives after its probe gave up is
counted late and deleted by the next probe that sees it, after a restart too.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from exporter import message
from exporter.config import Target
from exporter.imap import ImapSession, quote
from exporter.message import ProbeIds
from exporter.oauth import TokenCache
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.probes import imap_login, smtp_login
from exporter.probes.trace import Trace
from exporter.smtp import SmtpSession

IDLE_RENEWAL: Final = 600.0
"""Re-issue IDLE this often; hosted providers drop idle sessions after about ten minutes."""

FIRST_POLL: Final = 0.025
"""Without IDLE, the first poll after sending waits this long, and each next one twice as
long, up to ``poll_interval``: local delivery is seen within tens of milliseconds rather
than a whole interval late, and a slow delivery still costs few polls."""

REMEMBERED: Final = 200
"""Probe ids kept per target for late arrivals; the oldest are forgotten first."""


class SentProbes:
    """Probe ids of one mailbox this process has sent or found, so that a late arrival is
    counted once even if deleting it takes several tries."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._limit = limit
        self._sent: OrderedDict[str, bool] = OrderedDict()

    def add(self, probe_id: str) -> None:
        self._remember(probe_id, found=False)

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

    def forget(self, probe_ids: list[str]) -> None:
        for probe_id in probe_ids:
            self._sent.pop(probe_id, None)


def sort_out(
    headers: Mapping[int, str], ids: ProbeIds, target: str
) -> tuple[dict[int, str], set[int]]:
    """Split candidate messages (UID to probe id header) into provably ours and lookalikes.

    Ours are the messages whose id verifies for this target under this exporter's key: only
    those are ever deleted. Everything else that carries the header is a lookalike: forged, or
    another exporter's, or this exporter's for another target; it is left alone.
    """
    ours = {uid: value for uid, value in headers.items() if ids.verify(value, target)}
    return ours, set(headers) - set(ours)


async def _find(imap: ImapSession, ids: ProbeIds, examined: set[int]) -> list[int]:
    """UIDs of messages with this exporter's id prefix in their header, not examined before."""
    key = f"HEADER {message.PROBE_HEADER} {quote(ids.prefix + '.')}"
    return [uid for uid in await imap.search(key) if uid not in examined]


async def _watch(
    imap: ImapSession, target: Target, ids: ProbeIds, examined: set[int], deadline: float
) -> tuple[float, list[int]]:
    """Wait until a search finds candidates; return when they arrived and their UIDs.

    With IDLE the mailbox is already being watched when this is called, and is left
    watched again only when the wait goes on.
    """
    idle = imap.has("IDLE") and target.imap.idle
    pause = FIRST_POLL
    while True:
        arrived: float | None
        if idle:
            remaining = deadline - time.monotonic()
            arrived = await imap.wait_for_new_mail(max(0.0, min(remaining, IDLE_RENEWAL)))
            await imap.idle_done()
        else:
            await imap.noop()
            arrived = time.monotonic()
        uids = await _find(imap, ids, examined) if arrived is not None else []
        if uids:
            assert arrived is not None
            return arrived, uids
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProbeFailure(
                Reason.NOT_DELIVERED,
                "the probe message was accepted but had not arrived when the probe gave up",
            )
        if idle:
            await imap.idle_start()
        else:
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, target.imap.poll_interval)


async def probe(
    target: Target, trace: Trace, sent: SentProbes, tokens: TokenCache, ids: ProbeIds
) -> None:
    """Run one round trip; see the module docstring."""
    deadline = trace.deadline - min(2.0, trace.remaining() * 0.1)
    probe_id = ids.new(target.name)
    body = message.build(
        target=target.name, mail_from=target.mail_from, mail_to=target.mail_to, probe_id=probe_id
    )
    async with ImapSession(target.imap, trace.say) as imap:
        await imap_login.log_in(imap, target.imap, trace, tokens)
        with trace.phase(Phase.IMAP_SELECT):
            await imap.select()
            if target.imap.idle and imap.has("IDLE"):
                await imap.idle_start()
            imap.forget_new_mail()

        async with SmtpSession(target.smtp, trace.say) as smtp:
            await smtp_login.log_in(smtp, target.smtp, trace, tokens)
            with trace.phase(Phase.SMTP_SEND):
                await smtp.send(target.mail_from, target.mail_to, body)
            accepted = time.monotonic()
            sent.add(probe_id)
            try:
                async with asyncio.timeout(1.0):
                    await smtp.quit()
            except TimeoutError:
                pass

        examined: set[int] = set()
        ours: dict[int, str] = {}
        lookalikes: set[int] = set()
        try:
            while probe_id not in ours.values():
                with trace.phase(Phase.DELIVERY):
                    arrived, candidates = await _watch(imap, target, ids, examined, deadline)
                with trace.phase(Phase.IMAP_FETCH):
                    found = await imap.header(candidates, message.PROBE_HEADER)
                examined.update(candidates)
                verified, unverified = sort_out(
                    {uid: found.get(uid, "") for uid in candidates}, ids, target.name
                )
                ours.update(verified)
                lookalikes |= unverified
                trace.lookalikes = len(lookalikes)
        except ProbeFailure as failure:
            if failure.reason is Reason.NOT_DELIVERED:
                await imap.logout()
            raise
        trace.delivery_seconds = max(0.0, arrived - accepted)
        trace.phases[Phase.DELIVERY] = trace.delivery_seconds

        trace.late_arrivals = sum(
            1 for found_id in set(ours.values()) if found_id != probe_id and sent.seen(found_id)
        )
        with trace.phase(Phase.IMAP_CLEANUP):
            try:
                expunged = await imap.delete(ours)
            except ProbeFailure:
                trace.cleanup_failed = True
            else:
                if expunged:
                    trace.cleanup_deleted = len(ours)
                    sent.forget(list(ours.values()))
                else:
                    trace.cleanup_failed = True
        await imap.logout()

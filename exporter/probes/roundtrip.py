"""roundtrip: does mail sent to the mailbox reach its Inbox, how fast, and if not, why?

Written once over any sender and any receiver. The receiver logs in and starts watching
before the sender submits the probe message, so that the arrival is seen the moment the
server announces it. Delivery time runs from the server accepting the message to that
announcement. The message is then confirmed by its probe id header and deleted, and so is
its copy in the Sent folder where the server keeps one.

While it waits the round trip also looks, every :data:`EXTRA_LOOKS` seconds, in the junk
folder (a probe filed there fails as ``junk`` at once, with its delivery time) and for
bounces that quote the probe (it fails with the bounce's reason; a bounce is never taken for
the arrival).

Only messages whose id verifies under this exporter's key for this target are ever deleted
(see :class:`exporter.message.ProbeIds`; the key is random and kept across restarts, see
:mod:`exporter.probekey`). A message that arrives after its probe gave up is
counted late and deleted by the next probe that sees it, after a restart too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from exporter import authres, bounce, classify, message
from exporter.config import Target
from exporter.message import ProbeIds
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.probes.context import ProbeContext
from exporter.result import Findings
from exporter.trace import Trace
from exporter.transports import Envelope, ProbeMessage, Receiver, registry

LOGOUT_SHARE: Final = 0.1
"""Stop waiting for delivery this share of the timeout early (at most ``LOGOUT_TIME``), to
leave time to log out politely."""
LOGOUT_TIME: Final = 2.0
EXTRA_LOOKS: Final = 2.0
"""Seconds between looks in the junk folder and for bounces while waiting: each costs a
STATUS or a search, and finds a misfiled or refused probe within a few seconds."""
NOT_AN_ARRIVAL: Final = (
    "undeliverable",
    "undelivered",
    "delivery status notification",
    "mail delivery failed",
    "returned mail",
    "failure notice",
    "non-delivery",
    "delivery failure",
)
"""Subjects of non-delivery reports: one that carries a probe's header is still no arrival."""
_TAGS: Final = re.compile(r"^(?:\s*\[[^\]]*\])*\s*")
"""Tags a transport rule puts before a subject (``[EXTERNAL] ``)."""


def sort_out(
    envelopes: Mapping[str, Envelope], ids: ProbeIds, target: str
) -> tuple[dict[str, str], set[str]]:
    """Split candidate messages into provably ours (reference to probe id) and lookalikes.

    Ours are the messages whose id verifies for this target under this exporter's key and
    that are no non-delivery report: only those are ever deleted. Everything else that
    carries the header is a lookalike: forged, or another exporter's, or this exporter's for
    another target; it is left alone.
    """
    ours = {
        ref: envelope.probe_id
        for ref, envelope in envelopes.items()
        if ids.verify(envelope.probe_id, target)
        and not _TAGS.sub("", envelope.subject).lower().startswith(NOT_AN_ARRIVAL)
    }
    return ours, set(envelopes) - set(ours)


Where = Literal["inbox", "junk", "report"]
Look = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class _Arrival:
    where: Where
    at: float
    """When it arrived (monotonic): announced, or seen by a look."""
    refs: list[str]


async def _arrivals(
    receiver: Receiver, prefix: str, examined: set[str], deadline: float
) -> _Arrival:
    """Wait until the receiver finds candidates not examined before: in the watched folder,
    or, at a look every :data:`EXTRA_LOOKS` seconds, reports and junk."""
    next_look = time.monotonic() + EXTRA_LOOKS
    while True:
        arrived = await receiver.wait(min(deadline, next_look))
        if arrived is not None:
            refs = [ref for ref in await receiver.find(prefix) if ref not in examined]
            if refs:
                return _Arrival("inbox", arrived, refs)
        now = time.monotonic()
        if now >= next_look or now >= deadline:
            next_look = now + EXTRA_LOOKS
            looks: tuple[tuple[Where, Look], ...] = (
                ("report", receiver.reports),
                ("junk", receiver.junk),
            )
            for where, look in looks:
                refs = [ref for ref in await look(prefix) if ref not in examined]
                if refs:
                    return _Arrival(where, now, refs)
        if now >= deadline:
            raise ProbeFailure(
                Reason.NOT_DELIVERED,
                "the probe message was accepted but had not arrived when the probe gave up",
            )


def compose(target: Target, probe_id: str) -> ProbeMessage:
    raw = message.build(
        target=target.name, mail_from=target.mail_from, mail_to=target.mail_to, probe_id=probe_id
    )
    return ProbeMessage(
        probe_id=probe_id,
        mail_from=target.mail_from,
        mail_to=target.mail_to,
        subject=message.subject(probe_id),
        text=message.body(target.name),
        headers=message.headers(probe_id),
        raw=raw,
    )


class _RoundTrip:
    """One round trip's state: what it has examined, found and deleted."""

    def __init__(self, target: Target, trace: Trace, context: ProbeContext, ids: ProbeIds) -> None:
        self.target, self.trace, self.ids = target, trace, ids
        self.sent = context.sent(target.name)
        self.probe_id = ids.new(target.name)
        self.receiver = registry.receiver(
            target.receiver, target.section(target.receiver), trace, context.tokens
        )
        self.sender = registry.sender(
            target.sender, target.section(target.sender), trace, context.tokens
        )
        self.examined: set[str] = set()
        self.ours: dict[str, str] = {}
        self.lookalikes: set[str] = set()

    @property
    def found(self) -> Findings:
        return self.trace.found

    def _mine(self, verified: Mapping[str, str]) -> dict[str, str]:
        """Verified messages, less those another round trip in flight still awaits."""
        others = self.sent.awaited - {self.probe_id}
        return {ref: probe_id for ref, probe_id in verified.items() if probe_id not in others}

    async def run(self, deadline: float) -> None:
        receiver = self.receiver
        await receiver.open()
        self.sent.add(self.probe_id)
        accepted = await self.sender.send(compose(self.target, self.probe_id))
        prefix = self.ids.prefix + "."
        try:
            while True:
                with self.trace.phase(Phase.DELIVERY):
                    arrival = await _arrivals(receiver, prefix, self.examined, deadline)
                self.examined.update(arrival.refs)
                if arrival.where == "report":
                    await self._bounces(arrival.refs)
                    continue
                envelopes = await receiver.read(arrival.refs)
                verified, unverified = sort_out(envelopes, self.ids, self.target.name)
                self.ours.update(self._mine(verified))
                self.lookalikes |= unverified
                if self.probe_id in verified.values():
                    self._verdicts(envelopes, verified)
                    break
        except ProbeFailure as failure:
            if failure.reason is Reason.NOT_DELIVERED:
                await receiver.close()
            raise
        self.found.lookalikes = len(self.lookalikes)
        self.found.delivery_seconds = max(0.0, arrival.at - accepted)
        self.trace.phases[Phase.DELIVERY] = self.found.delivery_seconds
        self.found.late_arrivals = sum(
            1
            for found_id in set(self.ours.values())
            if found_id != self.probe_id and self.sent.seen(found_id)
        )
        await self._delete(self.ours)
        if arrival.where == "junk":
            self.found.junk = True
            await receiver.close()
            raise ProbeFailure(
                Reason.JUNK,
                f"the probe message was filed as junk, {self.found.delivery_seconds:.1f}s after "
                "the server accepted it",
                Phase.DELIVERY,
            )
        await self._sweep(receiver.junk, prefix, arrivals=True)
        if self._same_account():
            await self._sweep(receiver.sent_copies, prefix, arrivals=False)
        await receiver.close()

    def _verdicts(self, envelopes: Mapping[str, Envelope], verified: Mapping[str, str]) -> None:
        """The receiving server's authentication verdicts on this probe, where it is named."""
        if self.target.authserv_id is None:
            return
        ref = next(ref for ref, probe_id in verified.items() if probe_id == self.probe_id)
        fields = envelopes[ref].authentication_results
        self.found.authentication = authres.verdicts(fields, self.target.authserv_id)

    async def _delete(self, messages: Mapping[str, str]) -> None:
        if not messages:
            return
        try:
            removed = await self.receiver.delete(list(messages))
        except ProbeFailure:
            removed = False
        if removed:
            self.found.cleanup_deleted += len(messages)
            self.sent.forget(messages.values())
        else:
            self.found.cleanup_failed = True

    async def _bounces(self, refs: list[str]) -> None:
        """Delete the reports on this exporter's probes; fail if one says this probe's delivery
        failed (a delay or relay notice does not)."""
        reports: dict[str, bounce.Bounce] = {}
        for ref in refs:
            raw = await self.receiver.raw(ref, bounce.MAX_REPORT)
            # In a thread: a hostile message may take tenths of a second to read, which would
            # hold up every other probe and scrape. bounce.read skips what it cannot read.
            found = await asyncio.to_thread(bounce.read, raw)
            if found is not None and self.ids.verify(found.probe_id, self.target.name):
                reports[ref] = found
        mine = self._mine({ref: report.probe_id for ref, report in reports.items()})
        deleted = self.found.cleanup_deleted
        await self._delete(mine)
        if self.found.cleanup_deleted > deleted:
            self.found.bounces += len(mine)
        report = next(
            (reports[r] for r, i in mine.items() if i == self.probe_id and reports[r].failed),
            None,
        )
        if report is not None:
            words = f"{report.status} {report.text}".strip()
            raise ProbeFailure(
                classify.smtp_reply(report.code, words, "send"),
                f"bounced: {report.code} {words}",
                Phase.DELIVERY,
            )

    def _same_account(self) -> bool:
        """Whether the sending account is the watched one, whose Sent folder may keep a copy."""
        target = self.target
        sending, receiving = target.section(target.sender), target.section(target.receiver)
        return sending.username.lower() == receiving.username.lower()

    async def _sweep(self, look: Look, prefix: str, arrivals: bool) -> None:
        """Delete this exporter's probes another folder holds: probes filed as junk after
        their round trip gave up (``arrivals``: counted late), or copies in Sent."""
        found = [ref for ref in await look(prefix) if ref not in self.examined]
        if not found:
            return
        verified, _ = sort_out(await self.receiver.read(found), self.ids, self.target.name)
        mine = self._mine(verified)
        if arrivals:
            self.found.late_arrivals += sum(
                1 for i in set(mine.values()) if i != self.probe_id and self.sent.seen(i)
            )
        await self._delete(mine)


async def probe(target: Target, trace: Trace, context: ProbeContext) -> None:
    """Run one round trip; see the module docstring."""
    deadline = trace.deadline - min(LOGOUT_TIME, trace.remaining() * LOGOUT_SHARE)
    trip = _RoundTrip(target, trace, context, context.ids)
    try:
        await trip.run(deadline)
    finally:
        trip.sent.done(trip.probe_id)
        trip.receiver.abort()

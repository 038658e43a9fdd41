"""roundtrip: does mail sent to the mailbox arrive, and how long does it take?

Written once over any sender and any receiver. The receiver logs in and starts watching
before the sender submits the probe message, so that the arrival is seen the moment the
server announces it. Delivery time runs from the server accepting the message to that
announcement. The message is then confirmed by its probe id header and deleted.

Only messages whose id verifies under this exporter's key for this target are ever deleted
(see :class:`exporter.message.ProbeIds`; the key is derived from the target's secrets, see
:class:`exporter.message.ProbeKeys`). A message that arrives after its probe gave up is
counted late and deleted by the next probe that sees it, after a restart too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from exporter import message
from exporter.config import Target
from exporter.message import ProbeIds
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.probes.context import ProbeContext
from exporter.trace import Trace
from exporter.transports import ProbeMessage, Receiver, registry

LOGOUT_SHARE: Final = 0.1
"""Stop waiting for delivery this share of the timeout early (at most ``LOGOUT_TIME``), to
leave time to log out politely."""
LOGOUT_TIME: Final = 2.0


def sort_out(
    headers: Mapping[str, str], ids: ProbeIds, target: str
) -> tuple[dict[str, str], set[str]]:
    """Split candidate messages (reference to probe id header) into provably ours and
    lookalikes.

    Ours are the messages whose id verifies for this target under this exporter's key: only
    those are ever deleted. Everything else that carries the header is a lookalike: forged, or
    another exporter's, or this exporter's for another target; it is left alone.
    """
    ours = {ref: value for ref, value in headers.items() if ids.verify(value, target)}
    return ours, set(headers) - set(ours)


async def _arrivals(
    receiver: Receiver, prefix: str, examined: set[str], deadline: float
) -> tuple[float, list[str]]:
    """Wait until the receiver finds candidates not examined before; when they arrived, and
    which."""
    while True:
        arrived = await receiver.wait(deadline)
        if arrived is not None:
            refs = [ref for ref in await receiver.find(prefix) if ref not in examined]
            if refs:
                return arrived, refs
        if time.monotonic() >= deadline:
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


async def probe(target: Target, trace: Trace, context: ProbeContext) -> None:
    """Run one round trip; see the module docstring."""
    deadline = trace.deadline - min(LOGOUT_TIME, trace.remaining() * LOGOUT_SHARE)
    ids = await context.keys.ids(target.name, target.secrets())
    sent = context.sent(target.name)
    probe_id = ids.new(target.name)
    receiver = registry.receiver(
        target.receiver, target.section(target.receiver), trace, context.tokens
    )
    sender = registry.sender(target.sender, target.section(target.sender), trace, context.tokens)
    try:
        await receiver.open()
        sent.add(probe_id)
        accepted = await sender.send(compose(target, probe_id))

        examined: set[str] = set()
        ours: dict[str, str] = {}
        lookalikes: set[str] = set()
        try:
            while probe_id not in ours.values():
                with trace.phase(Phase.DELIVERY):
                    arrived, candidates = await _arrivals(
                        receiver, ids.prefix + ".", examined, deadline
                    )
                found = await receiver.probe_ids(candidates)
                examined.update(candidates)
                verified, unverified = sort_out(
                    {ref: found.get(ref, "") for ref in candidates}, ids, target.name
                )
                others_awaited = sent.awaited - {probe_id}
                ours.update({r: i for r, i in verified.items() if i not in others_awaited})
                lookalikes |= unverified
        except ProbeFailure as failure:
            if failure.reason is Reason.NOT_DELIVERED:
                await receiver.close()
            raise
        findings = trace.found
        findings.lookalikes = len(lookalikes)
        findings.delivery_seconds = max(0.0, arrived - accepted)
        trace.phases[Phase.DELIVERY] = findings.delivery_seconds
        findings.late_arrivals = sum(
            1 for found_id in set(ours.values()) if found_id != probe_id and sent.seen(found_id)
        )
        try:
            removed = await receiver.delete(list(ours))
        except ProbeFailure:
            removed = False
        if removed:
            findings.cleanup_deleted = len(ours)
            sent.forget(ours.values())
        else:
            findings.cleanup_failed = True
        await receiver.close()
    finally:
        sent.done(probe_id)
        receiver.abort()

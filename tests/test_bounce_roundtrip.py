"""Bounces in a real mailbox, among hostile ones: Postfix bounces a probe, and with its bounce
arrive messages that mention the probe and are no readable bounce of it. The probe fails with
the real bounce's reason, deletes only that bounce, and leaves the others where they are."""

from __future__ import annotations

import asyncio
import logging
import re
from email.message import EmailMessage

import pytest

from exporter import probes
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing.mailstack import MailStack, MailUser
from testing.targets import fixed_ids, make_target

WAIT_FOR_BOUNCE = 15.0
"""Seconds Postfix gets to bounce the probe (it takes well under one)."""
POLL = 0.02


def _nested(depth: int, probe_id: str) -> bytes:
    """A report nested ``depth`` multiparts deep, the probe's header at the bottom: the email
    package parses nesting by recursion. Its subject names the probe, for the search to find
    it (Dovecot does not look that deep)."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (level, level)
        for level in range(depth)
    )
    return (
        b"From: MAILER-DAEMON@example.test\nSubject: Undelivered: %s\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="top"\n\n'
        b"--top\n"
        % probe_id.encode()
        + opening
        + b"Content-Type: text/rfc822-headers\n\nX-Mailbox-Probe-Id: %s\n--top--\n"
        % probe_id.encode()
    )


def _unknown_charset(prefix: str) -> bytes:
    """A report in ``unknown-8bit`` on a message that is no probe of this target (its id
    carries this exporter's prefix and does not verify)."""
    return (
        b"From: MAILER-DAEMON@example.test\nSubject: Returned mail\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="u"\n\n'
        b"--u\nContent-Type: text/plain; charset=unknown-8bit\n\nnot d\xe9livr\xe9\n"
        b"--u\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        b"Final-Recipient: rfc822; x@example.test\nAction: failed\nStatus: 5.1.1\n\n"
        b"--u\nContent-Type: text/rfc822-headers; charset=unknown-8bit\n\n"
        b"X-Mailbox-Probe-Id: %s.00000000.0123456789abcdef.000000000000000000000000\n"
        b"Subject: caf\xe9\n--u--\n" % prefix.encode()
    )


def _forward(probe_head: bytes) -> bytes:
    """A postmaster forwarding the probe to someone, quoting its header and a status code."""
    mail = EmailMessage()
    mail["From"] = "Postmaster <postmaster@example.test>"
    mail["Subject"] = "Fwd: mailbox-exporter probe"
    mail.set_content(
        "Is this ours? We saw 5.1.1 for it.\n\n---------- Forwarded message ----------\n"
        + probe_head.decode()
    )
    return mail.as_bytes()


def _contents(stack: MailStack, user: MailUser) -> list[bytes]:
    return [path.read_bytes() for path in stack.message_files(user)]


async def test_hostile_reports_and_a_forward_beside_a_real_bounce(
    mailstack: MailStack, user: MailUser, context: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(
        mailstack,
        user,
        timeout="20s",
        interval="20s",
        extra=f"    to: nobody-{user.name}@{mailstack.domain}\n",
    )
    prefix = fixed_ids(context).prefix
    before = {path.name for path in mailstack.message_files(user)}
    planted: list[bytes] = []

    async def plant_beside_the_bounce() -> None:
        """As soon as Postfix's bounce is in the mailbox, put the others beside it, so that
        the round trip's next look finds them all at once."""
        async with asyncio.timeout(WAIT_FOR_BOUNCE):
            while not (
                arrived := [p for p in mailstack.message_files(user) if p.name not in before]
            ):
                await asyncio.sleep(POLL)
        real = arrived[0].read_bytes()
        found = re.search(rb"X-Mailbox-Probe-Id: (\S+)", real)
        assert found is not None, real
        start = real.index(b"\nFrom: ", found.start() - 2000)
        probe_head = real[start + 1 : real.index(b"\n\n", found.start())]
        planted.extend(
            (
                _nested(3000, found.group(1).decode()),
                _unknown_charset(prefix),
                _forward(probe_head),
            )
        )
        for raw in planted:
            mailstack.put_message(user, raw)

    planting = asyncio.create_task(plant_beside_the_bounce())
    with caplog.at_level(logging.WARNING, logger="exporter.bounce"):
        result = await probes.run(target, Check.ROUNDTRIP, context)
    await planting

    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.DELIVERY), result
    assert result.detail.startswith("bounced:") and "5.1.1" in result.detail
    assert result.duration < 8, "failed when the bounce arrived, not at the timeout"
    assert result.found.bounces == 1
    left = _contents(mailstack, user)
    assert len(left) == len(planted), "only the real bounce was deleted"
    for raw in planted:
        assert any(raw.replace(b"\r\n", b"\n") in stored.replace(b"\r\n", b"\n") for stored in left)
    skipped = [r.getMessage() for r in caplog.records if r.name == "exporter.bounce"]
    assert skipped == [
        "a message that mentions a probe id was skipped as unreadable: "
        "more than 64 Content-Type fields"
    ]

"""Probes against a real Postfix + Dovecot: success, and each failure with its reason and phase."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from email.message import EmailMessage

import pytest

from exporter import probes
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing import fakeserver
from testing.mailstack import MailStack, MailUser
from testing.targets import make_target, probe_files

ALL = (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN)


def _existing_mail(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = "colleague@example.test"
        msg["To"] = "someone@example.test"
        msg["Subject"] = f"real mail {i}"
        msg.set_content(f"body {i}\n")
        out.append(msg.as_bytes())
    return out


async def test_roundtrip_delivers_and_deletes_only_its_probe(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    for raw in _existing_mail(50):
        mailstack.put_message(user, raw)
    before = sorted(p.read_bytes() for p in mailstack.message_files(user))
    target = make_target(mailstack, user)

    result = await probes.run(target, Check.ROUNDTRIP, context)

    assert result.success, result
    assert result.reason is None and result.phase is None
    expected = {
        Phase.IMAP_CONNECT,
        Phase.IMAP_AUTH,
        Phase.IMAP_SELECT,
        Phase.SMTP_CONNECT,
        Phase.SMTP_AUTH,
        Phase.SMTP_SEND,
        Phase.DELIVERY,
        Phase.IMAP_FETCH,
        Phase.IMAP_CLEANUP,
    }
    assert set(result.phases) == expected
    assert all(seconds >= 0 for seconds in result.phases.values())
    assert result.delivery_seconds is not None
    assert 0 <= result.delivery_seconds < 10
    assert result.phases[Phase.DELIVERY] == result.delivery_seconds
    assert result.found.cleanup_deleted == 1 and not result.found.cleanup_failed
    assert probe_files(mailstack, user) == []
    after = sorted(p.read_bytes() for p in mailstack.message_files(user))
    assert len(after) == 50
    assert after == before


async def test_roundtrip_by_polling_when_idle_is_off(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    target = make_target(mailstack, user)
    target = replace(target, imap=replace(target.imap, idle=False))
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert probe_files(mailstack, user) == []


async def test_login_checks_succeed(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    target = make_target(mailstack, user)
    smtp = await probes.run(target, Check.SMTP_LOGIN, context)
    imap = await probes.run(target, Check.IMAP_LOGIN, context)
    assert smtp.success and imap.success, (smtp, imap)
    assert set(smtp.phases) == {Phase.SMTP_CONNECT, Phase.SMTP_AUTH}
    assert set(imap.phases) == {Phase.IMAP_CONNECT, Phase.IMAP_AUTH, Phase.IMAP_SELECT}


@pytest.mark.parametrize(
    ("check", "phase"),
    [
        (Check.ROUNDTRIP, Phase.IMAP_AUTH),
        (Check.SMTP_LOGIN, Phase.SMTP_AUTH),
        (Check.IMAP_LOGIN, Phase.IMAP_AUTH),
    ],
)
async def test_wrong_password_is_auth_rejected(
    mailstack: MailStack, user: MailUser, check: Check, phase: Phase, context: ProbeContext
) -> None:
    target = make_target(mailstack, user, password="not-the-password")
    result = await probes.run(target, check, context)
    assert (result.success, result.reason, result.phase) == (False, Reason.AUTH_REJECTED, phase)
    assert "not-the-password" not in result.detail


async def test_missing_passwd_file_is_reported_as_each_server_says(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    """Dovecot cannot read its user database.

    Dovecot says so over IMAP (``NO [UNAVAILABLE]``): a temporary failure. Postfix turns the
    same answer from Dovecot into ``535 5.7.8 ... (reason unavailable)``, the reply it gives
    for a wrong password, so SMTP can only report a rejection.
    """
    target = make_target(mailstack, user)
    mailstack.break_passwd_file()
    try:
        results = {check: await probes.run(target, check, context) for check in ALL}
    finally:
        mailstack.restore_passwd_file()
    expected = {
        Check.IMAP_LOGIN: (Reason.AUTH_TEMPORARY, Phase.IMAP_AUTH),
        Check.ROUNDTRIP: (Reason.AUTH_TEMPORARY, Phase.IMAP_AUTH),
        Check.SMTP_LOGIN: (Reason.AUTH_REJECTED, Phase.SMTP_AUTH),
    }
    assert {c: (r.reason, r.phase) for c, r in results.items()} == expected, results
    assert "UNAVAILABLE" in results[Check.IMAP_LOGIN].detail
    assert "reason unavailable" in results[Check.SMTP_LOGIN].detail


async def test_dovecot_stopped_is_connect_refused(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    target = make_target(mailstack, user)
    mailstack.stop_dovecot()
    try:
        imap = await probes.run(target, Check.IMAP_LOGIN, context)
        roundtrip = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        mailstack.start_dovecot()
    for result in (imap, roundtrip):
        assert (result.reason, result.phase) == (Reason.CONNECT_REFUSED, Phase.IMAP_CONNECT)


async def test_deferred_delivery_is_not_delivered_then_late(
    mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    target = make_target(mailstack, user, timeout="4s")
    mailstack.defer_delivery()
    try:
        stalled = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        mailstack.resume_delivery()
    assert (stalled.reason, stalled.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY), stalled
    assert stalled.duration <= target.timeout(Check.ROUNDTRIP) + 1

    deadline = time.monotonic() + 10
    while not probe_files(mailstack, user) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(probe_files(mailstack, user)) == 1, "the deferred probe was delivered"

    healed = await probes.run(target, Check.ROUNDTRIP, context)
    assert healed.success, healed
    assert healed.found.late_arrivals == 1
    assert healed.found.cleanup_deleted == 2
    assert probe_files(mailstack, user) == []


@pytest.mark.parametrize(
    ("check", "phase"),
    [
        (Check.SMTP_LOGIN, Phase.SMTP_CONNECT),
        (Check.IMAP_LOGIN, Phase.IMAP_CONNECT),
        (Check.ROUNDTRIP, Phase.IMAP_CONNECT),
    ],
)
async def test_a_server_that_never_greets_times_out_on_time(
    mailstack: MailStack, user: MailUser, check: Check, phase: Phase, context: ProbeContext
) -> None:
    async with fakeserver.serve(fakeserver.never_greet) as port:
        target = make_target(mailstack, user, timeout="2s")
        target = replace(
            target, smtp=replace(target.smtp, port=port), imap=replace(target.imap, port=port)
        )
        started = time.monotonic()
        result = await probes.run(target, check, context)
        elapsed = time.monotonic() - started
    assert (result.reason, result.phase) == (Reason.TIMEOUT, phase), result
    assert elapsed <= target.timeout(check) + 1


@pytest.mark.parametrize(
    ("idle", "polls", "idles"),
    [(None, True, True), (True, False, True), (False, True, False)],
)
async def test_the_wait_polls_first_then_idles_unless_told(
    mailstack: MailStack,
    user: MailUser,
    context: ProbeContext,
    idle: bool | None,
    polls: bool,
    idles: bool,
) -> None:
    """By default a round trip polls for the first seconds after sending (fast deliveries are
    measured exactly), then watches with IDLE; ``idle: true/false`` mean what they say."""
    target = make_target(mailstack, user, timeout="4s")
    if idle is not None:
        target = replace(target, imap=replace(target.imap, idle=idle))  # type: ignore[arg-type]
    mailstack.defer_delivery()
    try:
        result = await probes.run(target, Check.ROUNDTRIP, context, transcript=True)
    finally:
        mailstack.resume_delivery()
    assert result.reason is Reason.NOT_DELIVERED, result
    sent = next(i for i, line in enumerate(result.transcript) if "C: DATA" in line)
    after = result.transcript[sent:]
    assert any(line.endswith("C: NOOP") for line in after) == polls, after
    assert any(line.endswith("C: IDLE") for line in result.transcript) == idles, after
    if polls and idles:
        first_idle = next(i for i, line in enumerate(after) if line.endswith("C: IDLE"))
        assert not any(line.endswith("C: NOOP") for line in after[first_idle:])
        assert float(after[first_idle].split("s", 1)[0]) - float(after[0].split("s", 1)[0]) >= 2

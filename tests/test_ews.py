"""The EWS transport (Exchange Server) against the EWS simulator and the real Postfix/Dovecot
harness: round trips EWS→EWS with each way of signing in, SMTP (Postfix)→EWS, EWS→IMAP (the
simulator relaying to Postfix), a real Postfix bounce read from the Inbox; refused logins,
a server that is down, busy, unavailable or hanging, mail never delivered or filed as junk;
100 round trips that leave no probe behind and ordinary mail and lookalikes untouched; both
readings of x-header promotion; the parsers of EWS answers under hypothesis; no secret
shown."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import spnego
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import probes
from exporter.config import ConfigError, Target, parse
from exporter.config.sections.ews import EwsConfig
from exporter.message import PROBE_HEADER
from exporter.outcome import Check, Phase, ProbeFailure, Reason
from exporter.probes import roundtrip
from exporter.probes.context import ProbeContext
from exporter.serve import metrics, ondemand
from exporter.trace import Trace
from exporter.transports import ProbeMessage, http
from exporter.transports import ews as transport
from testing.mailstack import MailStack, MailUser
from testing.simulators._base import build_message
from testing.simulators.ews import EWS_PATH, EwsSimulator
from testing.targets import ews_account as account
from testing.targets import ews_lines as section
from testing.targets import ews_probe_items as probe_items
from testing.targets import fixed_ids

DOMAIN = "exchange.example"
_numbers = itertools.count(1)
PROPERTY = settings(derandomize=True, max_examples=200, deadline=None)
"""Property tests: reproducible, a few seconds each at most."""


@pytest.fixture(scope="module")
def ews() -> Iterator[EwsSimulator]:
    sim = EwsSimulator(domains=(DOMAIN,), delivery_delay=0.05)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


SAVE_COPY = "      send_mode: send_and_save_copy\n"
"""Exchange keeps a copy in Sent Items, which the probe must delete (not the default)."""


def ews_target(sim: EwsSimulator, auth: str = "ntlm", extra: str = "", top: str = "") -> Target:
    login, password, address = account(sim)
    return parse(
        "targets:\n  - name: t\n    sender: ews\n    receiver: ews\n"
        + top
        + section(sim, address, auth, login, password, extra)
    ).targets[0]


def ews_section(probe_target: Target) -> EwsConfig:
    found = probe_target.ews
    assert found is not None
    return found


def ordinary(sim: EwsSimulator, address: str, count: int) -> None:
    for n in range(count):
        sim.put(
            address,
            build_message(
                sender=f"someone@{DOMAIN}",
                to=address,
                subject=f"ordinary mail {n}",
                date=datetime.now(UTC),
                message_id=f"<ordinary-{n}-{next(_numbers)}@{DOMAIN}>",
                headers=[],
                body="hello",
            ),
        )


def lookalikes(sim: EwsSimulator, address: str, context: ProbeContext, count: int) -> set[str]:
    """Messages whose Message-ID and header carry this exporter's prefix with ids that do not
    verify: found by the search, never deleted. Their subjects."""
    prefix = fixed_ids(context).prefix
    subjects = set()
    for n in range(count):
        forged = f"{prefix}.{n:08x}.{'0' * 16}.{'0' * 24}"
        sim.put(
            address,
            build_message(
                sender=f"someone@{DOMAIN}",
                to=address,
                subject=f"mailbox-exporter probe {forged}",
                date=datetime.now(UTC),
                message_id=f"<{forged}@mailbox-exporter.invalid>",
                headers=[(PROBE_HEADER, forged)],
                body="not a probe",
            ),
        )
        subjects.add(f"mailbox-exporter probe {forged}")
    return subjects


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("auth", ["ntlm", "basic", "oauth2"])
async def test_roundtrip_ews_to_ews_deletes_only_its_probe_and_its_sent_copy(
    ews: EwsSimulator, context: ProbeContext, auth: str
) -> None:
    probe_target = ews_target(ews, auth, extra=SAVE_COPY)
    address = probe_target.mail_to
    ordinary(ews, address, 50)
    forged = lookalikes(ews, address, context, 5)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert {Phase.EWS_AUTH, Phase.EWS_SEND, Phase.DELIVERY, Phase.EWS_FETCH} <= set(result.phases)
    assert result.found.delivery_seconds is not None and result.found.delivery_seconds > 0
    assert result.found.lookalikes == 5
    assert result.found.cleanup_deleted == 2  # the probe, and its copy in Sent Items
    assert sorted(probe_items(ews, address)) == sorted(("inbox", f) for f in forged)
    assert len(ews.items(address, "inbox")) == 55
    assert ews.items(address, "sentitems") == []


async def test_send_only_keeps_no_copy(ews: EwsSimulator, context: ProbeContext) -> None:
    probe_target = ews_target(ews, extra="      send_mode: send_only\n")
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.cleanup_deleted == 1
    assert ews.items(probe_target.mail_to) == []


def _sent_elsewhere(sim: EwsSimulator, context: ProbeContext) -> tuple[EwsConfig, ProbeMessage]:
    """A sending section and a probe to another mailbox (its copy in Sent Items is the
    sender's to delete)."""
    probe_target = ews_target(sim)
    _, _, elsewhere = account(sim)
    probe_id = fixed_ids(context).new(probe_target.name)
    return ews_section(probe_target), roundtrip.compose(
        replace(probe_target, mail_to=elsewhere), probe_id
    )


async def test_the_sent_copy_is_deleted_by_its_exact_message_id_only(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    """A stranger's item in Sent Items whose Message-ID differs from the probe's only in case
    matches the search (the simulator compares strings as the store's collation does) and
    stays; the probe's own copy goes."""
    sending, probe = _sent_elsewhere(ews, context)
    own = dict(probe.headers)["Message-ID"]
    stranger = ews.put(
        sending.username,
        build_message(
            sender=sending.username,
            to=f"someone@{DOMAIN}",
            subject="a stranger's message",
            date=datetime.now(UTC),
            message_id=own.upper(),
            headers=[],
            body="hello",
        ),
        "sentitems",
    )
    trace = Trace(deadline=time.monotonic() + 10)
    await transport.EwsSender(sending, trace, context.tokens).send(probe)
    assert [item.id for item in ews.items(sending.username, "sentitems")] == [stranger.id]
    assert not trace.found.cleanup_failed


async def test_a_probe_without_its_message_id_is_not_sent(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    """Its copy could not be told from any other item: nothing is sent, nothing deleted."""
    sending, probe = _sent_elsewhere(ews, context)
    stranger = ews.put(
        sending.username,
        b"From: someone@exchange.example\r\nSubject: no Message-ID\r\n\r\nhello\r\n",
        "sentitems",
    )
    ews.clear_requests()
    headless = replace(probe, headers=tuple(h for h in probe.headers if h[0] != "Message-ID"))
    trace = Trace(deadline=time.monotonic() + 10)
    with pytest.raises(ValueError, match="Message-ID"):
        await transport.EwsSender(sending, trace, context.tokens).send(headless)
    assert ews.requests == []
    assert [item.id for item in ews.items(sending.username)] == [stranger.id]


async def test_login_check_reads_the_inbox(ews: EwsSimulator, context: ProbeContext) -> None:
    probe_target = ews_target(ews)
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert result.success, result
    assert set(result.phases) == {Phase.EWS_AUTH}
    assert b"GetFolder" in ews.requests[-1].body and b'Id="inbox"' in ews.requests[-1].body


async def test_the_ntlm_handshake_and_the_requests_share_one_connection(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    """NTLM authenticates a connection: the receiver's handshake and all its later requests
    come over the connection that was authenticated, and carry no header after it."""
    probe_target = ews_target(ews, extra="      send_mode: send_only\n")
    ews.clear_requests()
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    sessions: dict[int, list[str]] = {}
    for request in ews.requests:
        if request.path == EWS_PATH:
            sessions.setdefault(request.connection, []).append(
                request.headers.get("authorization", "").partition(" ")[0]
            )
    # the receiver's connection and the sender's: each starts with its handshake
    assert len(sessions) == 2
    for schemes in sessions.values():
        assert schemes[:2] == ["NTLM", "NTLM"]
        assert set(schemes[2:]) <= {""}
    assert max(len(s) for s in sessions.values()) > 3


@pytest.mark.parametrize("strict", [True, False])
async def test_both_readings_of_x_header_promotion(
    ews: EwsSimulator, context: ProbeContext, strict: bool
) -> None:
    """Strict (no x-header is searchable) and loose: the probe is found by its Message-ID,
    so both pass."""
    with ews.reading(strict=strict):
        result = await probes.run(ews_target(ews), Check.ROUNDTRIP, context)
    assert result.success, result


async def test_smtp_through_postfix_to_an_ews_mailbox(
    ews: EwsSimulator, mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    """Postfix relays the probe to the simulator's SMTP listener, as an Exchange Server's
    receive connector takes it; the EWS receiver finds and deletes it."""
    mailstack.route(DOMAIN, ews.smtp_port)
    login, password, address = account(ews)
    probe_target = parse(
        f"targets:\n  - name: t\n    sender: smtp\n    receiver: ews\n    from: {user.address}\n"
        f"    to: {address}\n"
        f"    smtp: {{host: 127.0.0.1, port: {mailstack.smtp_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}'}}\n"
        + section(ews, address, "ntlm", login, password)
    ).targets[0]
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert probe_items(ews, address) == []


async def test_ews_through_postfix_to_an_imap_mailbox(
    ews: EwsSimulator, mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    """The simulator relays the probe to the real Postfix (authenticated, as a send connector
    with a smart host would), Dovecot delivers it, the IMAP receiver deletes it; the sender
    deletes the copy Exchange kept in its Sent Items (the receiver watches another account)."""
    login, password, address = account(ews)
    probe_target = parse(
        f"targets:\n  - name: t\n    sender: ews\n    receiver: imap\n    from: {address}\n"
        f"    to: {user.address}\n"
        f"    imap: {{host: 127.0.0.1, port: {mailstack.imap_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}'}}\n"
        + section(ews, address, "basic", login, password, SAVE_COPY)
    ).targets[0]
    with ews.reading(
        relay=("127.0.0.1", mailstack.smtp_port), relay_auth=(user.address, user.password)
    ):
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
        assert result.success, result
        assert ews.relayed[-1].error is None
        assert probe_items(ews, address) == []  # the sender deleted its Sent Items copy
        assert not result.found.cleanup_failed
        # The copy cannot be looked for: it stays, a cleanup failure, the probe passes.
        ews.fail_operation("FindItem", "ErrorInternalServerTransientError", "Try again.", 1)
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success and result.found.cleanup_failed, result
    assert [f for f, _ in probe_items(ews, address)] == ["sentitems"]


async def test_a_real_bounce_in_the_inbox_fails_the_probe_and_is_deleted(
    ews: EwsSimulator, mailstack: MailStack, user: MailUser, context: ProbeContext
) -> None:
    """The probe goes to a recipient Dovecot does not know: Postfix bounces it to the EWS
    mailbox (routed to the simulator), where it is a report item; the probe fails with the
    bounce's reason and deletes the bounce."""
    mailstack.route(DOMAIN, ews.smtp_port)
    login, password, address = account(ews)
    probe_target = parse(
        f"targets:\n  - name: t\n    sender: ews\n    receiver: ews\n    timeout: 20s\n"
        f"    to: nobody-{next(_numbers)}@{mailstack.domain}\n"
        + section(ews, address, "ntlm", login, password, "      send_mode: send_only\n")
    ).targets[0]
    with ews.reading(
        relay=("127.0.0.1", mailstack.smtp_port), relay_auth=(user.address, user.password)
    ):
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.DELIVERY), result
    assert "5.1.1" in result.detail
    assert result.found.bounces == 1
    assert ews.items(address) == []


async def test_a_report_too_large_to_read_is_skipped(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    """A stranger's report returning a 3.5 MB message (its MIME over MAX_ANSWER once in
    base64) arrived just before: it is skipped and left, and the probe succeeds."""
    probe_target = ews_target(ews, extra="      send_mode: send_only\n")
    address = probe_target.mail_to
    returned = b"x" * (transport.MAX_ANSWER * 5 // 6)
    large = ews.put(
        address,
        b"From: postmaster@exchange.example\r\nSubject: Undeliverable: holiday photos\r\n"
        b"Message-ID: <ndr-large@exchange.example>\r\n\r\n" + returned,
        item_class="REPORT.IPM.Note.NDR",
    )
    with ews.reading(delivery_delay=roundtrip.EXTRA_LOOKS + 0.5):  # reports are looked for
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert [item.id for item in ews.items(address)] == [large.id]


async def test_a_relay_refusal_comes_back_as_exchanges_own_report(
    ews: EwsSimulator, mailstack: MailStack, context: ProbeContext
) -> None:
    """Postfix refuses to relay for an unauthenticated sender (5.7.1 at RCPT): Exchange puts
    its own non-delivery report in the sender's Inbox, which fails the probe and is deleted."""
    login, password, address = account(ews)
    probe_target = parse(
        "targets:\n  - name: t\n    sender: ews\n    receiver: ews\n"
        "    to: someone@elsewhere.example\n"
        + section(ews, address, "ntlm", login, password, "      send_mode: send_only\n")
    ).targets[0]
    with ews.reading(relay=("127.0.0.1", mailstack.smtp_port), relay_auth=None):
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.phase is Phase.DELIVERY and "5.7.1" in result.detail, result
    assert result.reason is Reason.SEND_REJECTED, result
    assert result.found.bounces == 1
    assert ews.items(address) == []


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize("auth", ["ntlm", "basic", "oauth2"])
async def test_a_refused_login_is_auth_rejected(
    ews: EwsSimulator, context: ProbeContext, auth: str
) -> None:
    login, password, address = account(ews)
    text = section(ews, address, auth, login, password + "-wrong")
    if auth == "oauth2":
        text = text.replace("client_secret: ews-Secret", "client_secret: wrong-Secret")
    probe_target = parse("targets:\n  - name: t\n" + text).targets[0]
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.EWS_AUTH), result
    assert result.found.login_refused == ("ews" if auth != "oauth2" else None)


@pytest.mark.parametrize("auth", ["ntlm", "basic"])
async def test_refused_passwords_are_held_back_before_the_account_locks_out(
    ews: EwsSimulator, context: ProbeContext, auth: str
) -> None:
    """Active Directory locks an account out after a run of wrong passwords: after the lock-out
    guard's three refusals in a row no login is tried until its back-off ends."""
    login, _, address = account(ews)
    probe_target = parse(
        "targets:\n  - name: t\n" + section(ews, address, auth, login, "wrong")
    ).targets[0]
    ews.clear_requests()
    results = [await probes.run(probe_target, Check.EWS_LOGIN, context) for _ in range(6)]
    assert all(r.reason is Reason.AUTH_REJECTED for r in results)
    tried = ews.count_requests("POST", EWS_PATH)
    assert tried == 3 * (2 if auth == "ntlm" else 1), tried
    assert results[-1].found.backoff_since is not None


async def test_a_refusal_names_the_schemes_offered_and_no_token(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    login, _, address = account(ews)
    probe_target = parse(
        "targets:\n  - name: t\n" + section(ews, address, "ntlm", login, "wrong")
    ).targets[0]
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert result.detail == (
        "401: credentials refused (schemes offered: Basic, NTLM, Negotiate)"
    ), result.detail


async def test_items_already_gone_are_no_error_and_other_refusals_are(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    """An item deleted between the search and the read or the deletion is skipped; a
    deletion refused otherwise leaves the probe, counted as a failed cleanup."""
    probe_target = ews_target(ews)
    section_ = ews_section(probe_target)
    trace = Trace(deadline=time.monotonic() + 10)
    receiver = transport.EwsReceiver(section_, trace, context.tokens)
    await receiver.open()
    ordinary(ews, probe_target.mail_to, 1)
    kept = ews.items(probe_target.mail_to)[0].id
    try:
        assert set(await receiver.read(["gone", kept])) == {"gone", kept}
        assert await receiver.raw("gone", 100) == b""
        assert await receiver.delete(["gone", kept])
    finally:
        await receiver.close()
    assert ews.items(probe_target.mail_to) == []
    ews.fail_operation("DeleteItem", "ErrorAccessDenied", "Access is denied.", times=1)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success and result.found.cleanup_failed, result
    # the probe stays; its Sent copy, deleted by a later request, is gone
    assert [folder for folder, _ in probe_items(ews, probe_target.mail_to)] == ["inbox"]


async def test_an_expired_token_is_refused_and_forgotten(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews, "oauth2")
    assert (await probes.run(probe_target, Check.EWS_LOGIN, context)).success
    ews.expire_tokens()
    refused = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert (refused.reason, refused.phase) == (Reason.AUTH_REJECTED, Phase.EWS_AUTH)
    assert (await probes.run(probe_target, Check.EWS_LOGIN, context)).success


@pytest.mark.parametrize(
    ("impersonated", "code"),
    [("elsewhere", "ErrorImpersonateUserDenied"), ("unknown", "ErrorNonExistentMailbox")],
)
async def test_impersonation_refusals(
    ews: EwsSimulator, context: ProbeContext, impersonated: str, code: str
) -> None:
    """An app without the ApplicationImpersonation role for the mailbox is refused
    (auth_rejected); a mailbox that does not exist is mailbox_unavailable."""
    _, _, address = account(ews)
    text = section(ews, address, "oauth2")
    other = f"{impersonated}-{next(_numbers)}@{DOMAIN}"
    if impersonated == "elsewhere":
        ews.add_mailbox(other)
    probe_target = parse(
        "targets:\n  - name: t\n" + text.replace(f"mailbox: {address}", f"mailbox: {other}")
    ).targets[0]
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    expected = Reason.AUTH_REJECTED if impersonated == "elsewhere" else Reason.MAILBOX_UNAVAILABLE
    assert (result.reason, result.phase) == (expected, Phase.EWS_AUTH), result
    assert code in result.detail


async def test_a_server_that_is_down_is_connect_refused(context: ProbeContext) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    probe_target = parse(
        "targets:\n  - name: t\n    ews:\n"
        f"      url: http://127.0.0.1:{port}/EWS/Exchange.asmx\n      mailbox: a@{DOMAIN}\n"
        "      username: 'CORP\\a'\n      password: x\n"
    ).targets[0]
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.CONNECT_REFUSED, Phase.EWS_AUTH), result


async def test_a_redirect_is_not_followed_and_names_where_it_points(
    context: ProbeContext,
) -> None:
    """A front end sending EWS to a sign-in page: the POST is not repeated as a GET there;
    the detail names the page, not its query."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.method)
        raise web.HTTPFound(f"http://127.0.0.1:{port}/owa/auth/logon.aspx?url=Query-Text-31")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    await web.SockSite(runner, listening).start()
    try:
        probe_target = parse(
            "targets:\n  - name: t\n    ews:\n"
            f"      url: http://127.0.0.1:{port}/EWS/Exchange.asmx\n      mailbox: a@{DOMAIN}\n"
            "      auth: basic\n      username: 'CORP\\a'\n      password: x\n"
        ).targets[0]
        result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    finally:
        await runner.cleanup()
    assert (result.reason, result.phase) == (Reason.PROTOCOL_ERROR, Phase.EWS_AUTH), result
    assert f"a redirect to http://127.0.0.1:{port}/owa/auth/logon.aspx" in result.detail
    assert "Query-Text-31" not in result.detail
    assert seen == ["POST"]


@PROPERTY
@given(st.text(max_size=400), st.sampled_from(["", "https://", "//", "http://a:"]))
def test_any_location_is_shown_without_account_or_query(location: str, scheme: str) -> None:
    secret = "Loc-Secret-5"
    for value in (scheme + location, f"{scheme}u:{secret}@h{location}?{secret}#{secret}"):
        shown = transport.redirect_target(value)
        assert shown.isprintable() and len(shown) <= transport.MAX_LOCATION
        assert secret not in shown or secret in location


async def test_server_busy_is_throttled_with_its_back_off(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews)
    ews.busy(times=1, back_off_ms=297_749)
    result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.THROTTLED, Phase.EWS_AUTH), result
    assert result.found.retry_after == pytest.approx(297.749)
    assert "ErrorServerBusy" in result.detail


@pytest.mark.parametrize("fault", ["503", "store"])
async def test_an_unavailable_service_or_store_is_unavailable(
    ews: EwsSimulator, context: ProbeContext, fault: str
) -> None:
    probe_target = ews_target(ews)
    if fault == "503":
        ews.unavailable(times=3)
    else:
        ews.set_mailbox_state(probe_target.mail_to, store_unavailable=True)
    try:
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    finally:
        ews.set_mailbox_state(probe_target.mail_to, store_unavailable=False)
        ews.clear_faults()
    assert (result.reason, result.phase) == (Reason.UNAVAILABLE, Phase.EWS_AUTH), result


async def test_a_503_asking_to_wait_is_heard(ews: EwsSimulator, context: ProbeContext) -> None:
    """IIS or a load balancer answering 503 with Retry-After while Exchange is down."""
    probe_target = ews_target(ews)
    ews.fail(EWS_PATH, 503, "", headers={"Retry-After": "120"})
    try:
        result = await probes.run(probe_target, Check.EWS_LOGIN, context)
    finally:
        ews.clear_faults()
    assert (result.reason, result.phase) == (Reason.UNAVAILABLE, Phase.EWS_AUTH), result
    assert result.found.retry_after == 120


async def test_a_refused_sending_is_classified_in_the_send_phase(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews)
    ews.fail_operation("CreateItem", "ErrorQuotaExceeded", "The mailbox is full.", times=1)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.EWS_SEND), result
    ews.fail_operation("CreateItem", "ErrorMessageSizeExceeded", "Too big.", times=1)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.SEND_REJECTED, Phase.EWS_SEND), result


async def test_never_delivered_then_a_late_arrival_is_counted_and_deleted(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews, extra="      send_mode: send_only\n")
    ews.set_mailbox_state(probe_target.mail_to, deferred=True)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=2)
    assert (result.reason, result.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY), result
    ews.set_mailbox_state(probe_target.mail_to, deferred=False)
    for _ in range(100):
        if len(probe_items(ews, probe_target.mail_to)) == 1:
            break
        await asyncio.sleep(0.02)
    late = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert late.success, late
    assert late.found.late_arrivals == 1 and late.found.cleanup_deleted == 2
    assert ews.items(probe_target.mail_to) == []


async def test_junk_is_junk_and_cleaned(ews: EwsSimulator, context: ProbeContext) -> None:
    probe_target = ews_target(ews)
    ews.file_into_junk(probe_target.mail_to)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.JUNK, Phase.DELIVERY), result
    assert result.found.junk
    assert ews.items(probe_target.mail_to, "junkemail") == []


async def test_a_hanging_server_is_a_timeout_in_its_phase(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews)
    ews.hang(EWS_PATH)
    try:
        result = await probes.run(probe_target, Check.EWS_LOGIN, context, time_limit=1.0)
    finally:
        ews.clear_faults()
    assert (result.reason, result.phase) == (Reason.TIMEOUT, Phase.EWS_AUTH), result


@pytest.mark.services
async def test_100_round_trips_leave_no_probe_behind(
    ews: EwsSimulator, context: ProbeContext
) -> None:
    probe_target = ews_target(ews)
    address = probe_target.mail_to
    ordinary(ews, address, 50)
    lookalikes(ews, address, context, 3)
    for _ in range(100):
        result = await probes.run(probe_target, Check.ROUNDTRIP, context)
        assert result.success, result
        assert result.found.requests <= 14, result.found.requests
    assert len(probe_items(ews, address)) == 3
    assert len(ews.items(address)) == 53


async def test_no_secret_on_any_surface(
    ews: EwsSimulator, context: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    """Passwords, Basic credentials, NTLM messages and bearer tokens appear in no detail,
    transcript, /probe output, metric or log line, whether the probe succeeds or fails."""
    caplog.set_level(logging.DEBUG)
    targets = [ews_target(ews, auth) for auth in ("ntlm", "basic", "oauth2")]
    results = []
    for probe_target in targets:
        for check in (Check.ROUNDTRIP, Check.EWS_LOGIN):
            results.append(await probes.run(probe_target, check, context, transcript=True))
    ews.expire_tokens()
    for probe_target in targets:
        ews.fail_operation(
            "GetFolder", "ErrorAccessDenied", "echo " + " ".join(probe_target.secrets()), 1
        )
        results.append(await probes.run(probe_target, Check.EWS_LOGIN, context, transcript=True))
    assert [r.success for r in results] == [True] * 6 + [False] * 3
    shown = "\n".join(
        [repr(r) + ondemand.report(r) + metrics.render_result(r) for r in results]
        + [record.getMessage() + str(record.__dict__) for record in caplog.records]
        + [repr(t) for t in targets]
    )
    sent = [r.headers.get("authorization", "").partition(" ")[2] for r in ews.requests]
    secrets = {*(s for t in targets for s in t.secrets()), *(s for s in sent if s)}
    assert len(sent) > 10
    for secret in secrets:
        assert secret not in shown, f"a secret leaked: {secret[:8]}..."


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("      auth: kerberos\n", "expected one of ntlm, basic, oauth2"),
        ("      send_mode: later\n", "expected one of send_and_save_copy, send_only"),
        ("      oauth2: {tenant: t, client_id: c, client_secret: s}\n", "only used with auth"),
    ],
)
def test_ews_settings_refused(lines: str, message: str) -> None:
    text = (
        "targets:\n  - name: t\n    ews:\n      url: https://mail.example.com/EWS/Exchange.asmx\n"
        f"      mailbox: a@{DOMAIN}\n      username: 'CORP\\a'\n      password: x\n" + lines
    )
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_basic_needs_https_and_oauth2_takes_no_password() -> None:
    base = "targets:\n  - name: t\n    ews:\n      mailbox: a@example.com\n"
    with pytest.raises(ConfigError, match="use an https url"):
        parse(
            base + "      url: http://mail.example.com/EWS/Exchange.asmx\n      auth: basic\n"
            "      username: a\n      password: x\n"
        )
    with pytest.raises(ConfigError, match="takes no username or password"):
        parse(
            base + "      url: https://mail.example.com/EWS/Exchange.asmx\n      auth: oauth2\n"
            "      password: x\n      oauth2: {tenant: t, client_id: c, client_secret: s}\n"
        )


def test_a_url_naming_an_account_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError, match="use username and password") as refused:
        parse(
            "targets:\n  - name: t\n    ews:\n      mailbox: a@example.com\n"
            "      url: https://CORP%5Ca:Url-Secret-77@mail.example.com/EWS/Exchange.asmx?x=1\n"
            "      username: a\n      password: x\n"
        )
    assert "Url-Secret-77" not in str(refused.value)


def test_oauth2_scope_defaults_to_the_servers_origin() -> None:
    probe_target = parse(
        "targets:\n  - name: t\n    ews:\n      mailbox: a@example.com\n      auth: oauth2\n"
        "      url: https://mail.example.com/EWS/Exchange.asmx\n"
        "      oauth2: {tenant: t1, client_id: c, client_secret: s}\n"
    ).targets[0]
    oauth2 = ews_section(probe_target).oauth2
    assert oauth2 is not None
    assert oauth2.scope == "https://mail.example.com/.default"
    assert oauth2.token_url == "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    assert probe_target.checks == (Check.ROUNDTRIP, Check.EWS_LOGIN)


# ------------------------------------------------------------------ parsers (hypothesis)

_names = st.sampled_from(
    [
        "Envelope",
        "Body",
        "Fault",
        "ResponseMessages",
        "GetItemResponseMessage",
        "Items",
        "Message",
        "ItemId",
        "InternetMessageHeaders",
        "InternetMessageHeader",
        "MimeContent",
        "ResponseCode",
        "MessageText",
        "TotalCount",
        "detail",
        "faultcode",
        "Value",
        "MessageXml",
    ]
)
_attributes = st.dictionaries(
    st.sampled_from(["Id", "ResponseClass", "HeaderName", "Name"]),
    st.sampled_from(["Success", "Error", "Warning", "x", "", "BackOffMilliseconds", "1e400"]),
    max_size=3,
)


def _element(depth: int) -> st.SearchStrategy[str]:
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20).map(
        lambda t: t.replace("&", "&amp;").replace("<", "&lt;")
    )
    children = st.lists(_element(depth - 1), max_size=3) if depth else st.just([])
    return st.builds(
        lambda name, attrs, body, kids: (
            f"<s:{name}{''.join(f' {k}={v!r}' for k, v in attrs.items())}>"
            f"{body}{''.join(kids)}</s:{name}>"
        ),
        _names,
        _attributes,
        text,
        children,
    )


_answers = st.one_of(
    st.binary(max_size=300),
    _element(4).map(
        lambda inner: (
            f'<s:Envelope xmlns:s="{transport.SOAP}"><s:Body>{inner}</s:Body></s:Envelope>'
        ).encode()
    ),
    _element(4).map(lambda inner: f'<s:x xmlns:s="{transport.TYPES}">{inner}</s:x>'.encode()),
)


@PROPERTY
@given(_answers)
def test_any_answer_is_read_or_malformed(raw: bytes) -> None:
    try:
        answer = transport.parse(raw)
    except transport.Malformed as exc:
        assert len(str(exc)) < 200
        return
    assert isinstance(answer, transport.Answer | transport.Fault)
    if isinstance(answer, transport.Fault) and answer.back_off is not None:
        assert 0 <= answer.back_off <= 3600
    for message in answer.messages if isinstance(answer, transport.Answer) else ():
        for item in message.items:
            assert isinstance(item.envelope().probe_id, str)


def test_a_deeply_nested_answer_is_read_within_its_bound() -> None:
    """Nesting is no recursion here: an answer nested 200,000 deep is read."""
    depth = 200_000
    raw = (
        (
            f'<s:Envelope xmlns:s="{transport.SOAP}"><s:Body><R><ResponseMessages>'
            '<M ResponseClass="Success"><Items><Message><ItemId Id="a"/><Subject>'
        ).encode()
        + b"<a>" * depth
        + b"x"
        + b"</a>" * depth
        + (b"</Subject></Message></Items></M></ResponseMessages></R></s:Body></s:Envelope>")
    )
    answer = transport.parse(raw)
    assert isinstance(answer, transport.Answer)
    assert answer.messages[0].items[0].subject == ""  # a value's own text, not its subtree's
    long_tag = (
        f'<s:Envelope xmlns:s="{transport.SOAP}"><s:Body><{"R" * 5000}/></s:Body></s:Envelope>'
    )
    with pytest.raises(transport.Malformed) as refused:
        transport.parse(long_tag.encode())
    assert len(str(refused.value)) < 100


def test_nested_items_are_read_in_linear_time() -> None:
    """Items nested in each other's subjects, 20,000 deep (1.4 MB, within MAX_ANSWER): each
    value is read once, not once for every element above it."""
    depth = 20_000
    level = b'<Items><Message><ItemId Id="a"/><Subject>'
    raw = (
        f'<s:Envelope xmlns:s="{transport.SOAP}"><s:Body><R><ResponseMessages>'
        '<M ResponseClass="Success">'
    ).encode()
    raw += level * depth + b"x" + b"</Subject></Message></Items>" * depth
    raw += b"</M></ResponseMessages></R></s:Body></s:Envelope>"
    assert len(raw) < transport.MAX_ANSWER
    started = time.perf_counter()
    answer = transport.parse(raw)
    assert time.perf_counter() - started < 2.0
    assert isinstance(answer, transport.Answer) and len(answer.messages[0].items) == depth


def test_entities_are_never_expanded() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&b;'
        b"</s:Body></s:Envelope>"
    )
    with pytest.raises(transport.Malformed):
        transport.parse(bomb)
    external = (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><s>&x;</s>'
    )
    with pytest.raises(transport.Malformed):
        transport.parse(external)


def test_a_published_server_busy_fault_is_read() -> None:
    """The fault as Exchange sent it (mguessan/davmail#161)."""
    raw = (
        b'<?xml version="1.0" encoding="utf-8"?><s:Envelope '
        b'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        b'<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">'
        b"a:ErrorServerBusy</faultcode>"
        b'<faultstring xml:lang="en-US">The server cannot service this request right now. '
        b"Try again later.</faultstring><detail>"
        b'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        b"ErrorServerBusy</e:ResponseCode>"
        b'<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        b"The server cannot service this request right now. Try again later.</e:Message>"
        b'<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
        b'<t:Value Name="BackOffMilliseconds">178510</t:Value></t:MessageXml>'
        b"</detail></s:Fault></s:Body></s:Envelope>"
    )
    fault = transport.parse(raw)
    assert isinstance(fault, transport.Fault)
    assert (fault.code, fault.back_off) == ("ErrorServerBusy", 178.51)


_headers = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.tuples(
            st.sampled_from(["NTLM", "Negotiate", "Basic", "Bearer", "ntlm", "", "N T"]),
            st.one_of(
                st.text(max_size=40),
                st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
            ),
        ),
        max_size=4,
    ).map(lambda parts: ", ".join(f"{scheme} {token}" for scheme, token in parts)),
)


@PROPERTY
@given(_headers)
def test_any_www_authenticate_header_is_read_or_ignored(header: str) -> None:
    found = transport.ntlm_challenge(header)
    assert found is None or isinstance(found, bytes)
    offered = transport.schemes(header)
    assert all(s.isalpha() and len(s) <= transport.MAX_SCHEME for s in offered)


@PROPERTY
@given(st.binary(max_size=600))
def test_any_certificate_bytes_give_bindings(der: bytes) -> None:
    """The server's certificate is outside input too: whatever its bytes, bindings result
    (a SHA-256 of what cannot be read)."""
    data = transport.tls_bindings(der).application_data
    assert data is not None and data.startswith(b"tls-server-end-point:")


_challenge_bytes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(lambda b: b"NTLMSSP\x00\x02\x00\x00\x00" + b),
)


@PROPERTY
@given(_challenge_bytes)
def test_any_ntlm_challenge_is_answered_or_a_protocol_error(challenge: bytes) -> None:
    """pyspnego reads the server's CHALLENGE: whatever it makes of hostile bytes ends in an
    answer or a protocol_error whose detail names no secret."""
    context = spnego.client("CORP\\probe", "Pw-Secret-1", hostname="h", protocol="ntlm")
    context.step()
    try:
        answer = transport.answer_challenge(context, challenge)
    except ProbeFailure as failure:
        assert failure.reason is Reason.PROTOCOL_ERROR
        assert "Pw-Secret-1" not in failure.detail and len(failure.detail) < 200
        return
    assert answer is None or isinstance(answer, bytes)


async def test_polling_backs_off_as_imap_does_without_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(round(seconds, 3))

    monkeypatch.setattr(http.asyncio, "sleep", sleep)
    poller = transport.Poller(0.3, transport.FIRST_POLL)
    deadline = time.monotonic() + 60
    for _ in range(6):
        await poller.wait(deadline)
    assert pauses == [0.0, 0.025, 0.05, 0.1, 0.2, 0.3]


def test_a_probes_item_is_named_by_its_header_else_its_message_id() -> None:
    header = transport.Item("i", headers=((PROBE_HEADER, " abc.1 "),), message_id="<x@y>")
    assert header.probe_id() == "abc.1"
    copy = transport.Item("i", message_id="<abc.2@mailbox-exporter.invalid>")
    assert copy.probe_id() == "abc.2"
    assert transport.Item("i", message_id="<abc.3@elsewhere>").probe_id() == ""


def test_requests_quote_what_they_carry() -> None:
    body = transport.envelope(
        transport.find_items(
            "inbox", datetime.now(UTC) - timedelta(days=1), transport.message_id_contains('<"&')
        ),
        "a&b@example.com",
    )
    root = fromstring(body)
    constants = [e.get("Value") for e in root.iter() if e.tag.endswith("}Constant")]
    assert constants[-1] == '<"&'
    smtp = [e.text for e in root.iter() if e.tag.endswith("}PrimarySmtpAddress")]
    assert smtp == ["a&b@example.com"]
    with pytest.raises(ValueError):
        transport.find_items("calendar", datetime.now(UTC), "")


# ------------------------------------------------------------------ HTTPS, Extended Protection


@pytest.fixture(scope="module")
def ews_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EwsSimulator, Path]]:
    """The simulator over HTTPS with Extended Protection: NTLM must be bound to its
    certificate. Yields it and the CA file that verifies it."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(context)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    ca_file = tmp_path_factory.mktemp("ews-tls") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    sim = EwsSimulator(
        domains=(DOMAIN,),
        delivery_delay=0.05,
        tls=context,
        certificate=leaf.public_bytes(serialization.Encoding.DER),
        extended_protection=True,
    )
    sim.start_in_thread()
    try:
        yield sim, ca_file
    finally:
        sim.stop()


@pytest.mark.parametrize("auth", ["ntlm", "basic"])
async def test_ntlm_over_https_is_bound_to_the_servers_certificate(
    ews_tls: tuple[EwsSimulator, Path], context: ProbeContext, auth: str
) -> None:
    """With Extended Protection (on by default from Exchange Server 2019 CU14) an NTLM
    AUTHENTICATE must carry the server certificate's hash: the round trip passes, and the TLS
    session is reported."""
    sim, ca_file = ews_tls
    assert sim.ews_url.startswith("https://")
    probe_target = ews_target(sim, auth, extra=f"      tls_config: {{ca_file: {ca_file}}}\n")
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert "ews" in result.found.tls


def test_channel_bindings_follow_rfc_5929() -> None:
    """tls-server-end-point: the certificate's hash by its signature's algorithm (SHA-256 for a
    SHA-256 signed one, SHA-384 and SHA-512 likewise; cryptography signs nothing with MD5 or
    SHA-1 any more, whose certificates take SHA-256)."""
    for signing in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        der = _certificate(signing)
        digest = hashes.Hash(type(signing)())
        digest.update(der)
        bindings = transport.tls_bindings(der)
        assert bindings.application_data == b"tls-server-end-point:" + digest.finalize()
    assert transport.tls_bindings(b"not a certificate").application_data is not None


def _certificate(signing: hashes.HashAlgorithm) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ews")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, signing)
    )
    return certificate.public_bytes(serialization.Encoding.DER)

"""The POP3 receiver and pop3_login against a real Postfix and Dovecot (plain, STLS, implicit
TLS): round trips, refusals with their reasons, cleanup only of verified probes, bounces; and
property tests of what the client reads from a server."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import classify, config, message, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, ProbeFailure, Reason
from exporter.probes.context import ProbeContext
from exporter.trace import Trace
from exporter.transports import pop3
from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailUser, TlsFiles, _free_ports
from testing.targets import fixed_ids, probe_files

pytestmark = pytest.mark.services  # a stack of its own, with TLS
_users = itertools.count(1)
SETTINGS = settings(derandomize=True, max_examples=300, deadline=None)
LONG_INPUT_SECONDS = 2.0
"""Generous for a shared machine: a quadratic pattern takes seconds on 100 kB."""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pop3ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def stack(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    leaf = ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_after=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=40),
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    files = TlsFiles.write(tmp_path_factory.mktemp("pop3tls"), chain, leaf.private_key_pem.bytes())
    with MailStack(tmp_path_factory.mktemp("pop3stack"), tls=files) as mail:
        yield mail


@pytest.fixture
def mailbox(stack: MailStack) -> MailUser:
    return stack.add_user(f"pop{next(_users)}", "pw-pop3-" + str(next(_users)))


def _target(
    stack: MailStack,
    user: MailUser,
    ca_file: Path,
    tls: str = "none",
    *,
    password: str | None = None,
    port: int | None = None,
    timeout: str = "10s",
    extra: str = "",
) -> Target:
    pop3_port = port or (stack.pop3s_port if tls == "implicit" else stack.pop3_port)
    return config.parse(
        "targets:\n"
        "  - name: pop\n"
        f"    interval: {timeout}\n"
        f"    timeout: {timeout}\n"
        f"    smtp: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}'}}\n"
        f"    pop3: {{host: 127.0.0.1, port: {pop3_port}, tls: {tls}, "
        f"username: {user.address}, password: '{password or user.password}', "
        f"tls_config: {{ca_file: {ca_file}}}}}\n" + extra
    ).targets[0]


def _ordinary(index: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "someone@example.org"
    mail["Subject"] = f"ordinary {index}"
    mail.set_content(f"an ordinary message, {index}")
    return mail.as_bytes()


def _files(stack: MailStack, user: MailUser) -> dict[str, bytes]:
    return {path.name.split(":")[0]: path.read_bytes() for path in stack.message_files(user)}


# --- configuration --------------------------------------------------------------------------


def test_the_section_defaults_to_implicit_tls_and_receives(tmp_path: Path) -> None:
    target = config.parse(
        "targets:\n  - name: p\n"
        "    smtp: {host: h, username: u@example.org, password: p}\n"
        "    pop3: {host: h, username: u@example.org, password: p}\n"
    ).targets[0]
    assert target.receiver == "pop3" and target.pop3 is not None
    assert (target.pop3.port, target.pop3.tls, target.pop3.poll_interval) == (995, "implicit", 2.0)
    assert target.checks == (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.POP3_LOGIN)


def test_a_mistyped_key_of_the_section_is_named_with_its_line() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(
            "targets:\n  - name: p\n    pop3:\n      host: h\n      username: u\n"
            "      password: p\n      pol_interval: 1s\n"
        )
    assert str(caught.value).startswith(
        "line 7: targets[0].pop3.pol_interval: unknown key (did you mean 'poll_interval'?)"
    )


# --- round trips against Dovecot -----------------------------------------------------------


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
async def test_a_round_trip_over_pop3_finds_and_deletes_its_probe(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext, tls: str
) -> None:
    for index in range(5):
        stack.put_message(mailbox, _ordinary(index))
    before = _files(stack, mailbox)
    result = await probes.run(_target(stack, mailbox, ca_file, tls), Check.ROUNDTRIP, context)
    assert result.success, result
    assert {Phase.POP3_CONNECT, Phase.POP3_AUTH, Phase.POP3_LIST, Phase.POP3_FETCH} <= set(
        result.phases
    )
    assert Phase.POP3_CLEANUP in result.phases and Phase.DELIVERY in result.phases
    assert (Phase.POP3_TLS in result.phases) == (tls != "none")
    assert ("pop3" in result.found.tls) == (tls != "none")
    assert result.delivery_seconds is not None and 0 <= result.delivery_seconds < 5
    assert result.found.cleanup_deleted == 1 and not result.found.cleanup_failed
    assert probe_files(stack, mailbox) == []
    assert _files(stack, mailbox) == before


async def test_pop3_login_succeeds_and_a_refused_one_is_auth_rejected_without_the_password(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    good = _target(stack, mailbox, ca_file, "starttls")
    result = await probes.run(good, Check.POP3_LOGIN, context, transcript=True)
    assert result.success, result
    assert set(result.phases) == {
        Phase.POP3_CONNECT,
        Phase.POP3_TLS,
        Phase.POP3_AUTH,
        Phase.POP3_LIST,
    }
    wrong = "not-the-Password-42"
    bad = _target(stack, mailbox, ca_file, "none", password=wrong)
    result = await probes.run(bad, Check.POP3_LOGIN, context, transcript=True)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.POP3_AUTH), result
    assert result.detail == "-ERR [AUTH] Authentication failed."
    shown = "\n".join((result.detail, *result.transcript))
    assert "PASS <redacted>" in shown
    assert wrong not in shown and mailbox.password not in shown


async def test_a_password_with_a_line_break_is_never_sent(
    stack: MailStack, mailbox: MailUser, context: ProbeContext, tmp_path: Path
) -> None:
    (tmp_path / "password").write_bytes(b"pw\r\nDELE 1\n")
    target = config.parse(
        "targets:\n  - name: p\n    checks: [pop3_login]\n"
        f"    pop3: {{host: 127.0.0.1, port: {stack.pop3_port}, tls: none, "
        f"username: {mailbox.address}, password_file: password}}\n",
        base_dir=tmp_path,
    ).targets[0]
    result = await probes.run(target, Check.POP3_LOGIN, context, transcript=True)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.POP3_AUTH), result
    assert result.detail == "the password has a line break or NUL, which PASS cannot carry"
    assert not any("C: PASS" in line or "C: DELE" in line for line in result.transcript)


async def test_a_server_that_is_down_is_connect_refused(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    [closed] = _free_ports(1)
    target = _target(stack, mailbox, ca_file, "none", port=closed)
    for check in (Check.POP3_LOGIN, Check.ROUNDTRIP):
        result = await probes.run(target, check, context)
        assert (result.reason, result.phase) == (Reason.CONNECT_REFUSED, Phase.POP3_CONNECT)


async def test_a_message_never_delivered_is_not_delivered(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    elsewhere = stack.add_user(f"other{next(_users)}", "pw-other-1")
    target = _target(stack, mailbox, ca_file, timeout="3s", extra=f"    to: {elsewhere.address}\n")
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY), result
    assert result.duration >= 2.5, "polled until the probe gave up"


async def test_a_hundred_round_trips_leave_no_probe_and_touch_no_other_message(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    target = _target(stack, mailbox, ca_file)
    for index in range(50):
        stack.put_message(mailbox, _ordinary(index))
    ids = fixed_ids(context)
    forged = EmailMessage()
    forged[message.PROBE_HEADER] = f"{ids.prefix}.0123456789abcdef.{'0' * 24}"
    forged["Subject"] = "mailbox-exporter probe forged"
    forged.set_content("forged")
    stack.put_message(mailbox, forged.as_bytes())
    other = EmailMessage()
    other[message.PROBE_HEADER] = ids.new("another-target")
    other["Subject"] = "mailbox-exporter probe of another target"
    other.set_content("another target's")
    stack.put_message(mailbox, other.as_bytes())
    before = _files(stack, mailbox)

    results = [await probes.run(target, Check.ROUNDTRIP, context) for _ in range(100)]

    assert [r for r in results if not r.success] == []
    assert sum(r.found.cleanup_deleted for r in results) == 100
    assert all(r.found.lookalikes == 2 for r in results)
    await asyncio.sleep(0.2)
    assert _files(stack, mailbox) == before, "ordinary mail and lookalikes untouched"


async def test_a_session_that_ends_before_quit_deletes_nothing_and_the_next_round_trip_cleans(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    target = _target(stack, mailbox, ca_file)
    earlier = fixed_ids(context).new(target.name)
    stack.put_message(
        mailbox,
        message.build(
            target=target.name, mail_from=target.mail_from, mail_to=target.mail_to, probe_id=earlier
        ),
    )
    assert target.pop3 is not None
    trace = Trace(deadline=asyncio.get_running_loop().time() + 10)
    receiver = pop3.Pop3Receiver(target.pop3, trace, context.tokens)
    await receiver.open()
    [ref] = await receiver.find(fixed_ids(context).prefix + ".")
    session = receiver.session
    assert session is not None
    await session.command(f"DELE {receiver._numbers[ref]}", "message")
    stack.stop_dovecot()  # the session ends before QUIT
    try:
        with pytest.raises(ProbeFailure) as caught:
            await receiver.delete([ref])
        # Dovecot says "-ERR [SYS/TEMP] Server shutting down." as it goes.
        assert caught.value.reason in (Reason.UNAVAILABLE, Reason.NETWORK), caught.value
        receiver.abort()
        assert len(probe_files(stack, mailbox)) == 1, "a DELE without QUIT deletes nothing"
    finally:
        stack.start_dovecot()

    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.late_arrivals == 1 and result.found.cleanup_deleted == 2
    assert probe_files(stack, mailbox) == []


async def test_a_bounce_fails_the_probe_with_its_reason_and_is_deleted(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    stack.put_message(mailbox, _ordinary(1))
    target = _target(
        stack,
        mailbox,
        ca_file,
        timeout="20s",
        extra=f"    to: nobody-{mailbox.name}@{stack.domain}\n",
    )
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.DELIVERY), result
    assert result.detail.startswith("bounced:") and "5.1.1" in result.detail
    assert result.found.bounces == 1
    assert list(_files(stack, mailbox).values()) == [_ordinary(1)], "only ordinary mail left"


async def test_xoauth2_logins_and_a_refused_token(
    oauth_mailstack: MailStack, idp: IdentityProvider, context: ProbeContext
) -> None:
    user = oauth_mailstack.add_user(f"popoauth{next(_users)}", "unused-password-1")
    idp.add_client(f"app-{user.name}", "client-secret-pop3", user.address)
    oauth2 = (
        f"{{token_url: '{idp.token_url}', scope: mail, grant: client_credentials, "
        f"client_id: app-{user.name}, client_secret: client-secret-pop3}}"
    )
    target = config.parse(
        "targets:\n  - name: popoauth\n    checks: [roundtrip, pop3_login]\n"
        f"    smtp: {{host: 127.0.0.1, port: {oauth_mailstack.smtp_port}, tls: none, "
        f"username: {user.address}, oauth2: {oauth2}}}\n"
        f"    pop3: {{host: 127.0.0.1, port: {oauth_mailstack.pop3_port}, tls: none, "
        f"username: {user.address}, oauth2: {oauth2}}}\n"
    ).targets[0]
    results = [await probes.run(target, check, context, transcript=True) for check in target.checks]
    assert [r for r in results if not r.success] == []
    assert any("AUTH XOAUTH2" in line for r in results for line in r.transcript)
    assert probe_files(oauth_mailstack, user) == []
    idp.revoke_all()
    refused = await probes.run(target, Check.POP3_LOGIN, context, transcript=True)
    assert (refused.reason, refused.phase) == (Reason.AUTH_REJECTED, Phase.POP3_AUTH), refused
    shown = "\n".join(line for r in (*results, refused) for line in (*r.transcript, r.detail))
    for secret in (*idp.issued_tokens(), "client-secret-pop3"):
        assert secret not in shown
    assert (await probes.run(target, Check.POP3_LOGIN, context)).success, "a new token is fetched"


# --- what the client reads ------------------------------------------------------------------

LINES = st.binary(max_size=120) | st.sampled_from(
    [b"+OK", b"+OK ready\r\n", b"-ERR", b"-ERR [AUTH] no\r\n", b"+ok x", b"+OKAY", b"-ERRx"]
)


@SETTINGS
@given(LINES)
def test_any_status_line_is_read_or_refused_cleanly(line: bytes) -> None:
    try:
        ok, text = pop3.status(line)
    except ProbeFailure as failure:
        assert failure.reason is Reason.PROTOCOL_ERROR
        return
    assert line[:1] in b"+-" and ok == line.startswith(b"+")
    assert "\r" not in text and "\n" not in text


UIDL_LINES = st.lists(
    st.builds(
        lambda n, uid: n + b" " + uid,
        st.sampled_from([b"1", b"2", b"3", b"0", b"99999999999", b"x"]),
        st.binary(min_size=0, max_size=80) | st.sampled_from([b"00000001abc", b"u2"]),
    )
    | st.binary(max_size=40),
    max_size=6,
)


@SETTINGS
@given(UIDL_LINES)
def test_any_uidl_listing_is_read_or_refused_cleanly(lines: list[bytes]) -> None:
    try:
        listing = pop3.uid_listing(lines)
    except ProbeFailure as failure:
        assert failure.reason is Reason.PROTOCOL_ERROR and "malformed" in failure.detail
        return
    assert len(listing) == len(lines) == len(set(listing.values()))
    for uid, number in listing.items():
        assert 0 < number <= pop3.MAX_MESSAGES and 0 < len(uid) <= pop3.MAX_UID
        assert all(0x21 <= ord(ch) <= 0x7E for ch in uid)


ANSWERS = st.lists(
    st.sampled_from([b"Subject: x\r\n", b"..dot\r\n", b".\r\n", b"\r\n", b"x" * 300 + b"\r\n"])
    | st.binary(max_size=50),
    max_size=12,
)


async def _answer(chunks: list[bytes], limit: int, strict: bool) -> list[bytes]:
    reader = asyncio.StreamReader(limit=200)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return await asyncio.wait_for(pop3.read_answer(reader, limit, strict=strict), 5)


@SETTINGS
@given(ANSWERS, st.integers(0, 400), st.booleans())
def test_any_multi_line_answer_is_read_within_bounds_or_refused_cleanly(
    chunks: list[bytes], limit: int, strict: bool
) -> None:
    """TOP, UIDL and RETR answers: what a server sends ends in lines kept within the limit, or
    a broken answer, a line too long or a closed connection; never another exception."""
    try:
        lines = asyncio.run(_answer(chunks, limit, strict))
    except ProbeFailure as failure:
        assert failure.reason in (Reason.PROTOCOL_ERROR, Reason.NETWORK), failure
        return
    assert sum(len(line) for line in lines) <= limit
    assert all(line.endswith(b"\n") and line.rstrip(b"\r\n") != b"." for line in lines)
    assert b".\r\n" in b"".join(chunks) or b".\n" in b"".join(chunks)


async def test_a_header_answer_is_unstuffed_and_ends_at_the_dot() -> None:
    lines = await _answer([b"Subject: a\r\n..x\r\n", b".\r\nleft over"], 100, True)
    assert lines == [b"Subject: a\r\n", b".x\r\n"]


def test_a_uidl_listing_reads_numbers_by_unique_id() -> None:
    assert pop3.uid_listing([b"1 000000017a1b\r\n", b"2 u2\r\n"]) == {"000000017a1b": 1, "u2": 2}
    for broken in ([b"1 a", b"1 b"], [b"1 a", b"2 a"], [b"0 a"], [b"1 a b"], [b"1 " + b"x" * 71]):
        with pytest.raises(ProbeFailure):
            pop3.uid_listing(broken)


@SETTINGS
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_any_capa_answer_and_byte_stuffed_line_is_read(lines: list[bytes]) -> None:
    found = pop3.capabilities(lines)
    assert all(word == word.upper() for word in found)
    for line in lines:
        assert pop3.unstuff(line) in (line, line[1:])
        assert pop3.unstuff(b"." + line).startswith(b".") or not line.startswith(b".")


def test_a_sasl_continuation_is_not_an_ok() -> None:
    assert pop3.continuation(b"+ \r\n") and pop3.continuation(b"+\r\n")
    assert pop3.continuation(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
    assert not pop3.continuation(b"+OK Logged in.\r\n") and not pop3.continuation(b"-ERR x")


def test_capabilities_name_each_sasl_mechanism() -> None:
    found = pop3.capabilities([b"TOP\r\n", b"UIDL\r\n", b"STLS\r\n", b"SASL PLAIN XOAUTH2\r\n"])
    assert {"TOP", "UIDL", "STLS", "SASL XOAUTH2", "SASL PLAIN"} <= found


@SETTINGS
@given(
    st.text(max_size=200) | st.sampled_from(["[AUTH] x", "[SYS/TEMP] y", "[IN-USE] z"]),
    st.sampled_from(["greeting", "tls", "auth", "mailbox", "message"]),
)
def test_any_pop3_reply_has_a_reason(text: str, stage: classify.Pop3Stage) -> None:
    assert isinstance(classify.pop3_reply(text, stage), Reason)


@pytest.mark.parametrize(
    ("text", "stage", "reason"),
    [
        ("[AUTH] Authentication failed.", "auth", Reason.AUTH_REJECTED),
        ("[SYS/TEMP] Temporary authentication failure. [h:2026]", "auth", Reason.AUTH_TEMPORARY),
        ("[SYS/TEMP] Internal error occurred.", "mailbox", Reason.UNAVAILABLE),
        ("[SYS/PERM] Unable to open maildrop", "auth", Reason.MAILBOX_UNAVAILABLE),
        ("[IN-USE] Unable to lock maildrop", "auth", Reason.MAILBOX_UNAVAILABLE),
        ("[LOGIN-DELAY] Logins must be at least 5 minutes apart", "auth", Reason.THROTTLED),
        (
            "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            "auth",
            Reason.TLS,
        ),
        ("Logon failure: unknown user name or bad password.", "auth", Reason.AUTH_REJECTED),
        ("There's no message 3.", "message", Reason.PROTOCOL_ERROR),
        ("Server busy", "greeting", Reason.THROTTLED),
    ],
)
def test_pop3_replies(text: str, stage: classify.Pop3Stage, reason: Reason) -> None:
    assert classify.pop3_reply(text, stage) is reason


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "stls " * 20_000, "[AUTH] " + "a " * 50_000, "plaintext auth" * 7_000],
)
def test_long_pop3_replies_are_read_in_bounded_time(text: str) -> None:
    started = time.perf_counter()
    for stage in ("greeting", "tls", "auth", "mailbox", "message"):
        assert classify.pop3_reply(text, stage) in set(Reason)
    assert time.perf_counter() - started < LONG_INPUT_SECONDS


def test_the_demo_can_watch_over_pop3(tmp_path: Path) -> None:
    from scripts import demo

    (tmp_path / "password").write_text("pw")
    assert "pop3" in demo.RECEIVERS
    text = demo.CONFIG.format(
        interval="30s",
        timeout="10s",
        initial="1m",
        maximum="2m",
        target="demo",
        smtp=2525,
        watch="pop3",
        watch_port=2110,
        address="demo@example.test",
    )
    [target] = config.parse(text, base_dir=tmp_path).targets
    assert target.receiver == "pop3" and target.section("pop3").port == 2110
    assert Check.POP3_LOGIN in target.checks


async def test_a_delivery_slower_than_the_look_for_reports_is_still_seen(
    stack: MailStack, mailbox: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    """The round trip also looks for reports and junk every few seconds, waiting on the
    receiver only until then: the polls go on past that look, so mail delivered 4.5 s late is
    seen (it used to stop polling about 3.6 s after sending, and fail as not delivered)."""
    target = _target(stack, mailbox, ca_file, timeout="12s")
    stack.defer_delivery()
    try:
        running = asyncio.create_task(probes.run(target, Check.ROUNDTRIP, context))
        await asyncio.sleep(4.5)
        await asyncio.to_thread(stack.resume_delivery)
        result = await running
    finally:
        stack.resume_delivery()
    assert result.success, result
    assert result.delivery_seconds is not None and result.delivery_seconds >= 4.0

"""The scale benchmark's scripted servers (bench/fastservers.py): a round trip through them
succeeds (so that ``bench.scale --servers fast`` measures round trips too), and they read any
input to an answer, never to an exception or an echo of a password."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import date
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import fastservers
from bench.fastservers import Bad, ImapConnection, Mail, SmtpConnection
from exporter import config, probes
from exporter.outcome import Check
from testing.targets import probe_context

TODAY: Final = date(2026, 12, 6)
BOUNDED: Final = settings(derandomize=True, max_examples=150, deadline=None)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Mail, int, int]]:
    """Both servers in this event loop, on ports the system chooses."""
    mail = Mail()
    smtp, imap = await fastservers.start(mail, 0, 0)
    smtp_port = smtp.sockets[0].getsockname()[1]
    imap_port = imap.sockets[0].getsockname()[1]
    async with smtp, imap:
        yield mail, smtp_port, imap_port


def target(smtp_port: int, imap_port: int, imap_extra: str = "") -> config.Target:
    return config.parse(
        "targets:\n"
        "  - name: fast\n"
        "    timeout: 5s\n"
        f"    smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none, "
        "username: u1@x.test, password: p}\n"
        f"    imap: {{host: 127.0.0.1, port: {imap_port}, tls: none, "
        f"username: u1@x.test, password: p{imap_extra}}}\n"
    ).targets[0]


@pytest.mark.parametrize("imap_extra", ["", ", idle: true", ", idle: false"])
async def test_a_round_trip_through_them_succeeds(
    servers: tuple[Mail, int, int], imap_extra: str
) -> None:
    """The probe is delivered to the recipient's mailbox, found (polling, or announced in
    IDLE), read, and deleted: nothing is left behind, twice in a row."""
    mail, smtp_port, imap_port = servers
    context = probe_context()
    for _ in range(2):
        result = await probes.run(
            target(smtp_port, imap_port, imap_extra), Check.ROUNDTRIP, context
        )
        assert result.success, (result.reason, result.detail)
        assert result.delivery_seconds is not None
        assert result.found.cleanup_deleted == 1
        assert not result.found.cleanup_failed
        assert mail.box("U1@x.test").messages == []
        assert mail.box("u1@x.test").uidnext == 2 + _


async def test_login_checks_still_pass(servers: tuple[Mail, int, int]) -> None:
    _, smtp_port, imap_port = servers
    context = probe_context()
    for check in (Check.SMTP_LOGIN, Check.IMAP_LOGIN):
        result = await probes.run(target(smtp_port, imap_port), check, context)
        assert result.success, (check, result.reason, result.detail)


def delivered(mail: Mail, header: bytes = b"X-Probe: abc.1") -> None:
    session = SmtpConnection(mail, lambda: TODAY)
    for line in (
        b"EHLO me\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<u@x.test>\r\n",
        b"DATA\r\n",
        header + b"\r\n",
        b"Subject: hi\r\n",
        b"\r\n",
        b"..a line that starts with a dot\r\n",
        b".\r\n",
    ):
        reply, _ = session.handle(line)
    assert reply == b"250 2.0.0 Ok: queued\r\n"


def imap_session(mail: Mail, pushed: list[bytes]) -> ImapConnection:
    session = ImapConnection(mail, pushed.append)
    for line in (b'a LOGIN u@x.test "p"\r\n', b"b SELECT INBOX\r\n"):
        assert session.handle(line)[0].split(b"\r\n")[-2].split()[1] == b"OK"
    return session


def test_delivery_unstuffs_dots_and_search_reads_headers() -> None:
    mail = Mail()
    delivered(mail)
    [message] = mail.box("u@x.test").messages
    assert message.raw.endswith(b"\r\n.a line that starts with a dot\r\n")
    session = imap_session(mail, [])
    answer, _ = session.handle(b'c UID SEARCH SINCE 4-Dec-2026 HEADER x-probe "ABC."\r\n')
    assert answer == b"* SEARCH 1\r\nc OK SEARCH completed\r\n"
    answer, _ = session.handle(b'd UID SEARCH UID 1:* NOT HEADER X-Probe "" TEXT "abc"\r\n')
    assert answer == b"* SEARCH\r\nd OK SEARCH completed\r\n"
    answer, _ = session.handle(b"e UID SEARCH SINCE 7-Dec-2026\r\n")
    assert answer == b"* SEARCH\r\ne OK SEARCH completed\r\n"


def test_idle_announces_a_delivery_at_once() -> None:
    mail = Mail()
    pushed: list[bytes] = []
    session = imap_session(mail, pushed)
    assert session.handle(b"c IDLE\r\n") == (b"+ idling\r\n", False)
    delivered(mail)
    assert pushed == [b"* 1 EXISTS\r\n"]
    assert session.handle(b"DONE\r\n") == (b"c OK Idle completed\r\n", False)
    delivered(mail)
    assert pushed == [b"* 1 EXISTS\r\n"]  # no longer idling
    assert session.handle(b"d NOOP\r\n")[0] == b"* 2 EXISTS\r\nd OK NOOP completed\r\n"


def test_a_full_mailbox_refuses_mail() -> None:
    mail = Mail()
    for _ in range(fastservers.MAX_MAILBOX):
        delivered(mail)
    session = SmtpConnection(mail, lambda: TODAY)
    for line in (b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<u@x.test>\r\n", b"DATA\r\n", b"x\r\n"):
        session.handle(line)
    assert session.handle(b".\r\n")[0].startswith(b"452 ")


# --- any input: an answer, never an exception or a password ---------------------------------

LINES: Final = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [
                b"UID",
                b"SEARCH",
                b"FETCH",
                b"STORE",
                b"EXPUNGE",
                b"NOT",
                b"HEADER",
                b"TEXT",
                b"SINCE",
                b"ALL",
                b"1:*",
                b"*",
                b"0",
                b"4294967296",
                b"3,5:7",
                b'"x"',
                b'"',
                b"(UID BODY.PEEK[HEADER.FIELDS (X-Probe)])",
                b"(UID BODY.PEEK[]<0.10>)",
                b"+FLAGS.SILENT",
                b"(\\Deleted)",
                b"1-Jan-2026",
                b"31-Feb-2026",
                b"IDLE",
                b"DONE",
                b"SELECT",
                b"INBOX",
                b"LOGIN",
                b"LOGOUT",
                b"STATUS",
                b"(UIDNEXT)",
                b"NOOP",
                b"LIST",
                b"a",
            ]
        ),
        max_size=12,
    ).map(lambda words: b" ".join([b"x", *words])),
).map(lambda line: line + b"\r\n")


@BOUNDED
@given(st.lists(LINES, max_size=15), st.text(min_size=6, max_size=20))
def test_imap_answers_any_line(lines: list[bytes], password: str) -> None:
    """Each line gets an answer of whole lines (a tagged status unless in IDLE), and the
    password given at LOGIN is never in an answer."""
    mail = Mail()
    delivered(mail)
    pushed: list[bytes] = []
    session = ImapConnection(mail, pushed.append)
    secret = password.encode()
    quoted = b'"' + secret.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    for line in [b"t LOGIN u@x.test " + quoted + b"\r\n", b"s SELECT INBOX\r\n", *lines]:
        answer, _ = session.handle(line)
        assert answer.endswith(b"\r\n") or (answer == b"" and session.idling)
        assert secret not in answer
    session.close()
    assert not mail.box("u@x.test").watchers


@BOUNDED
@given(st.lists(st.one_of(st.binary(max_size=120), LINES), max_size=20))
def test_smtp_answers_any_line(lines: list[bytes]) -> None:
    """Each line gets a reply with a code, or none inside DATA; the mailbox stays bounded."""
    mail = Mail()
    session = SmtpConnection(mail, lambda: TODAY)
    for line in [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<u@x.test>\r\n", *lines]:
        reply, _ = session.handle(line)
        assert (reply[:3].isdigit() and reply.endswith(b"\r\n")) or (
            reply == b"" and session.data is not None
        )
    assert all(len(box.messages) <= fastservers.MAX_MAILBOX for box in mail.boxes.values())


@BOUNDED
@given(st.lists(st.binary(max_size=12), max_size=10), st.integers(0, 2**32))
def test_search_criteria_parse_or_fail_cleanly(criteria: list[bytes], last: int) -> None:
    """Any words: criteria, or Bad (never another exception, nor a hang on many NOTs)."""
    with contextlib.suppress(Bad):
        fastservers.parse_search(criteria, last)


def test_many_nots_do_not_recurse() -> None:
    [(negated, _)] = fastservers.parse_search([b"NOT"] * 100_001 + [b"ALL"], 0)
    assert negated

"""What servers send, as the receiver and the sender read it, for any bytes at all: every
reader of an IMAP answer, the protocol fed arbitrary chunks while LOGIN is pending, and the
classification of IMAP and SMTP refusals end in a result or a clean ``ProbeFailure``, never
another exception or a hang, and never with the credential in the text."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import aiosmtplib
import pytest
from aioimaplib import aioimaplib as imaplib
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import classify, config
from exporter.config import ImapConfig
from exporter.outcome import DETAIL_LIMIT, ProbeFailure, Reason
from exporter.transports import Envelope, imap, smtp

PROPERTY = settings(derandomize=True, max_examples=200, deadline=None)
FRAGMENTS = [
    b" ",
    b"\r\n",
    b"*",
    b"* ",
    b"(",
    b")",
    b'"',
    b"\\",
    b"{",
    b"}",
    b"{5}",
    b"{0}",
    b"{99999999999}",
    b"SEARCH",
    b"FETCH",
    b"LIST",
    b"STATUS",
    b"EXISTS",
    b"CAPABILITY",
    b"IMAP4rev1",
    b"UID",
    b"UIDNEXT",
    b"[UIDNEXT ",
    b"[COPYUID 1 ",
    b"1:3",
    b"7",
    b"4294967295",
    b"4294967296",
    b"9" * 40,
    b"\\Junk",
    b"\\Sent",
    b"\\Trash",
    b"NIL",
    b"BODY[HEADER]",
    b"OK",
    b"NO",
    b"BAD",
    b"BYE",
    b"+ ",
    b"\xff\xfe",
    "ü".encode(),
]
"""Pieces of IMAP that readers look for, to be put together in any order."""

raw = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=30).map(b"".join)
line = raw.map(lambda b: b.replace(b"\r\n", b""))
lines = st.lists(line | line.map(bytearray), min_size=1, max_size=20)
"""A response as aioimaplib hands it over: lines (bytes) and literals (bytearray), the tagged
status text last."""


def _clean(failure: ProbeFailure) -> None:
    assert failure.reason in Reason
    assert len(failure.detail) <= DETAIL_LIMIT


READERS: list[tuple[str, Callable[[Sequence[imap.Line]], Any]]] = [
    ("search", imap.search_uids),
    ("fetch", imap.fetch_literals),
    ("list", imap.listed_mailboxes),
    ("select", imap.select_uidnext),
    ("status", imap.status_uidnext),
    ("copyuid", lambda response: imap.copied_uids(response, 50)),
    ("capability", imap.capabilities),
]


@pytest.mark.parametrize(("name", "reader"), READERS, ids=[name for name, _ in READERS])
@given(response=lines)
@PROPERTY
def test_every_reader_gives_a_result_or_a_clean_failure(
    name: str, reader: Callable[[Sequence[imap.Line]], Any], response: list[imap.Line]
) -> None:
    try:
        result = reader(response)
    except ProbeFailure as failure:
        _clean(failure)
        return
    if name == "search":
        assert all(0 <= uid <= imap.UID_LIMIT for uid in result)
    if name == "fetch":
        assert all(isinstance(v, bytes) for v in result.values())
    if name == "list":
        folders = imap.special_folders_in(result, imap.SPECIAL_USES)
        assert set(folders) <= set(imap.SPECIAL_USES)
    if name == "copyuid":
        assert len(result) <= 50


@given(uids=st.sets(st.integers(1, imap.UID_LIMIT) | st.integers(1, 60), max_size=40))
@PROPERTY
def test_a_uid_set_reads_back_as_the_same_uids(uids: set[int]) -> None:
    text = imap.uid_set(uids).encode()
    if not uids:
        assert text == b""
        return
    copied = imap.copied_uids([b"OK [COPYUID 9 " + text + b" " + text + b"] moved"], len(uids))
    assert copied == {uid: uid for uid in uids}


@given(block=raw, field=st.sampled_from(["X-Mailbox-Probe-Id", "Subject", "X"]))
@PROPERTY
def test_header_lines_read_as_text(block: bytes, field: str) -> None:
    assert isinstance(imap.header_value(block, field), str)
    envelope = imap.envelope(block)
    assert isinstance(envelope, Envelope)
    assert all(isinstance(v, str) for v in (envelope.probe_id, envelope.subject))


@given(now=st.floats(0, 2**34, allow_nan=False))
@PROPERTY
def test_since_is_an_imap_date(now: float) -> None:
    assert re.fullmatch(r"SINCE \d{1,2}-[A-Z][a-z]{2}-\d{4}", imap.since(now))


@given(
    result=st.sampled_from(["NO", "BAD", "BYE", "OK", "no", ""]) | st.text(max_size=5),
    before=st.text(max_size=200),
    after=st.text(max_size=200),
    stage=st.sampled_from(["greeting", "tls", "auth", "select", "mailbox"]),
)
@PROPERTY
def test_any_imap_refusal_is_classified_without_the_password(
    result: str, before: str, after: str, stage: Any
) -> None:
    """A tagged answer of any kind and text, echoing the LOGIN argument: one reason, as the
    classifier gives it for what is shown, and the password in no form."""

    async def run() -> ProbeFailure | None:
        session = imap.ImapSession(_server())
        session._proto = imap._Protocol(asyncio.get_running_loop())
        session._proto.secrets = (SECRET, *session.secret_forms(None))
        text = f"{before}{imap.quote(SECRET)}{after}".encode()
        try:
            session._check(imaplib.Response(result, [text]), stage)
        except ProbeFailure as failure:
            return failure
        return None

    failure = asyncio.run(run())
    if result == "OK":
        assert failure is None
        return
    assert failure is not None
    _clean(failure)
    shown = failure.detail.removeprefix(result).strip()
    assert failure.reason == classify.imap_reply(result, shown, stage)
    assert SECRET not in failure.detail and imap.quote(SECRET)[1:-1] not in failure.detail


@given(
    code=st.integers(-1000, 1000),
    before=st.text(max_size=300),
    stage=st.sampled_from(["greeting", "tls", "auth", "send"]),
    token=st.booleans(),
)
@PROPERTY
def test_any_smtp_reply_is_classified_without_the_secret(
    code: int, before: str, stage: Any, token: bool
) -> None:
    """A reply of any code and text that echoes AUTH's argument: one reason, as the classifier
    gives it, a detail of bounded length, and the credential in no form."""
    session = smtp.SmtpSession(_server())
    forms = session.secret_forms(SECRET if token else None)
    secrets = (SECRET, *forms)
    reply = aiosmtplib.SMTPResponseException(code, f"{before} AUTH PLAIN {forms[0]}")
    failure = smtp.failure(smtp._scrubbed(reply, secrets), stage)
    _clean(failure)
    if code >= 200:
        shown = smtp._scrubbed(reply, secrets)
        assert isinstance(shown, aiosmtplib.SMTPResponseException)
        assert failure.reason == classify.smtp_reply(code, shown.message, stage)
    assert not [form for form in secrets if form in failure.detail]


SECRET = 'pa"ss\\wörd-42'
LIBRARY_ERRORS: list[Callable[[str], BaseException]] = [
    aiosmtplib.SMTPException,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPNotSupported,
    aiosmtplib.SMTPConnectError,
    lambda text: aiosmtplib.SMTPResponseException(-1, text),
    ValueError,
    RuntimeError,
    OSError,
    ConnectionResetError,
]


@given(
    make=st.sampled_from(LIBRARY_ERRORS),
    before=st.text(max_size=20),
    stage=st.sampled_from(["greeting", "tls", "auth", "send"]),
)
@PROPERTY
def test_smtp_library_text_never_reaches_a_detail(
    make: Callable[[str], BaseException], before: str, stage: Any
) -> None:
    """Whatever a library's own error says (here: a command with the password in it), the
    detail is built without it."""
    failure = smtp.failure(make(f"{before}AUTH PLAIN {SECRET}"), stage)
    _clean(failure)
    assert SECRET not in failure.detail


IMAP_LIBRARY_ERRORS: list[Callable[[str], BaseException]] = [
    imaplib.Abort,
    imaplib.Error,
    ValueError,
    RuntimeError,
    RecursionError,
    UnicodeError,
]


def _server(password: str = SECRET) -> ImapConfig:
    section = (
        config.parse(
            "targets:\n  - name: t\n"
            "    imap: {host: 127.0.0.1, port: 1, tls: none, username: u@x.example, "
            f"password: {_yaml(password)}}}\n"
        )
        .targets[0]
        .imap
    )
    assert isinstance(section, ImapConfig)
    return section


def _yaml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(make=st.sampled_from(IMAP_LIBRARY_ERRORS), before=st.text(max_size=30))
@PROPERTY
def test_imap_library_text_never_reaches_a_detail(
    make: Callable[[str], BaseException], before: str
) -> None:
    async def run() -> ProbeFailure:
        session = imap.ImapSession(_server())
        session._proto = imap._Protocol(asyncio.get_running_loop())

        async def step() -> None:
            raise make(f"{before}(A1 LOGIN u@x.example {imap.quote(SECRET)})")

        try:
            await session._call(step(), "auth", "LOGIN")
        except ProbeFailure as failure:
            return failure
        raise AssertionError("no failure")

    failure = asyncio.run(run())
    _clean(failure)
    assert failure.detail.startswith("LOGIN failed in the IMAP client")
    assert SECRET not in failure.detail and imap.quote(SECRET)[1:-1] not in failure.detail


class _Transport(asyncio.Transport):
    """Keeps what the client writes: the test plays the server."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        pass


async def _logging_in(password: str) -> tuple[imap._Protocol, _Transport, Any, bytes]:
    """A protocol greeted and waiting for its LOGIN's answer: what it sent, and the task."""
    proto = imap._Protocol(asyncio.get_running_loop())
    transport = _Transport()
    proto.connection_made(transport)
    proto.data_received(b"* OK ready\r\n")
    while not proto.pending_async_commands:
        await asyncio.sleep(0)
    tag = f"{proto.tagpre}{proto.tagnum - 1}".encode()
    proto.data_received(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
    await asyncio.wait_for(proto.greeted.wait(), 5)
    session = imap.ImapSession(_server(password))
    proto.secrets = (password, *session.secret_forms(None))
    login = asyncio.ensure_future(proto.login("u@x.example", password))
    while proto.pending_sync_command is None:
        await asyncio.sleep(0)
    return proto, transport, login, transport.written[-1]


password = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from('"\\ü'),
    min_size=8,
    max_size=20,
)


@given(password=password, script=st.lists(raw | st.sampled_from([b"ECHO", b"TAG"]), max_size=12))
@PROPERTY
def test_any_answer_to_login_is_read_without_showing_the_password(
    password: str, script: list[bytes]
) -> None:
    """Arbitrary chunks while LOGIN is pending, among them the LOGIN line echoed and stray or
    right tags: reading them never raises, never recurses, and what is shown of them (the
    broken session's detail, the answer's text) has the password in no form."""

    async def run() -> None:
        proto, _, login, sent = await _logging_in(password)
        tag = sent.split(b" ", 1)[0]
        for chunk in script:
            proto.data_received(
                {b"ECHO": b"* BAD " + sent, b"TAG": tag + b" NO [ALERT] "}.get(chunk, chunk)
            )
        proto.data_received(b"\r\n" + tag + b" BAD " + sent)
        for _ in range(3):
            await asyncio.sleep(0)
        shown = [proto.broken or ""]
        if login.done() and not login.cancelled() and login.exception() is None:
            shown.append(imap._last(login.result(), proto.secrets))
        else:
            login.cancel()
        forms = [password, imap.quote(password)[1:-1]]
        for text in shown:
            assert len(text) <= DETAIL_LIMIT + 40
            assert not [form for form in forms if form in text], (text, forms)

    asyncio.run(run())

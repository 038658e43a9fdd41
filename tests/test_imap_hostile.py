"""Large and hostile accounts over IMAP: thousands of folders or labels, thousands of messages
that carry the probe header, tens of thousands of response lines at once. aioimaplib reads a
chunk of responses by calling itself once per line; the probe must neither fail on that nor
ask for more than it needs."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import config, probes
from exporter.config import ImapConfig
from exporter.message import PROBE_HEADER
from exporter.outcome import Check
from exporter.probes.context import ProbeContext
from exporter.trace import Trace
from exporter.transports import imap
from exporter.transports.oauth import TokenCache
from testing import fakeserver
from testing.mailstack import MailStack, MailUser
from testing.targets import fixed_ids, make_target

LINES = 20_000
"""Response lines sent at once by the scripted server (LIST), and as many again (FETCH)."""
MESSAGES = 7_000
"""Messages the scripted server finds and fetches: three lines each."""
FOLDERS = 5_000
LOOKALIKES = 5_000
RECENT_EVERY = 7
"""Every seventh lookalike arrived within the search window; the others long before it."""
DAY = 86_400.0
MEMORY = Path("/dev/shm")


def _list_line(index: int) -> bytes:
    if index == LINES // 2:
        return b'* LIST (\\HasNoChildren \\Sent) "/" "Sent Items"\r\n'
    if index == LINES - 1:
        return b'* LIST (\\HasNoChildren) "/" "Junk E-mail"\r\n'
    return b'* LIST (\\HasNoChildren) "/" "label %05d"\r\n' % index


def _fetch_lines(uids: list[int]) -> bytes:
    out = bytearray()
    for uid in uids:
        header = b"%s: lookalike.%d\r\n\r\n" % (PROBE_HEADER.encode(), uid)
        out += b"* %d FETCH (UID %d BODY[HEADER.FIELDS (X)] {%d}\r\n" % (uid, uid, len(header))
        out += header + b")\r\n"
    return bytes(out)


def _uids(text: bytes) -> list[int]:
    uids: list[int] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        uids.extend(range(int(low), int(high or low) + 1))
    return uids


async def large_account(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An account with :data:`LINES` folders and :data:`MESSAGES` probe lookalikes; each answer
    is written at once. It offers neither SPECIAL-USE nor LIST-EXTENDED, so the probe lists
    the top level, as it does with such a server."""
    capabilities = b"IMAP4rev1 UIDPLUS IDLE"
    writer.write(b"* OK [CAPABILITY " + capabilities + b"] large account ready\r\n")
    while line := await reader.readline():
        tag, _, rest = line.strip().partition(b" ")
        words = rest.split(b" ")
        command = words[0].upper()
        if command == b"UID":
            command = b"UID " + words[1].upper()
        answer = b""
        if command == b"CAPABILITY":
            answer = b"* CAPABILITY " + capabilities + b"\r\n"
        elif command == b"LIST":
            answer = b"".join(_list_line(index) for index in range(LINES))
        elif command == b"SELECT":
            answer = b"* %d EXISTS\r\n* OK [UIDNEXT %d] next\r\n" % (MESSAGES, MESSAGES + 1)
        elif command == b"UID SEARCH":
            answer = b"* SEARCH " + b" ".join(b"%d" % uid for uid in range(1, MESSAGES + 1))
            answer += b"\r\n"
        elif command == b"UID FETCH":
            answer = _fetch_lines(_uids(words[2]))
        writer.write(answer + tag + b" OK done\r\n")
        await writer.drain()


def _imap_section(port: int, timeout: str = "30s") -> ImapConfig:
    section = (
        config.parse(
            "targets:\n  - name: large\n"
            f"    timeout: {timeout}\n"
            f"    imap: {{host: 127.0.0.1, port: {port}, tls: none, username: u@x.example, "
            "password: pw-large}\n"
        )
        .targets[0]
        .imap
    )
    assert isinstance(section, ImapConfig)
    return section


async def test_tens_of_thousands_of_lines_at_once() -> None:
    """20,000 LIST lines and a FETCH of 7,000 messages (21,000 lines), each written at once:
    read whole, in seconds, by the receiver as the round trip uses it."""
    async with fakeserver.serve(large_account) as port:
        trace = Trace(deadline=time.monotonic() + 30, record_transcript=True)
        receiver = imap.ImapReceiver(_imap_section(port), trace, TokenCache())
        started = time.monotonic()
        try:
            await receiver.open()
            found = await receiver.find("lookalike.")
            envelopes = await receiver.read(found)
            await receiver.close()
        finally:
            receiver.abort()
        elapsed = time.monotonic() - started
    assert receiver._folders == {"Sent": "Sent Items", "Junk": "Junk E-mail"}
    assert len(found) == MESSAGES
    assert len(envelopes) == MESSAGES
    assert envelopes["4711"].probe_id == "lookalike.4711"
    assert elapsed < 10, f"{elapsed:.1f}s for {LINES + 3 * MESSAGES} lines"
    assert any('LIST "" "%"' in line for line in trace.transcript), trace.transcript


def test_twenty_thousand_lines_in_one_read() -> None:
    """The protocol handed 20,000 response lines in one call, as one read from a socket may
    bring them: every line reaches its command, none is lost, nothing recurses."""

    async def feed() -> None:
        loop = asyncio.get_running_loop()
        proto = imap._Protocol(loop)
        proto.connection_made(_Transport())
        proto.data_received(b"* OK ready\r\n")
        while not proto.pending_async_commands:  # the greeting's CAPABILITY
            await asyncio.sleep(0)
        proto.data_received(b"* CAPABILITY IMAP4rev1\r\n" + _tag(proto) + b" OK done\r\n")
        await asyncio.wait_for(proto.greeted.wait(), 5)
        proto.state = "AUTH"
        listing = asyncio.ensure_future(proto.simple_command("LIST", '""', '"%"'))
        while not proto.pending_async_commands:
            await asyncio.sleep(0)
        lines = b"".join(b'* LIST () "/" f%d\r\n' % n for n in range(LINES))
        proto.data_received(lines + _tag(proto) + b" OK done\r\n")
        response = await asyncio.wait_for(listing, 5)
        assert proto.broken is None
        names = [mailbox.name for mailbox in imap.listed_mailboxes(response.lines)]
        assert names == [f"f{n}" for n in range(LINES)]

    asyncio.run(feed())


def _tag(proto: imap._Protocol) -> bytes:
    """The tag of the command the client sent last."""
    return f"{proto.tagpre}{proto.tagnum - 1}".encode()


class _Transport(asyncio.Transport):
    """Takes what the client writes and drops it: the test plays the server."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture(scope="module")
def folder_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """A stack whose Dovecot marks Junk, Sent and Trash with their special use (SPECIAL-USE),
    as Gmail and most hosted servers do. It lives in memory where the machine has a tmpfs:
    Dovecot adds five files or folders to each of the 5,000 folders, and on a disk making and
    removing them takes far longer than the round trip."""
    root = (
        Path(tempfile.mkdtemp(prefix="crowded-", dir=MEMORY))
        if MEMORY.is_dir()
        else tmp_path_factory.mktemp("crowded")
    )
    try:
        with MailStack(root, folders=True) as stack:
            yield stack
    finally:
        if root.is_relative_to(MEMORY):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def crowded(folder_stack: MailStack, context: ProbeContext) -> Iterator[tuple[MailUser, int]]:
    """An account with :data:`FOLDERS` folders besides Junk, Sent and Trash, and an Inbox of
    :data:`LOOKALIKES` messages that carry this exporter's probe prefix with ids that do not
    verify, most of them weeks old; yields the user and how many arrived within the search
    window."""
    user = folder_stack.add_user("crowded", "pw-crowded-1")
    prefix = fixed_ids(context).prefix
    folder_stack.add_folders(user, [f"project-{n:04d}" for n in range(FOLDERS)])
    now = time.time()
    recent = 0
    for n in range(LOOKALIKES):
        if n % RECENT_EVERY == 0:
            received = now - (n % 6) * DAY - 60
            recent += 1
        else:
            received = now - (12 + n % 48) * DAY
        made = f"{int(received):08x}"
        probe_id = f"{prefix}.{made}.{secrets.token_hex(8)}.{'0' * 24}"
        folder_stack.put_message(
            user,
            (
                f"From: someone@elsewhere.example\r\nTo: {user.address}\r\n"
                f"Subject: lookalike {n}\r\nMessage-ID: <look-{n}@elsewhere.example>\r\n"
                f"{PROBE_HEADER}: {probe_id}\r\n\r\nnot a probe of this exporter\r\n"
            ).encode(),
            received=received,
        )
    yield user, recent


async def test_round_trip_in_a_crowded_account(
    folder_stack: MailStack, context: ProbeContext, crowded: tuple[MailUser, int]
) -> None:
    """5,000 folders and 5,000 lookalikes in the Inbox: the round trip succeeds, lists only
    the folders with a special use, and looks only at the lookalikes of the last days."""
    user, recent = crowded
    target = make_target(folder_stack, user, timeout="40s", interval="60s")
    result = await probes.run(target, Check.ROUNDTRIP, context, transcript=True)
    assert result.success, (result.reason, result.detail, result.transcript[-20:])
    assert result.found.lookalikes == recent
    assert result.found.cleanup_deleted >= 1
    listed = [line.split("C: ", 1)[1] for line in result.transcript if "C: LIST" in line]
    assert listed == ['LIST (SPECIAL-USE) "" "*"'], listed
    searches = [
        line
        for line in result.transcript
        if "C: UID SEARCH" in line and "NOT HEADER" not in line  # bounce reports: by UID
    ]
    assert searches and all(" SINCE " in line for line in searches), searches


async def test_usual_names_are_listed_by_name(mailstack: MailStack, user: MailUser) -> None:
    """A server that marks no special use but offers LIST-EXTENDED (Dovecot without
    ``special_use``): the usual names are asked for by name, not every folder listed."""
    mailstack.add_folders(user, ["Junk E-mail", "Sent Items", "Projects", "Spam-archive"])
    server = make_target(mailstack, user).imap
    assert isinstance(server, ImapConfig)
    said: list[str] = []
    async with imap.ImapSession(server, said.append) as session:
        await session.open()
        await session.greet()
        await session.login()
        assert not session.has("SPECIAL-USE") and session.has("LIST-EXTENDED")
        folders = await session.special_folders()
        await session.logout()
    assert folders == {"Junk": "Junk E-mail", "Sent": "Sent Items"}
    [listed] = [line for line in said if line.startswith("C: LIST")]
    names = " ".join(
        imap.quote(name) for use in imap.SPECIAL_USES for name in imap.USUAL_NAMES[use]
    )
    assert listed == f'C: LIST "" ({names})'

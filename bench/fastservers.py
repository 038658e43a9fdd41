"""Scripted SMTP and IMAP servers that accept every login at once and deliver in memory.

    python -m bench.fastservers SMTP_PORT IMAP_PORT

A real Postfix and Dovecot on two shared cores saturate long before ten thousand targets'
probes: these answer each command at once, so that what is measured is the exporter. They
listen on 127.0.0.1 only and run in a process of their own, so that their CPU is not the
exporter's.

Every login succeeds. The SMTP server takes a message (MAIL, RCPT, DATA) and puts it, before
it answers 250, into the in-memory mailbox of each recipient (by address, lower case); the
IMAP server shows the mailbox of the address that logged in as its only folder, ``INBOX``,
with what the exporter's round trip uses of IMAP: SELECT, LIST, NOOP, UID SEARCH (``UID``,
``SINCE``, ``HEADER``, ``TEXT``, ``NOT``, ``ALL``), UID FETCH of header fields or of a
message's first octets, UID STORE of ``\\Deleted``, UID EXPUNGE (UIDPLUS), STATUS, and IDLE,
which announces a delivery at once. Anything else is refused (``BAD``, ``500``), so that a
change in what the exporter sends shows up as failed probes rather than as a silent pass.

Each connection's protocol is a class with a ``handle(line)`` that returns the reply, apart
from the socket, so that it can be tested line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final

MAX_LINE: Final = 64 * 1024
"""Longest command or message line read; a longer one ends the connection."""
MAX_MESSAGE: Final = 1024 * 1024
"""Largest message taken (the probe message is about a kilobyte); a larger one gets 552."""
MAX_RECIPIENTS: Final = 100
MAX_MAILBOX: Final = 1000
"""Messages a mailbox holds at most; a delivery beyond it is refused with 452, so a run whose
probes never clean up cannot fill the memory."""
UID_LIMIT: Final = 2**32 - 1
SILENCE: Final = 30.0
"""A client silent this long is hung up on (outside IDLE)."""
IDLE_SILENCE: Final = 30 * 60.0
"""A client in IDLE may stay silent this long (RFC 3501's inactivity timer)."""
WRITE_WAIT: Final = 30.0
"""Longest wait for a client to take what was written to it."""

SMTP_GREETING: Final = b"220 fast.test ESMTP\r\n"
SMTP_EHLO: Final = b"250-fast.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
CAPABILITIES: Final = b"IMAP4rev1 AUTH=PLAIN IDLE UIDPLUS"
IMAP_GREETING: Final = b"* OK [CAPABILITY " + CAPABILITIES + b"] fast.test ready\r\n"
INBOX: Final = b"INBOX"
_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_PATH = re.compile(rb"^(?:MAIL FROM|RCPT TO):\s*<([\x21-\x3b\x3d\x3f-\x7e]*)>", re.IGNORECASE)
_HEADER_FIELDS = re.compile(
    rb"^\(UID BODY\.PEEK\[HEADER\.FIELDS \(([\x21-\x27\x2a-\x7e ]+)\)\]\)$", re.IGNORECASE
)
_PARTIAL = re.compile(rb"^\(UID BODY\.PEEK\[\]<0\.(\d{1,9})>\)$", re.IGNORECASE)
_WORD = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"|([^\s()"]+)|(\S)')


class Bad(ValueError):
    """A command this server cannot read: answered with BAD (IMAP) or 501 (SMTP)."""


# ------------------------------------------------------------------ the mail


@dataclass
class Message:
    """A delivered message: its UID in its mailbox, its text, the day it arrived (UTC)."""

    uid: int
    raw: bytes
    arrived: date
    deleted: bool = False
    fields: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    """Header fields: (lower-case name, unfolded value, the field's lines as written)."""

    def __post_init__(self) -> None:
        head = self.raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and self.fields:
                name, value, lines = self.fields[-1]
                self.fields[-1] = (name, value + b" " + line.strip(), lines + line + b"\r\n")
            elif b":" in line:
                name, _, value = line.partition(b":")
                self.fields.append((name.strip().lower(), value.strip(), line + b"\r\n"))

    def has_header(self, name: bytes, value: bytes) -> bool:
        """RFC 3501 ``HEADER``: a field of that name containing ``value`` (any case); an empty
        value matches every message that has the field."""
        name, value = name.lower(), value.lower()
        return any(n == name and value in v.lower() for n, v, _ in self.fields)

    def header_fields(self, names: list[bytes]) -> bytes:
        """``BODY[HEADER.FIELDS (names)]``: those fields as written, and the blank line."""
        wanted = {name.lower() for name in names}
        return b"".join(lines for n, _, lines in self.fields if n in wanted) + b"\r\n"


class Mailbox:
    """One address's messages, in order of arrival, and the IDLE sessions watching it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.uidnext = 1
        self.watchers: set[Callable[[int], None]] = set()

    def deliver(self, raw: bytes, today: date) -> bool:
        """Add a message and tell the watchers; False when the mailbox is full."""
        if len(self.messages) >= MAX_MAILBOX or self.uidnext > UID_LIMIT:
            return False
        self.messages.append(Message(self.uidnext, raw, today))
        self.uidnext += 1
        for watcher in list(self.watchers):
            watcher(len(self.messages))
        return True

    def expunge(self, uids: UidSet | None) -> list[int]:
        """Remove the deleted messages (of ``uids``, if given); their sequence numbers, highest
        first, so that each EXPUNGE response stays valid as the ones before it are read."""
        gone = [
            index + 1
            for index, message in enumerate(self.messages)
            if message.deleted and (uids is None or message.uid in uids)
        ]
        for number in reversed(gone):
            del self.messages[number - 1]
        return list(reversed(gone))


class Mail:
    """Every mailbox, by lower-case address; one is made on first use (every login works)."""

    def __init__(self) -> None:
        self.boxes: dict[str, Mailbox] = {}

    def box(self, address: str) -> Mailbox:
        key = address.lower()
        found = self.boxes.get(key)
        if found is None:
            found = self.boxes[key] = Mailbox()
        return found


# ------------------------------------------------------------------ SMTP


class SmtpConnection:
    """One SMTP session: EHLO, AUTH (any), MAIL, RCPT, DATA (delivered at the final dot)."""

    def __init__(self, mail: Mail, today: Callable[[], date]) -> None:
        self.mail = mail
        self.today = today
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.data: list[bytes] | None = None
        self.size = 0

    def handle(self, line: bytes) -> tuple[bytes, bool]:
        """The reply to one line (empty inside DATA), and whether to hang up after it."""
        if self.data is not None:
            return self._data_line(line), False
        verb = line.split(None, 1)[0].upper() if line.strip() else b""
        if verb in (b"EHLO", b"HELO"):
            self._reset()
            return (SMTP_EHLO if verb == b"EHLO" else b"250 fast.test\r\n"), False
        if verb == b"AUTH":
            return b"235 2.7.0 Authentication successful\r\n", False
        if verb == b"MAIL":
            address = _path(line)
            if address is None:
                return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n", False
            self._reset()
            self.sender = address
            return b"250 2.1.0 Ok\r\n", False
        if verb == b"RCPT":
            return self._rcpt(line), False
        if verb == b"DATA":
            if not self.recipients:
                return b"503 5.5.1 Error: need RCPT command\r\n", False
            self.data, self.size = [], 0
            return b"354 End data with <CR><LF>.<CR><LF>\r\n", False
        if verb == b"RSET":
            self._reset()
            return b"250 2.0.0 Ok\r\n", False
        if verb == b"NOOP":
            return b"250 2.0.0 Ok\r\n", False
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", True
        return b"500 5.5.2 Error: command not recognized\r\n", False

    def _rcpt(self, line: bytes) -> bytes:
        if self.sender is None:
            return b"503 5.5.1 Error: need MAIL command\r\n"
        address = _path(line)
        if not address:
            return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        if len(self.recipients) >= MAX_RECIPIENTS:
            return b"452 4.5.3 Error: too many recipients\r\n"
        self.recipients.append(address)
        return b"250 2.1.5 Ok\r\n"

    def _data_line(self, line: bytes) -> bytes:
        assert self.data is not None
        if line in (b".\r\n", b".\n"):
            return self._deliver()
        if line.startswith(b"."):
            line = line[1:]
        self.size += len(line)
        if self.size <= MAX_MESSAGE:
            self.data.append(line)
        return b""

    def _deliver(self) -> bytes:
        assert self.data is not None
        raw, size = b"".join(self.data), self.size
        recipients = self.recipients
        self._reset()
        if size > MAX_MESSAGE:
            return b"552 5.3.4 Error: message too big\r\n"
        today = self.today()
        if not all([self.mail.box(address).deliver(raw, today) for address in recipients]):
            return b"452 4.2.2 Error: a mailbox is full\r\n"
        return b"250 2.0.0 Ok: queued\r\n"

    def _reset(self) -> None:
        self.sender, self.recipients, self.data, self.size = None, [], None, 0


def _path(line: bytes) -> str | None:
    """The address of ``MAIL FROM:<...>`` or ``RCPT TO:<...>`` (printable ASCII)."""
    match = _PATH.match(line)
    return match.group(1).decode("ascii") if match else None


# ------------------------------------------------------------------ IMAP


class UidSet:
    """A UID set such as ``3:7,9`` or ``5:*``, kept as ranges (however large they are)."""

    def __init__(self, text: bytes, last: int) -> None:
        self.ranges: list[tuple[int, int]] = []
        for part in text.split(b","):
            low, colon, high = part.partition(b":")
            first = _uid(low, last)
            end = _uid(high, last) if colon else first
            self.ranges.append((min(first, end), max(first, end)))

    def __contains__(self, uid: int) -> bool:
        return any(low <= uid <= high for low, high in self.ranges)


def _uid(text: bytes, last: int) -> int:
    if text == b"*":
        return last
    if not text.isdigit() or len(text) > len(str(UID_LIMIT)) or not 0 < int(text) <= UID_LIMIT:
        raise Bad("bad UID")
    return int(text)


def words(text: bytes) -> list[bytes]:
    """The atoms and quoted strings of a command's arguments, strings unescaped. Parentheses
    and literals are not read (the exporter sends neither where this server reads words)."""
    found: list[bytes] = []
    for match in _WORD.finditer(text):
        if match.group(3) is not None:
            raise Bad("unexpected character")
        quoted = match.group(1)
        found.append(re.sub(rb"\\(.)", rb"\1", quoted) if quoted is not None else match.group(2))
    return found


Predicate = Callable[[Message], bool]


def parse_search(criteria: list[bytes], last: int) -> list[tuple[bool, Predicate]]:
    """The criteria of a SEARCH, each with whether it is negated; all must hold.

    ``last`` is the highest UID in the mailbox (what ``*`` stands for). Raises :class:`Bad`
    for anything else.
    """
    parsed: list[tuple[bool, Predicate]] = []
    index = 0

    def argument() -> bytes:
        nonlocal index
        if index >= len(criteria):
            raise Bad("missing argument")
        index += 1
        return criteria[index - 1]

    while index < len(criteria):
        negated = False
        while index < len(criteria) and criteria[index].upper() == b"NOT":
            negated, index = not negated, index + 1
        key = argument().upper()
        predicate: Predicate
        if key == b"ALL":
            predicate = _always
        elif key == b"UID":
            predicate = _uid_in(UidSet(argument(), last))
        elif key == b"SINCE":
            predicate = _since(imap_date(argument()))
        elif key == b"HEADER":
            name = argument()
            predicate = _header(name, argument())
        elif key == b"TEXT":
            predicate = _text(argument())
        else:
            raise Bad("unknown search key")
        parsed.append((negated, predicate))
    return parsed


def _always(_: Message) -> bool:
    return True


def _uid_in(uids: UidSet) -> Predicate:
    return lambda message: message.uid in uids


def _since(day: date) -> Predicate:
    return lambda message: message.arrived >= day


def _header(name: bytes, value: bytes) -> Predicate:
    return lambda message: message.has_header(name, value)


def _text(text: bytes) -> Predicate:
    """RFC 3501 ``TEXT``: anywhere in the message, header or body (any case)."""
    needle = text.lower()
    return lambda message: needle in message.raw.lower()


def imap_date(text: bytes) -> date:
    """An IMAP ``date`` (``4-Dec-2026``), month names in English."""
    day, _, rest = text.partition(b"-")
    month, _, year = rest.partition(b"-")
    name = month.decode("ascii", errors="replace").lower()
    if not (day.isdigit() and len(day) <= 2 and year.isdigit() and len(year) == 4) or (
        name not in _MONTHS
    ):
        raise Bad("bad date")
    try:
        return date(int(year), _MONTHS.index(name) + 1, int(day))
    except ValueError:
        raise Bad("bad date") from None


class ImapConnection:
    """One IMAP session over the mailbox of the address that logs in.

    ``push`` writes to the client outside a command's answer (EXISTS while in IDLE).
    """

    def __init__(self, mail: Mail, push: Callable[[bytes], None]) -> None:
        self.mail = mail
        self.push = push
        self.box: Mailbox | None = None
        self.selected = False
        self.announced = 0
        self.idle_tag: bytes | None = None

    @property
    def idling(self) -> bool:
        return self.idle_tag is not None

    def handle(self, line: bytes) -> tuple[bytes, bool]:
        """The answer to one command line, and whether to hang up after it."""
        if self.idle_tag is not None:
            return self._done(line), False
        tag, _, rest = line.strip().partition(b" ")
        if not tag or not re.fullmatch(rb"[\x21-\x7e]{1,64}", tag) or b"+" in tag:
            return b"* BAD missing tag\r\n", False
        command, _, arguments = rest.partition(b" ")
        command = command.upper()
        if command == b"UID":
            command, _, arguments = arguments.partition(b" ")
            command = b"UID " + command.upper()
        try:
            untagged, status = self._command(tag, command, arguments)
        except Bad as bad:
            return tag + b" BAD " + str(bad).encode() + b"\r\n", False
        if status is None:  # IDLE: the tagged answer comes at DONE
            return untagged, False
        return untagged + tag + b" " + status + b"\r\n", command == b"LOGOUT"

    def close(self) -> None:
        """Stop watching the mailbox (the connection is gone)."""
        if self.box is not None:
            self.box.watchers.discard(self._announce)

    def _command(self, tag: bytes, command: bytes, arguments: bytes) -> tuple[bytes, bytes | None]:
        if command == b"CAPABILITY":
            return b"* CAPABILITY " + CAPABILITIES + b"\r\n", b"OK CAPABILITY completed"
        if command == b"NOOP":
            return self._news(), b"OK NOOP completed"
        if command == b"LOGOUT":
            return b"* BYE Logging out\r\n", b"OK LOGOUT completed"
        if command == b"LOGIN":
            given = words(arguments)
            if len(given) != 2 or not given[0]:
                raise Bad("LOGIN needs a user name and a password")
            self.close()
            self.box, self.selected = self.mail.box(given[0].decode("utf-8", "replace")), False
            return b"", b"OK Logged in"
        box = self.box
        if box is None:
            raise Bad("log in first")
        if command in (b"SELECT", b"EXAMINE"):
            if not self._inbox(arguments):
                self.selected = False
                return b"", b"NO [NONEXISTENT] Mailbox doesn't exist"
            self.selected, self.announced = True, len(box.messages)
            return (
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                + b"* %d EXISTS\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n" % len(box.messages)
                + b"* OK [UIDNEXT %d] Predicted next UID\r\n" % box.uidnext,
                b"OK [READ-WRITE] SELECT completed",
            )
        if command == b"LIST":
            return b'* LIST (\\HasNoChildren) "/" INBOX\r\n', b"OK LIST completed"
        if command == b"STATUS":
            name, _, items = arguments.partition(b" ")
            if not self._inbox(name):
                return b"", b"NO [NONEXISTENT] Mailbox doesn't exist"
            if items.upper() != b"(UIDNEXT)":
                raise Bad("only STATUS (UIDNEXT) is answered")
            return b"* STATUS INBOX (UIDNEXT %d)\r\n" % box.uidnext, b"OK STATUS completed"
        if not self.selected:
            raise Bad("no mailbox selected")
        if command == b"IDLE":
            self.idle_tag = tag
            box.watchers.add(self._announce)
            return b"+ idling\r\n" + self._news(), None
        if command in (b"UID SEARCH", b"SEARCH"):
            return self._search(box, arguments, command == b"UID SEARCH"), b"OK SEARCH completed"
        if command == b"UID FETCH":
            return self._fetch(box, arguments), b"OK FETCH completed"
        if command == b"UID STORE":
            return self._store(box, arguments), b"OK STORE completed"
        if command in (b"UID EXPUNGE", b"EXPUNGE"):
            uids = UidSet(arguments.strip(), self._last(box)) if command == b"UID EXPUNGE" else None
            gone = box.expunge(uids)
            self.announced -= len(gone)
            return b"".join(b"* %d EXPUNGE\r\n" % n for n in gone), b"OK EXPUNGE completed"
        raise Bad("command not known here")

    @staticmethod
    def _inbox(name: bytes) -> bool:
        found = words(name)
        return len(found) == 1 and found[0].upper() == INBOX

    @staticmethod
    def _last(box: Mailbox) -> int:
        return box.messages[-1].uid if box.messages else 0

    def _news(self) -> bytes:
        """``* N EXISTS`` when the mailbox grew since the client was last told."""
        count = len(self.box.messages) if self.box is not None else 0
        if not self.selected or count == self.announced:
            return b""
        self.announced = count
        return b"* %d EXISTS\r\n" % count

    def _announce(self, count: int) -> None:
        if self.idle_tag is not None and count != self.announced:
            self.announced = count
            self.push(b"* %d EXISTS\r\n" % count)

    def _done(self, line: bytes) -> bytes:
        tag, self.idle_tag = self.idle_tag, None
        assert tag is not None
        if self.box is not None:
            self.box.watchers.discard(self._announce)
        if line.strip().upper() != b"DONE":
            return tag + b" BAD Expected DONE\r\n"
        return tag + b" OK Idle completed\r\n"

    def _search(self, box: Mailbox, arguments: bytes, by_uid: bool) -> bytes:
        criteria = parse_search(words(arguments), self._last(box))
        found = [
            str(message.uid if by_uid else number).encode()
            for number, message in enumerate(box.messages, 1)
            if all(predicate(message) != negated for negated, predicate in criteria)
        ]
        return b" ".join([b"* SEARCH", *found]) + b"\r\n"

    def _fetch(self, box: Mailbox, arguments: bytes) -> bytes:
        wanted, _, items = arguments.partition(b" ")
        uids = UidSet(wanted, self._last(box))
        fields = _HEADER_FIELDS.match(items)
        partial = _PARTIAL.match(items)
        if fields is None and partial is None:
            raise Bad("only (UID BODY.PEEK[HEADER.FIELDS (...)]) and (UID BODY.PEEK[]<0.N>)")
        out: list[bytes] = []
        for number, message in enumerate(box.messages, 1):
            if message.uid not in uids:
                continue
            if fields is not None:
                names = fields.group(1)
                data = message.header_fields(names.split())
                item = b"BODY[HEADER.FIELDS (" + names + b")]"
            else:
                assert partial is not None
                data = message.raw[: int(partial.group(1))]
                item = b"BODY[]<0>"
            out.append(
                b"* %d FETCH (UID %d %s {%d}\r\n%s)\r\n"
                % (number, message.uid, item, len(data), data)
            )
        return b"".join(out)

    def _store(self, box: Mailbox, arguments: bytes) -> bytes:
        parts = arguments.split(b" ")
        if len(parts) != 3 or parts[2] != b"(\\Deleted)":
            raise Bad("only UID STORE set +FLAGS.SILENT (\\Deleted)")
        how = parts[1].upper()
        if how not in (b"+FLAGS.SILENT", b"-FLAGS.SILENT"):
            raise Bad("only silent flag changes")
        uids = UidSet(parts[0], self._last(box))
        for message in box.messages:
            if message.uid in uids:
                message.deleted = how.startswith(b"+")
        return b""


# ------------------------------------------------------------------ the sockets


def _today() -> date:
    return datetime.now(UTC).date()


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await asyncio.wait_for(writer.drain(), WRITE_WAIT)


async def serve_smtp(
    mail: Mail, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    session = SmtpConnection(mail, _today)
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        await _write(writer, SMTP_GREETING)
        while line := await asyncio.wait_for(reader.readline(), SILENCE):
            reply, done = session.handle(line)
            if reply:
                await _write(writer, reply)
            if done:
                break
    writer.close()


async def serve_imap(
    mail: Mail, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    session = ImapConnection(mail, writer.write)
    try:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            await _write(writer, IMAP_GREETING)
            while True:
                silence = IDLE_SILENCE if session.idling else SILENCE
                line = await asyncio.wait_for(reader.readline(), silence)
                if not line:
                    break
                reply, done = session.handle(line)
                await _write(writer, reply)
                if done:
                    break
    finally:
        session.close()
        writer.close()


async def start(
    mail: Mail, smtp_port: int, imap_port: int
) -> tuple[asyncio.Server, asyncio.Server]:
    """Both servers on 127.0.0.1, sharing ``mail``."""

    async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_smtp(mail, reader, writer)

    async def imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_imap(mail, reader, writer)

    smtp_server = await asyncio.start_server(
        smtp, "127.0.0.1", smtp_port, backlog=1024, limit=MAX_LINE
    )
    imap_server = await asyncio.start_server(
        imap, "127.0.0.1", imap_port, backlog=1024, limit=MAX_LINE
    )
    return smtp_server, imap_server


async def main(smtp_port: int, imap_port: int) -> None:
    smtp_server, imap_server = await start(Mail(), smtp_port, imap_port)
    print("ready", flush=True)
    async with smtp_server, imap_server:
        await asyncio.gather(smtp_server.serve_forever(), imap_server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))

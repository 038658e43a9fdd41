"""IMAP, step by step, with every failure turned into a :class:`ProbeFailure`.

Built on aioimaplib's protocol class, which returns ``NO``/``BAD`` instead of raising and
never notices a dropped connection on its own. This module adds what a monitor needs on top:
every command races the connection's loss, a ``BYE`` or garbage from the server ends the
session with a reason, STARTTLS is done by upgrading the transport in place, and every
``EXISTS`` is time-stamped as it arrives so that delivery time does not depend on when the
probe gets around to looking. It reads any number of response lines at once (the library
recurses once per line), reads answers with the pure functions below, and builds details from
what the server said and the command's name, never from the library's own error text (which
quotes the command line, password or token included).
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import math
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from aioimaplib import aioimaplib as imaplib

from exporter import classify
from exporter.classify import ImapStage
from exporter.config import ImapConfig, ServerConfig
from exporter.message import LATE_ARRIVAL_WINDOW, PROBE_HEADER
from exporter.outcome import Phase, ProbeFailure, Reason, shorten
from exporter.result import TlsSession
from exporter.trace import Trace, recorder
from exporter.transports import READ_FIELDS, Envelope, net
from exporter.transports.credentials import LoginPhases, log_in, scrub
from exporter.transports.oauth import TokenCache

MAX_LINE: Final = 64 * 1024
"""Longest response line accepted; a server sending more is cut off as broken."""
MAX_LITERAL: Final = 1024 * 1024
"""Largest literal accepted: the probe only ever fetches one header field."""
UID_LIMIT: Final = 2**32 - 1
"""UIDs, message counts and UIDNEXT are 32-bit numbers (RFC 3501 ``nz-number``, ``number``):
a longer one is a broken answer, not thousands of digits to convert."""
_NUMBER_DIGITS: Final = len(str(UID_LIMIT))
SEARCH_SINCE_DAYS: Final = math.ceil(LATE_ARRIVAL_WINDOW / 86_400) + 2
"""Searches for probe messages look this many days back, by arrival date (``SINCE``): the
late-arrival window (7 days; an older probe id no longer verifies) and two days for the
server's time zone and clock. However many lookalikes, or probes left flagged ``\\Deleted`` by
a server without UIDPLUS, pile up in a mailbox, older ones are never searched or fetched."""

PHASES: Final = LoginPhases("imap", Phase.IMAP_CONNECT, Phase.IMAP_TLS, Phase.IMAP_AUTH)
IDLE_RENEWAL: Final = 600.0
"""Re-issue IDLE this often; hosted providers drop idle sessions after about ten minutes."""
FIRST_POLL: Final = 0.025
"""When polling, the first poll after the first look waits this long, and each next one twice
as long, up to ``poll_interval``: local delivery is seen within tens of milliseconds rather
than a whole interval late, and a slow delivery still costs few polls."""
ADAPTIVE_POLLING: Final = 2.0
"""With ``idle`` unset, poll for this long after sending, then watch with IDLE. Servers may
hold IDLE announcements back (Dovecot by half a second), while an answer to NOOP carries new
mail at once: polling first measures a fast delivery exactly, IDLE then waits cheaply."""

T = TypeVar("T")
Say = Callable[[str], None]
Line = bytes | bytearray
"""One item of an aioimaplib response: a line (bytes) or a literal's data (bytearray)."""


def _quiet(_: str) -> None:
    pass


_EXISTS = re.compile(rb"^\*\s+(\d+)\s+EXISTS\b", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT\s+(\d+)\]", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID\s+(\d+)", re.IGNORECASE)
_FETCH_START = re.compile(rb"^\d+\s+FETCH\s+\(", re.IGNORECASE)
_LIST = re.compile(rb"^\(([^)]*)\)\s+(?:\"(?:[^\"\\]|\\.)*\"|NIL)\s+(.+)$", re.IGNORECASE)
_LITERAL_NAME = re.compile(rb"\{(\d{1,7})\}")
_STATUS_UIDNEXT = re.compile(rb"\bUIDNEXT\s+(\d+)", re.IGNORECASE)
_COPYUID = re.compile(rb"\[COPYUID\s+\d+\s+([\d:,]+)\s+([\d:,]+)\]", re.IGNORECASE)
_MONTHS: Final = "JanFebMarAprMayJunJulAugSepOctNovDec"
"""IMAP dates name the month in English, whatever the locale: three letters each."""
_VERSIONS: Final = frozenset({"IMAP4REV1", "IMAP4"})
"""What a CAPABILITY answer must name (as aioimaplib requires)."""

SPECIAL_USES: Final = ("Junk", "Sent", "Trash")
USUAL_NAMES: Final = {
    "Junk": ("Junk", "Spam", "Junk E-mail", "Junk Email", "[Gmail]/Spam"),
    "Sent": ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "[Gmail]/Sent Mail"),
    "Trash": ("Trash", "Deleted Items", "Deleted Messages", "[Gmail]/Trash"),
}
"""Names clients use for these folders where a server marks no special use."""


def quote(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def xoauth2_string(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response aioimaplib sends: the token as it is on the wire."""
    return base64.b64encode(f"user={username}\1auth=Bearer {token}\1\1".encode()).decode()


def since(now: float) -> str:
    """The ``SINCE`` criterion of :data:`SEARCH_SINCE_DAYS` before ``now`` (seconds since the
    epoch), with English month names whatever the locale."""
    day = datetime.fromtimestamp(now, UTC).date() - timedelta(days=SEARCH_SINCE_DAYS)
    month = _MONTHS[3 * (day.month - 1) : 3 * day.month]
    return f"SINCE {day.day}-{month}-{day.year}"


def uid_set(uids: Iterable[int]) -> str:
    """A UID set with runs as ranges (``3:7,9``): a short command however many UIDs."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    first = 0
    for index, uid in enumerate(ordered):
        if index + 1 == len(ordered) or ordered[index + 1] != uid + 1:
            low = ordered[first]
            parts.append(str(uid) if low == uid else f"{low}:{uid}")
            first = index + 1
    return ",".join(parts)


def _malformed(what: str) -> ProbeFailure:
    return ProbeFailure(Reason.PROTOCOL_ERROR, f"malformed {what} from the server")


def _number(raw: bytes, what: str) -> int:
    """A 32-bit number of a server's answer; a longer one fails cleanly."""
    if not raw.isdigit() or len(raw) > _NUMBER_DIGITS or int(raw) > UID_LIMIT:
        raise _malformed(what)
    return int(raw)


def _uid_list(text: bytes, limit: int) -> list[int]:
    """The UIDs of a sequence set such as ``3,5:7``, in order; at most ``limit`` of them."""
    uids: list[int] = []
    for part in text.split(b","):
        low_text, colon, high_text = part.partition(b":")
        low = _number(low_text, "UID set")
        high = _number(high_text, "UID set") if colon else low
        low, high = min(low, high), max(low, high)
        if len(uids) + high - low + 1 > limit:
            raise _malformed("UID set")
        uids.extend(range(low, high + 1))
    return uids


def search_uids(lines: Sequence[Line]) -> list[int]:
    """The UIDs of a UID SEARCH answer. aioimaplib hands over ``* SEARCH 3 5`` as ``b"3 5"``,
    before the tagged status text."""
    uids: list[int] = []
    for line in lines[:-1]:
        if isinstance(line, bytes):
            uids.extend(_number(word, "SEARCH answer") for word in line.split() if word.isdigit())
    return uids


def fetch_literals(lines: Sequence[Line]) -> dict[int, bytes]:
    """The literal of each message of a UID FETCH answer, by UID."""
    values: dict[int, bytes] = {}
    uid: int | None = None
    literal: bytes | None = None
    for line in lines:
        if isinstance(line, bytearray):
            literal = bytes(line)
        else:
            if _FETCH_START.match(line):
                uid, literal = None, None
            if match := _FETCH_UID.search(line):
                uid = _number(match.group(1), "FETCH answer")
        if uid is not None and literal is not None:
            values[uid] = literal
            uid, literal = None, None
    return values


def _quoted_or_atom(raw: bytes) -> str | None:
    """The first quoted string or atom of ``raw``; None where a quoted string is unclosed."""
    text = raw.strip()
    if not text.startswith(b'"'):
        return text.split(b" ", 1)[0].decode("utf-8", errors="replace")
    name = bytearray()
    escaped = False
    for byte in text[1:]:
        if escaped or byte not in b'\\"':
            name.append(byte)
            escaped = False
        elif byte == ord("\\"):
            escaped = True
        else:
            return name.decode("utf-8", errors="replace")
    return None


@dataclass(frozen=True)
class Listed:
    """One mailbox of a LIST answer: its attributes (lower case) and its name."""

    flags: frozenset[str]
    name: str


def listed_mailboxes(lines: Sequence[Line]) -> list[Listed]:
    """The mailboxes of a LIST answer (aioimaplib hands over ``* LIST (\\Junk) "/" Junk`` as
    ``(\\Junk) "/" Junk``); a name sent as a literal is the literal that follows."""
    listed: list[Listed] = []
    for index, line in enumerate(lines[:-1]):
        if not isinstance(line, bytes) or not (match := _LIST.match(line)):
            continue
        flags = frozenset(match.group(1).decode("ascii", errors="replace").lower().split())
        raw = match.group(2).strip()
        if _LITERAL_NAME.fullmatch(raw):
            following = lines[index + 1]
            name = (
                bytes(following).decode("utf-8", errors="replace")
                if isinstance(following, bytearray)
                else None
            )
        else:
            name = _quoted_or_atom(raw)
        if name:
            listed.append(Listed(flags, name))
    return listed


def special_folders_in(listed: Iterable[Listed], uses: Iterable[str]) -> dict[str, str]:
    """The folder for each of ``uses`` (RFC 6154 ``\\Junk``, ``\\Sent``, ``\\Trash``): the first
    marked with it, else the first with a usual name."""
    found: dict[str, str] = {}
    names: set[str] = set()
    wanted = tuple(uses)
    for mailbox in listed:
        names.add(mailbox.name)
        for use in wanted:
            if f"\\{use}".lower() in mailbox.flags:
                found.setdefault(use, mailbox.name)
    for use in wanted:
        named = next((name for name in USUAL_NAMES[use] if name in names), None)
        if use not in found and named is not None:
            found[use] = named
    return found


def select_uidnext(lines: Sequence[Line]) -> int | None:
    """UIDNEXT from a SELECT answer (``* OK [UIDNEXT 9]``), if the server sent it."""
    for line in lines:
        if isinstance(line, bytes) and (match := _UIDNEXT.search(line)):
            return _number(match.group(1), "UIDNEXT")
    return None


def status_uidnext(lines: Sequence[Line]) -> int | None:
    """UIDNEXT from a STATUS answer (``* STATUS Junk (UIDNEXT 9)``), if the server sent it."""
    for line in lines[:-1]:
        if isinstance(line, bytes) and (match := _STATUS_UIDNEXT.search(line)):
            return _number(match.group(1), "STATUS answer")
    return None


def copied_uids(lines: Sequence[Line], moved: int) -> dict[int, int]:
    """The new UID of each of ``moved`` messages, by old UID, from a COPYUID response code
    (RFC 4315); empty without one."""
    for line in lines:
        if isinstance(line, bytes) and (match := _COPYUID.search(line)):
            old = _uid_list(match.group(1), moved)
            new = _uid_list(match.group(2), moved)
            return dict(zip(old, new, strict=False))
    return {}


def capabilities(lines: Sequence[Line]) -> frozenset[str]:
    """The capabilities of a CAPABILITY answer, upper case. aioimaplib hands over
    ``* CAPABILITY IMAP4rev1 IDLE`` as ``b"IMAP4rev1 IDLE"``, before the tagged status text."""
    names: set[str] = set()
    for line in lines[:-1]:
        if isinstance(line, bytes):
            words = line.decode("ascii", errors="replace").upper().split()
            names.update(words[1:] if words[:1] == ["CAPABILITY"] else words)
    if not names & _VERSIONS:
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "the server's CAPABILITY names no IMAP4rev1")
    return frozenset(names)


class _Fetch(imaplib.FetchCommand):  # type: ignore[misc]
    """aioimaplib's FETCH, keeping count of open parentheses as lines arrive: the library
    counts them again over every line received so far for each new one (quadratic)."""

    def __init__(self, tag: str, *args: str, prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(tag, *args, prefix=prefix, loop=loop)
        self.depth = 0

    def append_to_resp(self, line: Line, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if isinstance(line, bytes):
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self.depth = 0
            self.depth += line.count(b"(") - line.count(b")")

    def wait_data(self) -> bool:
        return self.depth != 0


class _Protocol(imaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, made to report what a monitor needs to know, and to read any
    number of lines at once (the library recurses once per line)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.greeting = b""
        self.greeted = asyncio.Event()
        self.lost = asyncio.Event()
        self.broken: str | None = None
        self.bye = b""
        self.exists = 0
        self.exists_at = 0.0
        self.exists_changed = asyncio.Event()
        self.challenge = b""
        self.last_line = b""
        self.secrets: tuple[str, ...] = ()
        """The credential in the forms login sends it: never shown, even if a server echoes."""
        self.recorder = recorder()
        self.conn = self.recorder.connection("imap") if self.recorder is not None else 0
        """For ``probe --record``: every line as it was written and read."""

    def send(self, line: str, scrub: str | None = None) -> None:
        if self.recorder is not None:
            self.recorder.sent(self.conn, f"{line}\r\n".encode())
        super().send(line, scrub)

    async def welcome(self, command: bytes) -> None:
        self.greeting = command
        try:
            if not command.upper().startswith((b"* BYE", b"BYE")):
                await super().welcome(command)
        except ProbeFailure as failure:
            self.broken = failure.detail
        except Exception:
            # The library's text of what went wrong may quote a command: say what we know.
            self.broken = f"unusable greeting: {_text(command)}"
        finally:
            self.greeted.set()

    async def capability(self) -> None:
        """CAPABILITY, read by :func:`capabilities` (the library's reading fails on
        anything but ASCII and on an answer without a line)."""
        command = imaplib.Command("CAPABILITY", self.new_tag(), loop=self.loop)
        self.capabilities = set(capabilities((await self.execute(command)).lines))

    async def fetch(self, message_set: str, message_parts: str, by_uid: bool = False) -> Any:
        """FETCH with :class:`_Fetch`, which knows in constant time when a response is whole."""
        prefix = "UID" if by_uid else ""
        command = _Fetch(self.new_tag(), message_set, message_parts, prefix=prefix, loop=self.loop)
        return await self.execute(command)

    def data_received(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.received(self.conn, data)
        try:
            super().data_received(data)
        except ProbeFailure as failure:
            self._break(failure.detail)
            return
        except Exception:
            # Never the library's text: it quotes the pending command, with its arguments.
            line = _text(self.last_line, self.secrets)
            self._break(f"malformed response{self._pending()}: {line}")
            return
        if len(self.incomplete_line) > MAX_LINE:
            self._break(f"response line longer than {MAX_LINE} bytes")

    def _pending(self) -> str:
        """`` to NAME``: the command awaiting an answer, by name only."""
        if self.pending_sync_command is not None:
            return f" to {self.pending_sync_command.name}"
        names = sorted(
            command.name for command in self.pending_async_commands.values() if command is not None
        )
        return f" to {' '.join(names)}" if names else ""

    def _handle_responses(
        self,
        data: bytes,
        line_handler: Callable[[bytes, Any], Any],
        current_cmd: Any = None,
    ) -> None:
        """aioimaplib's reading of a chunk of responses, as a loop: the library calls itself
        once per line and so fails with RecursionError on about a thousand lines in one read
        (a LIST of a large account, a FETCH of many messages). Literals are handed over as
        views, so the rest of the chunk is never copied."""
        view = memoryview(data)
        start = 0
        while True:
            if start == len(data):
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise imaplib.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                start = len(data) - len(current_cmd.append_literal_data(view[start:]))
                if current_cmd.wait_literal_data():
                    raise imaplib.IncompleteRead(current_cmd)
            end = data.find(imaplib.CRLF, start)
            if end < 0:
                raise imaplib.IncompleteRead(current_cmd, data[start:])
            line = data[start:end]
            start = end + len(imaplib.CRLF)
            command = line_handler(line, current_cmd)
            if begin_literal := imaplib.literal_data_re.match(line):
                size = _number(begin_literal.group("size"), "literal size")
                if size > MAX_LITERAL:
                    raise ProbeFailure(
                        Reason.PROTOCOL_ERROR, f"the server announced a {size}-byte literal"
                    )
                if command is None:
                    command = imaplib.Command("NIL", "unused", loop=self.loop)
                command.begin_literal_data(size)
                current_cmd = command
            elif command is not None and command.wait_data():
                current_cmd = command
            else:
                current_cmd = None

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        self.last_line = line
        return super()._handle_line(line, current_cmd)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.recorder is not None:
            self.recorder.closed(self.conn)
        self.lost.set()
        super().connection_lost(exc)

    def _untagged_response(self, line: bytes) -> Any:
        match = _EXISTS.match(line)
        if match:
            self.exists = _number(match.group(1), "EXISTS")
            self.exists_at = time.monotonic()
            self.exists_changed.set()
        elif line.upper().startswith(b"* BYE"):
            self.bye = line[5:].strip()
        return super()._untagged_response(line)

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # A failed SASL exchange may send an error challenge first (XOAUTH2 does): answer
            # it with an empty response so that the server sends its final NO.
            self.challenge = line[1:].strip()
            if self.transport is not None:
                if self.recorder is not None:
                    self.recorder.sent(self.conn, b"\r\n")
                self.transport.write(b"\r\n")
            return
        super()._continuation(line)

    def _break(self, why: str) -> None:
        self.broken = self.broken or why
        if self.transport is not None:
            self.transport.abort()
        self.lost.set()


@dataclass(frozen=True)
class Selected:
    """What SELECT told us about the mailbox."""

    exists: int
    uidnext: int | None


class ImapSession:
    """One IMAP connection. Use as ``async with``: leaving it always closes the socket."""

    def __init__(self, server: ImapConfig, say: Say = _quiet) -> None:
        self.server = server
        self.say = say
        self.tls: TlsSession | None = None
        self._sock: socket.socket | None = None
        self._proto: _Protocol | None = None
        self._idle: asyncio.Future[Any] | None = None

    async def __aenter__(self) -> ImapSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def proto(self) -> _Protocol:
        if self._proto is None:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "not connected")
        return self._proto

    def has(self, capability: str) -> bool:
        return self._proto is not None and capability in self._proto.capabilities

    def secret_forms(self, token: str | None) -> tuple[str, ...]:
        """The credential as :meth:`login` puts it on the wire: the password inside its quoted
        string (escaped), or the token inside the base64 XOAUTH2 response. A server that
        echoes a command shows these forms, which a search for the credential itself misses."""
        if token is not None:
            return (xoauth2_string(self.server.username, token),)
        password = self.server.password.reveal() if self.server.password else ""
        return (quote(password)[1:-1],)

    def abort(self) -> None:
        """Drop the connection at once and stop every task it started."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._idle is not None:
            self._idle.cancel()
        if self._proto is not None:
            for task in list(self._proto.tasks):
                task.cancel()
            if self._proto.transport is not None:
                self._proto.transport.abort()

    async def open(self) -> None:
        """Resolve and connect (TCP only)."""
        self._sock = await net.open_socket(self.server)
        self.say(f"connected to {self._sock.getpeername()[0]}:{self._sock.getpeername()[1]}")

    async def greet(self) -> None:
        """Wait for the greeting (through implicit TLS where configured)."""
        loop = asyncio.get_running_loop()
        proto = _Protocol(loop)
        sock, self._sock = self._sock, None
        implicit = self.server.tls == "implicit"
        try:
            await loop.create_connection(
                lambda: proto,
                sock=sock,
                ssl=net.tls_context(self.server.tls_config) if implicit else None,
                server_hostname=net.server_name(self.server) if implicit else None,
            )
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                raise self._failed(net.tls_failure(exc)) from None
            if isinstance(exc, OSError):
                raise self._failed(
                    ProbeFailure(classify.os_error(exc), exc.strerror or type(exc).__name__)
                ) from None
            raise
        self._proto = proto
        if implicit:
            self._note_tls()
        await self._call(proto.greeted.wait(), "greeting", "greeting")
        self.say(f"S: {_text(proto.greeting)}")
        if proto.greeting.upper().startswith((b"* BYE", b"BYE")):
            text = _text(proto.greeting.split(b"BYE", 1)[-1])
            raise ProbeFailure(classify.imap_reply("BYE", text, "greeting"), f"BYE {text}")
        if proto.broken:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, proto.broken)

    async def starttls(self) -> None:
        """Upgrade the connection in place; a server that does not offer STARTTLS fails."""
        if not self.has("STARTTLS"):
            raise ProbeFailure(Reason.TLS, "the server does not offer STARTTLS")
        proto = self.proto
        command = imaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)
        self.say(f"C: {command.tag} STARTTLS")
        self._check(await self._call(proto.execute(command), "tls", "STARTTLS"), "tls")
        try:
            transport = await proto.loop.start_tls(
                proto.transport,
                proto,
                net.tls_context(self.server.tls_config),
                server_hostname=net.server_name(self.server),
            )
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            raise self._failed(net.tls_failure(exc)) from None
        proto.transport = transport
        self._note_tls()
        await self._call(proto.capability(), "tls", "CAPABILITY")

    async def login(self, token: str | None = None) -> None:
        """LOGIN, or AUTHENTICATE XOAUTH2 with a token; then ask for capabilities again (some
        servers list UIDPLUS and MOVE only after login)."""
        proto = self.proto
        username = self.server.username
        if token is not None:
            if not self.has("AUTH=XOAUTH2"):
                raise ProbeFailure(Reason.AUTH_REJECTED, "the server does not offer XOAUTH2")
            self.say(
                f"C: {proto.tagpre}{proto.tagnum} AUTHENTICATE XOAUTH2 "
                f"<redacted: {username} and token>"
            )
            proto.secrets = (token, *self.secret_forms(token))
            response = await self._call(proto.xoauth2(username, token), "auth", "AUTHENTICATE")
            if proto.challenge:
                self.say(f"S: + {_text(proto.challenge, proto.secrets)}")
                self.say("C: (empty response)")
        else:
            self.say(f"C: {proto.tagpre}{proto.tagnum} LOGIN {quote(username)} <redacted>")
            password = self.server.password.reveal() if self.server.password else ""
            proto.secrets = (password, *self.secret_forms(None))
            response = await self._call(proto.login(username, password), "auth", "LOGIN")
        self._check(response, "auth")
        await self._call(proto.capability(), "auth", "CAPABILITY")

    async def select(self, mailbox: str | None = None) -> Selected:
        """SELECT the configured mailbox, or another one (Junk, Sent, Trash)."""
        proto = self.proto
        name = quote(mailbox or self.server.mailbox)
        self.say(f"C: {proto.tagpre}{proto.tagnum} SELECT {name}")
        response = await self._call(proto.select(name), "select", "SELECT")
        self._check(response, "select")
        return Selected(exists=proto.exists, uidnext=self._parse(select_uidnext, response.lines))

    async def search(self, *criteria: str) -> list[int]:
        """UIDs matching ``criteria`` (sent without CHARSET, which old Exchange rejects)."""
        self.say(f"C: UID SEARCH {' '.join(criteria)}")
        response = await self._call(
            self.proto.search(*criteria, charset=None, by_uid=True), "mailbox", "UID SEARCH"
        )
        self._check(response, "mailbox")
        return self._parse(search_uids, response.lines)

    async def header(self, uids: Iterable[int], field: str) -> dict[int, str]:
        """The value of one header field of each message, by UID, without marking it read."""
        return {
            uid: header_value(block, field)
            for uid, block in (await self.header_fields(uids, (field,))).items()
        }

    async def header_fields(self, uids: Iterable[int], fields: Sequence[str]) -> dict[int, bytes]:
        """The header lines of the named fields of each message, by UID, unread."""
        return await self._fetch_literals(uids, f"BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]")

    async def raw(self, uid: int, limit: int) -> bytes:
        """The first ``limit`` bytes of a message, unread."""
        return (await self._fetch_literals([uid], f"BODY.PEEK[]<0.{limit}>")).get(uid, b"")

    async def _fetch_literals(self, uids: Iterable[int], item: str) -> dict[int, bytes]:
        wanted = uid_set(uids)
        if not wanted:
            return {}
        self.say(f"C: UID FETCH {wanted} (UID {item})")
        response = await self._call(
            self.proto.fetch(wanted, f"(UID {item})", by_uid=True), "mailbox", "UID FETCH"
        )
        self._check(response, "mailbox")
        return self._parse(fetch_literals, response.lines)

    async def special_folders(self) -> dict[str, str]:
        """Folders by special use (RFC 6154: ``\\Junk``, ``\\Sent``, ``\\Trash``); where a
        server marks none, the usual names.

        Only the folders needed are listed, so that an account with thousands of folders or
        labels costs no more: those marked with a special use (``LIST (SPECIAL-USE)``) where
        the server offers SPECIAL-USE, then the usual names of those still missing, by name
        where it offers LIST-EXTENDED (several patterns), else the top level (``%``).
        """
        found: dict[str, str] = {}
        if self.has("SPECIAL-USE"):
            found = special_folders_in(await self._list("(SPECIAL-USE)", '""', '"*"'), SPECIAL_USES)
        missing = [use for use in SPECIAL_USES if use not in found]
        if not missing:
            return found
        if self.has("LIST-EXTENDED"):
            names = (quote(name) for use in missing for name in USUAL_NAMES[use])
            listed = await self._list('""', f"({' '.join(names)})")
        else:
            listed = await self._list('""', '"%"')
        return {**special_folders_in(listed, missing), **found}

    async def _list(self, *arguments: str) -> list[Listed]:
        self.say(f"C: LIST {' '.join(arguments)}")
        response = await self._call(
            self.proto.simple_command("LIST", *arguments), "mailbox", "LIST"
        )
        self._check(response, "mailbox")
        return self._parse(listed_mailboxes, response.lines)

    async def uidnext(self, mailbox: str) -> int | None:
        """The next UID of another mailbox (STATUS), to notice new mail in it cheaply."""
        self.say(f"C: STATUS {quote(mailbox)} (UIDNEXT)")
        response = await self._call(
            self.proto.simple_command("STATUS", quote(mailbox), "(UIDNEXT)"), "mailbox", "STATUS"
        )
        self._check(response, "mailbox")
        return self._parse(status_uidnext, response.lines)

    async def move(self, uids: Iterable[int], mailbox: str) -> dict[int, int]:
        """UID MOVE to ``mailbox``; the messages' new UIDs there (from COPYUID)."""
        moving = set(uids)
        wanted = uid_set(moving)
        self.say(f"C: UID MOVE {wanted} {quote(mailbox)}")
        response = await self._call(
            self.proto.move(wanted, quote(mailbox), by_uid=True), "mailbox", "UID MOVE"
        )
        self._check(response, "mailbox")
        return self._parse(lambda lines: copied_uids(lines, len(moving)), response.lines)

    async def delete(self, uids: Iterable[int]) -> bool:
        """Flag the messages deleted and expunge exactly them (UID EXPUNGE).

        Without UIDPLUS the messages stay flagged and ``False`` is returned: a plain EXPUNGE
        could remove other clients' deleted mail.
        """
        wanted = uid_set(uids)
        if not wanted:
            return True
        proto = self.proto
        self.say(f"C: UID STORE {wanted} +FLAGS.SILENT (\\Deleted)")
        stored = await self._call(
            proto.store(wanted, "+FLAGS.SILENT", "(\\Deleted)", by_uid=True), "mailbox", "UID STORE"
        )
        self._check(stored, "mailbox")
        if not self.has("UIDPLUS"):
            self.say("the server lacks UIDPLUS: the message stays flagged \\Deleted")
            return False
        self.say(f"C: UID EXPUNGE {wanted}")
        expunged = await self._call(proto.expunge(wanted, by_uid=True), "mailbox", "UID EXPUNGE")
        self._check(expunged, "mailbox")
        return True

    async def noop(self) -> None:
        self.say("C: NOOP")
        noop = await self._call(self.proto.simple_command("NOOP"), "mailbox", "NOOP")
        self._check(noop, "mailbox")

    async def idle_start(self) -> None:
        """Enter IDLE and return once the server has accepted it."""
        proto = self.proto
        self.say("C: IDLE")
        idle = asyncio.ensure_future(proto.idle())
        self._idle = idle
        accepted = asyncio.ensure_future(proto.wait_for_idle_response())
        try:
            await self._call(
                asyncio.wait({idle, accepted}, return_when=asyncio.FIRST_COMPLETED),
                "mailbox",
                "IDLE",
            )
        finally:
            accepted.cancel()
        if idle.done():
            self._idle = None
            response = idle.result()
            text = _last(response, proto.secrets)
            raise ProbeFailure(
                classify.imap_reply(response.result, text, "mailbox"),
                f"IDLE refused: {response.result} {text}",
            )

    async def idle_done(self) -> None:
        """Leave IDLE and wait for the server to confirm."""
        idle, self._idle = self._idle, None
        if idle is None:
            return
        self.say("C: DONE")
        self.proto.idle_done()
        self._check(await self._call(idle, "mailbox", "DONE"), "mailbox")

    def forget_new_mail(self) -> None:
        """Ignore EXISTS announcements received so far."""
        self.proto.exists_changed.clear()

    async def wait_for_new_mail(self, limit: float) -> float | None:
        """Wait up to ``limit`` seconds for an EXISTS; return when it arrived (monotonic)."""
        proto = self.proto
        try:
            async with asyncio.timeout(limit):
                await self._call(proto.exists_changed.wait(), "mailbox", "IDLE")
        except TimeoutError:
            return None
        proto.exists_changed.clear()
        return proto.exists_at

    async def logout(self) -> None:
        """Say goodbye politely; a server that hangs up first is not a failure."""
        try:
            if self._proto is not None and not self._proto.lost.is_set():
                self.say("C: LOGOUT")
                await self._call(self._proto.logout(), "mailbox", "LOGOUT")
        except ProbeFailure:
            pass
        finally:
            self.abort()

    async def _call(self, awaitable: Awaitable[T], stage: ImapStage, command: str) -> T:
        """Await a protocol step, but give up as soon as the connection is gone.

        A failure inside the library is told by ``command`` and the exception's type: its
        text may quote the command line, with a password or token in it.
        """
        proto = self.proto
        step = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(proto.lost.wait())
        try:
            await asyncio.wait({step, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not step.done():
                step.cancel()
        if step.cancelled() or not step.done():
            raise self._lost_failure(stage)
        exc = step.exception()
        if exc is None:
            return step.result()
        if isinstance(exc, ProbeFailure):
            raise exc
        if proto.lost.is_set():
            raise self._lost_failure(stage)
        if isinstance(exc, TimeoutError | imaplib.CommandTimeout):
            raise ProbeFailure(Reason.TIMEOUT, "no answer from the server in time")
        raise ProbeFailure(
            Reason.PROTOCOL_ERROR, f"{command} failed in the IMAP client ({type(exc).__name__})"
        )

    def _parse(self, parse: Callable[[Sequence[Line]], T], lines: Sequence[Line]) -> T:
        """Read an answer with a pure reader; what it cannot read is told in the transcript."""
        try:
            return parse(lines)
        except ProbeFailure as failure:
            raise self._failed(failure) from None

    def _lost_failure(self, stage: ImapStage) -> ProbeFailure:
        proto = self.proto
        if proto.broken:
            return ProbeFailure(Reason.PROTOCOL_ERROR, proto.broken)
        if proto.bye:
            text = _text(proto.bye, proto.secrets)
            return ProbeFailure(classify.imap_reply("BYE", text, stage), f"BYE {text}")
        return ProbeFailure(Reason.NETWORK, "the server closed the connection")

    def _check(self, response: Any, stage: ImapStage) -> None:
        text = _last(response, self.proto.secrets)
        self.say(f"S: {response.result} {text}".rstrip())
        if response.result == "OK":
            return
        reason = classify.imap_reply(response.result, text, stage)
        raise ProbeFailure(reason, f"{response.result} {text}".strip())

    def _note_tls(self) -> None:
        transport = self.proto.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        self.tls = net.tls_session(ssl_object)
        if self.tls:
            self.say(f"TLS established: {self.tls.version}")

    def _failed(self, failure: ProbeFailure) -> ProbeFailure:
        self.say(f"failed: {failure.detail}")
        return failure


def _last(response: Any, secrets: tuple[str, ...] = ()) -> str:
    lines = [line for line in response.lines if isinstance(line, bytes)]
    return _text(lines[-1], secrets) if lines else ""


def _text(raw: bytes, secrets: tuple[str, ...] = ()) -> str:
    """What a server said, for a detail or the transcript: without the credential, even where
    the server echoes a command, and then shortened (a secret cut in two is found no more)."""
    return shorten(scrub(raw.decode("utf-8", errors="replace").strip(), secrets))


def header_value(raw: bytes, field: str) -> str:
    """The value of the first ``field`` of a block of header lines, unfolded."""
    prefix = field.lower().encode() + b":"
    value: list[bytes] = []
    for line in raw.split(b"\r\n"):
        if value and line[:1] in (b" ", b"\t"):
            value.append(line.strip())
        elif value:
            break
        elif line.lower().startswith(prefix):
            value.append(line[len(prefix) :].strip())
    return b" ".join(value).decode("ascii", errors="replace")


def _imap(server: ServerConfig) -> ImapConfig:
    if not isinstance(server, ImapConfig):
        raise TypeError(f"an imap section is needed, got {type(server).__name__}")
    return server


class ImapReceiver:
    """The mailbox watched over IMAP: polling then IDLE by default (see ``idle``).

    Every ``EXISTS`` is time-stamped as it arrives, so delivery time does not depend on when
    the round trip gets around to looking. Other folders (Junk, Sent, and Trash on Gmail) are
    found by their special use and only selected when they have something to look at;
    references name the folder (``J``, ``S`` before the UID; none for the watched one).
    Deletion is by UID, and only with UIDPLUS; on Gmail, where deleting from a label only
    archives, by moving to Trash and expunging there. Searches for probe messages look back
    :data:`SEARCH_SINCE_DAYS` only, so that lookalikes piling up cost nothing.
    """

    def __init__(self, server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
        self.server = _imap(server)
        self.trace = trace
        self.tokens = tokens
        self.session = ImapSession(self.server, trace.say)
        self._idling = False
        self._first_look: float | None = None
        self._pause = FIRST_POLL
        self._folders: dict[str, str] = {}
        self._selected = ""
        self._inbox_from = 1
        self._junk_from: int | None = None

    def _watch_with_idle(self) -> bool:
        """Whether the next wait uses IDLE: ``idle: true`` always, ``idle: false`` never, and
        by default once the first :data:`ADAPTIVE_POLLING` seconds of waiting are over."""
        if self.server.idle is False or not self.session.has("IDLE"):
            return False
        if self.server.idle is True or self._first_look is None:
            return bool(self.server.idle)
        return time.monotonic() - self._first_look >= ADAPTIVE_POLLING

    async def open(self) -> None:
        await log_in(self.session, self.server, PHASES, self.trace, self.tokens)
        with self.trace.phase(Phase.IMAP_SELECT):
            selected = await self.session.select()
            self._selected = self.server.mailbox
            self._inbox_from = selected.uidnext or 1
            self._folders = await self.session.special_folders()
            await self._watch_junk()
            if self._watch_with_idle():
                await self.session.idle_start()
                self._idling = True
            self.session.forget_new_mail()

    async def _watch_junk(self) -> None:
        """Watch the junk folder: its first look searches all of it that arrived within
        :data:`SEARCH_SINCE_DAYS` (earlier probes filed there late are cleaned too), later ones
        only what is new. A folder that cannot be read is not watched."""
        junk = self._folders.get("Junk")
        if junk is None:
            return
        try:
            await self.session.uidnext(junk)
            self._junk_from = 1
        except ProbeFailure as failure:
            self.trace.say(f"the junk folder {junk!r} is not watched: {failure.detail}")
            self._folders.pop("Junk")

    async def _in(self, folder: str) -> None:
        """Have ``folder`` selected (the watched mailbox for ""): leave IDLE, SELECT if need be."""
        name = self._folders[folder] if folder else self.server.mailbox
        if self._idling:
            self._idling = False
            await self.session.idle_done()
        if self._selected != name:
            await self.session.select(name)
            self._selected = name

    async def wait(self, deadline: float) -> float | None:
        if self._selected != self.server.mailbox:
            await self._in("")
        if self._watch_with_idle():
            if not self._idling:
                # New mail announced during the looks in between is kept: it wakes this wait.
                await self.session.idle_start()
            remaining = deadline - time.monotonic()
            arrived = await self.session.wait_for_new_mail(max(0.0, min(remaining, IDLE_RENEWAL)))
            self._idling = False
            await self.session.idle_done()
            return arrived
        if self._first_look is None:
            self._first_look = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, min(self._pause, deadline - time.monotonic())))
            self._pause = min(self._pause * 2, self.server.poll_interval)
        await self.session.noop()
        return time.monotonic()

    async def _search(self, folder: str, *criteria: str) -> list[str]:
        await self._in(folder)
        return [f"{folder[:1]}{uid}" for uid in await self.session.search(*criteria)]

    async def find(self, prefix: str) -> list[str]:
        return await self._search("", since(time.time()), _probe_header(prefix))

    async def junk(self, prefix: str) -> list[str]:
        junk = self._folders.get("Junk")
        if junk is None or self._junk_from is None:
            return []
        if self._idling:
            self._idling = False
            await self.session.idle_done()
        uidnext = await self.session.uidnext(junk)
        if uidnext is None or uidnext <= self._junk_from:
            return []
        found = await self._search(
            "Junk", f"UID {self._junk_from}:*", since(time.time()), _probe_header(prefix)
        )
        self._junk_from = uidnext
        return found

    async def reports(self, prefix: str) -> list[str]:
        # TEXT, not BODY: servers (Dovecot) leave a report's quoted header out of BODY.
        found = await self._search(
            "",
            f"UID {self._inbox_from}:*",
            f"NOT HEADER {PROBE_HEADER} {quote('')}",
            f"TEXT {quote(prefix)}",
        )
        # "N:*" also matches the last message when it is older than N.
        return [ref for ref in found if int(ref) >= self._inbox_from]

    async def sent_copies(self, prefix: str) -> list[str]:
        if "Sent" not in self._folders:
            return []
        return await self._search("Sent", since(time.time()), _probe_header(prefix))

    def _split(self, refs: Sequence[str]) -> dict[str, list[int]]:
        """References by folder ("" for the watched one)."""
        by_folder: dict[str, list[int]] = {}
        for ref in refs:
            folder = next((f for f in SPECIAL_USES if ref.startswith(f[:1])), "")
            by_folder.setdefault(folder, []).append(int(ref[len(folder[:1]) :]))
        return by_folder

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        envelopes: dict[str, Envelope] = {}
        with self.trace.phase(Phase.IMAP_FETCH):
            for folder, uids in self._split(refs).items():
                await self._in(folder)
                blocks = await self.session.header_fields(uids, (PROBE_HEADER, *READ_FIELDS))
                for uid, block in blocks.items():
                    envelopes[f"{folder[:1]}{uid}"] = envelope(block)
        return envelopes

    async def raw(self, ref: str, limit: int) -> bytes:
        [(folder, [uid])] = self._split([ref]).items()
        with self.trace.phase(Phase.IMAP_FETCH):
            await self._in(folder)
            return await self.session.raw(uid, limit)

    async def delete(self, refs: Sequence[str]) -> bool:
        removed = True
        with self.trace.phase(Phase.IMAP_CLEANUP):
            for folder, uids in self._split(refs).items():
                await self._in(folder)
                trash = self._folders.get("Trash")
                if self.session.has("X-GM-EXT-1") and trash and folder != "Trash":
                    # Gmail: removing a message from a label only archives it.
                    moved = await self.session.move(uids, trash)
                    self._selected = ""
                    await self._in("Trash")
                    removed &= len(moved) == len(uids)
                    uids = list(moved.values())
                removed &= await self.session.delete(uids)
        return removed

    async def close(self) -> None:
        await self.session.logout()

    def abort(self) -> None:
        self.session.abort()


def _probe_header(prefix: str) -> str:
    return f"HEADER {PROBE_HEADER} {quote(prefix)}"


def envelope(block: bytes) -> Envelope:
    """What the round trip reads of a message's header lines."""
    fields = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)
    return Envelope(
        probe_id=" ".join(str(fields.get(PROBE_HEADER, "")).split()),
        subject=" ".join(str(fields.get("Subject", "")).split()),
        authentication_results=tuple(
            " ".join(str(value).split()) for value in fields.get_all("Authentication-Results", [])
        ),
    )


async def check_login(server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
    """imap_login: can a client open a fresh IMAP session, log in and open the mailbox?"""
    async with ImapSession(_imap(server), trace.say) as session:
        await log_in(session, server, PHASES, trace, tokens)
        with trace.phase(Phase.IMAP_SELECT):
            await session.select()
        await session.logout()

"""IMAP, step by step, with every failure turned into a :class:`ProbeFailure`.

Built on aioimaplib's protocol class, which returns ``NO``/``BAD`` instead of raising and
never notices a dropped connection on its own. This module adds what a monitor needs on top:
every command races the connection's loss, a ``BYE`` or garbage from the server ends the
session with a reason, STARTTLS is done by upgrading the transport in place, and every
``EXISTS`` is time-stamped as it arrives so that delivery time does not depend on when the
probe gets around to looking.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aioimaplib import aioimaplib as imaplib

from exporter import classify
from exporter.classify import ImapStage
from exporter.config import ImapConfig, ServerConfig
from exporter.message import PROBE_HEADER
from exporter.outcome import DETAIL_LIMIT, Phase, ProbeFailure, Reason, shorten
from exporter.result import TlsSession
from exporter.trace import Trace
from exporter.transports import READ_FIELDS, Envelope, net
from exporter.transports.credentials import LoginPhases, log_in
from exporter.transports.oauth import TokenCache

MAX_LINE: Final = 64 * 1024
"""Longest response line accepted; a server sending more is cut off as broken."""
MAX_CHALLENGE: Final = 500
"""Bytes of a SASL error challenge kept for the transcript."""
MAX_LITERAL: Final = 1024 * 1024
"""Largest literal accepted: the probe only ever fetches one header field."""

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


def _quiet(_: str) -> None:
    pass


_EXISTS = re.compile(rb"^\*\s+(\d+)\s+EXISTS\b", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT\s+(\d+)\]", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID\s+(\d+)", re.IGNORECASE)
_FETCH_START = re.compile(rb"^\d+\s+FETCH\s+\(", re.IGNORECASE)
_LIST = re.compile(rb"^\(([^)]*)\)\s+(?:\"[^\"]*\"|NIL)\s+(.+)$", re.IGNORECASE)
_STATUS_UIDNEXT = re.compile(rb"\bUIDNEXT\s+(\d+)", re.IGNORECASE)
_COPYUID = re.compile(rb"\[COPYUID\s+\d+\s+([\d:,]+)\s+([\d:,]+)\]", re.IGNORECASE)

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


def uid_set(uids: Iterable[int]) -> str:
    return ",".join(str(uid) for uid in sorted(set(uids)))


def _uid_list(text: bytes) -> list[int]:
    """The UIDs of a sequence set such as ``3,5:7``, in order."""
    uids: list[int] = []
    for part in text.decode().split(","):
        low, _, high = part.partition(":")
        uids.extend(range(int(low), int(high or low) + 1))
    return uids


def _mailbox_name(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


class _Protocol(imaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, made to report what a monitor needs to know."""

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

    async def welcome(self, command: bytes) -> None:
        self.greeting = command
        try:
            if not command.upper().startswith((b"* BYE", b"BYE")):
                await super().welcome(command)
        except Exception as exc:
            self.broken = f"unusable greeting: {exc}"
        finally:
            self.greeted.set()

    def data_received(self, data: bytes) -> None:
        try:
            super().data_received(data)
        except Exception as exc:
            self._break(f"malformed response: {exc}")
            return
        if len(self.incomplete_line) > MAX_LINE:
            self._break(f"response line longer than {MAX_LINE} bytes")
        elif (literal := getattr(self.current_command, "_expected_size", 0)) > MAX_LITERAL:
            self._break(f"the server announced a {literal}-byte literal")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        super().connection_lost(exc)

    def _untagged_response(self, line: bytes) -> Any:
        match = _EXISTS.match(line)
        if match:
            self.exists = int(match.group(1))
            self.exists_at = time.monotonic()
            self.exists_changed.set()
        elif line.upper().startswith(b"* BYE"):
            self.bye = line[5:].strip()[:DETAIL_LIMIT]
        return super()._untagged_response(line)

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # A failed SASL exchange may send an error challenge first (XOAUTH2 does): answer
            # it with an empty response so that the server sends its final NO.
            self.challenge = line[1:].strip()[:MAX_CHALLENGE]
            if self.transport is not None:
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
                    ProbeFailure(classify.os_error(exc), str(exc.strerror or exc))
                ) from None
            raise
        self._proto = proto
        if implicit:
            self._note_tls()
        await self._call(proto.greeted.wait(), "greeting")
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
        self._check(await self._call(proto.execute(command), "tls"), "tls")
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
        await self._call(proto.capability(), "tls")

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
            response = await self._call(proto.xoauth2(username, token), "auth")
            if proto.challenge:
                self.say(f"S: + {_text(proto.challenge)}")
                self.say("C: (empty response)")
        else:
            self.say(f"C: {proto.tagpre}{proto.tagnum} LOGIN {quote(username)} <redacted>")
            password = self.server.password.reveal() if self.server.password else ""
            response = await self._call(proto.login(username, password), "auth")
        self._check(response, "auth")
        await self._call(proto.capability(), "auth")

    async def select(self, mailbox: str | None = None) -> Selected:
        """SELECT the configured mailbox, or another one (Junk, Sent, Trash)."""
        proto = self.proto
        name = quote(mailbox or self.server.mailbox)
        self.say(f"C: {proto.tagpre}{proto.tagnum} SELECT {name}")
        response = await self._call(proto.select(name), "select")
        self._check(response, "select")
        uidnext = None
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and (match := _UIDNEXT.search(line)):
                uidnext = int(match.group(1))
        return Selected(exists=proto.exists, uidnext=uidnext)

    async def search(self, *criteria: str) -> list[int]:
        """UIDs matching ``criteria`` (sent without CHARSET, which old Exchange rejects)."""
        self.say(f"C: UID SEARCH {' '.join(criteria)}")
        response = await self._call(
            self.proto.search(*criteria, charset=None, by_uid=True), "mailbox"
        )
        self._check(response, "mailbox")
        # aioimaplib hands over "* SEARCH 3 5" as b"3 5", before the tagged status text.
        uids: list[int] = []
        for line in response.lines[:-1]:
            if isinstance(line, bytes | bytearray):
                uids.extend(int(word) for word in line.split() if word.isdigit())
        return uids

    async def header(self, uids: Iterable[int], field: str) -> dict[int, str]:
        """The value of one header field of each message, by UID, without marking it read."""
        return {
            uid: _header_value(block, field)
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
            self.proto.fetch(wanted, f"(UID {item})", by_uid=True), "mailbox"
        )
        self._check(response, "mailbox")
        values: dict[int, bytes] = {}
        uid: int | None = None
        literal: bytes | None = None
        for line in response.lines:
            if isinstance(line, bytearray):
                literal = bytes(line)
            elif isinstance(line, bytes):
                if _FETCH_START.match(line):
                    uid, literal = None, None
                if match := _FETCH_UID.search(line):
                    uid = int(match.group(1))
            if uid is not None and literal is not None:
                values[uid] = literal
                uid, literal = None, None
        return values

    async def special_folders(self) -> dict[str, str]:
        """Folders by special use (RFC 6154: ``\\Junk``, ``\\Sent``, ``\\Trash``), from LIST;
        where a server marks none, the usual names."""
        self.say('C: LIST "" "*"')
        response = await self._call(self.proto.simple_command("LIST", '""', '"*"'), "mailbox")
        self._check(response, "mailbox")
        found: dict[str, str] = {}
        names: set[str] = set()
        for line in response.lines[:-1]:
            if not isinstance(line, bytes | bytearray) or not (match := _LIST.match(line)):
                continue
            flags, name = match.group(1).decode(errors="replace"), _mailbox_name(match.group(2))
            names.add(name)
            for use in SPECIAL_USES:
                if f"\\{use}".lower() in flags.lower():
                    found.setdefault(use, name)
        for use, usual in USUAL_NAMES.items():
            named = next((n for n in usual if n in names), None)
            if use not in found and named is not None:
                found[use] = named
        return found

    async def uidnext(self, mailbox: str) -> int | None:
        """The next UID of another mailbox (STATUS), to notice new mail in it cheaply."""
        self.say(f"C: STATUS {quote(mailbox)} (UIDNEXT)")
        response = await self._call(
            self.proto.simple_command("STATUS", quote(mailbox), "(UIDNEXT)"), "mailbox"
        )
        self._check(response, "mailbox")
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and (match := _STATUS_UIDNEXT.search(line)):
                return int(match.group(1))
        return None

    async def move(self, uids: Iterable[int], mailbox: str) -> dict[int, int]:
        """UID MOVE to ``mailbox``; the messages' new UIDs there (from COPYUID)."""
        wanted = uid_set(uids)
        self.say(f"C: UID MOVE {wanted} {quote(mailbox)}")
        response = await self._call(self.proto.move(wanted, quote(mailbox), by_uid=True), "mailbox")
        self._check(response, "mailbox")
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and (match := _COPYUID.search(line)):
                return dict(zip(_uid_list(match.group(1)), _uid_list(match.group(2)), strict=False))
        return {}

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
            proto.store(wanted, "+FLAGS.SILENT", "(\\Deleted)", by_uid=True), "mailbox"
        )
        self._check(stored, "mailbox")
        if not self.has("UIDPLUS"):
            self.say("the server lacks UIDPLUS: the message stays flagged \\Deleted")
            return False
        self.say(f"C: UID EXPUNGE {wanted}")
        expunged = await self._call(proto.expunge(wanted, by_uid=True), "mailbox")
        self._check(expunged, "mailbox")
        return True

    async def noop(self) -> None:
        self.say("C: NOOP")
        self._check(await self._call(self.proto.simple_command("NOOP"), "mailbox"), "mailbox")

    async def idle_start(self) -> None:
        """Enter IDLE and return once the server has accepted it."""
        proto = self.proto
        self.say("C: IDLE")
        idle = asyncio.ensure_future(proto.idle())
        self._idle = idle
        accepted = asyncio.ensure_future(proto.wait_for_idle_response())
        try:
            await self._call(
                asyncio.wait({idle, accepted}, return_when=asyncio.FIRST_COMPLETED), "mailbox"
            )
        finally:
            accepted.cancel()
        if idle.done():
            self._idle = None
            response = idle.result()
            raise ProbeFailure(
                classify.imap_reply(response.result, _last(response), "mailbox"),
                f"IDLE refused: {response.result} {_last(response)}",
            )

    async def idle_done(self) -> None:
        """Leave IDLE and wait for the server to confirm."""
        idle, self._idle = self._idle, None
        if idle is None:
            return
        self.say("C: DONE")
        self.proto.idle_done()
        self._check(await self._call(idle, "mailbox"), "mailbox")

    def forget_new_mail(self) -> None:
        """Ignore EXISTS announcements received so far."""
        self.proto.exists_changed.clear()

    async def wait_for_new_mail(self, limit: float) -> float | None:
        """Wait up to ``limit`` seconds for an EXISTS; return when it arrived (monotonic)."""
        proto = self.proto
        try:
            async with asyncio.timeout(limit):
                await self._call(proto.exists_changed.wait(), "mailbox")
        except TimeoutError:
            return None
        proto.exists_changed.clear()
        return proto.exists_at

    async def logout(self) -> None:
        """Say goodbye politely; a server that hangs up first is not a failure."""
        try:
            if self._proto is not None and not self._proto.lost.is_set():
                self.say("C: LOGOUT")
                await self._call(self._proto.logout(), "mailbox")
        except ProbeFailure:
            pass
        finally:
            self.abort()

    async def _call(self, awaitable: Awaitable[T], stage: ImapStage) -> T:
        """Await a protocol step, but give up as soon as the connection is gone."""
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
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{exc}")

    def _lost_failure(self, stage: ImapStage) -> ProbeFailure:
        proto = self.proto
        if proto.broken:
            return ProbeFailure(Reason.PROTOCOL_ERROR, proto.broken)
        if proto.bye:
            text = _text(proto.bye)
            return ProbeFailure(classify.imap_reply("BYE", text, stage), f"BYE {text}")
        return ProbeFailure(Reason.NETWORK, "the server closed the connection")

    def _check(self, response: Any, stage: ImapStage) -> None:
        text = _last(response)
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


def _last(response: Any) -> str:
    lines = [line for line in response.lines if isinstance(line, bytes)]
    return _text(lines[-1]) if lines else ""


def _text(raw: bytes) -> str:
    return shorten(raw.decode("utf-8", errors="replace").strip())


def _header_value(raw: bytes, field: str) -> str:
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
    archives, by moving to Trash and expunging there.
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
        """Watch the junk folder: its first look searches all of it (earlier probes filed
        there late are cleaned too), later ones only what is new. A folder that cannot be
        read is not watched."""
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
        return await self._search("", _probe_header(prefix))

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
        found = await self._search("Junk", f"UID {self._junk_from}:*", _probe_header(prefix))
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
        return await self._search("Sent", _probe_header(prefix))

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
                    envelopes[f"{folder[:1]}{uid}"] = _envelope(block)
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


def _envelope(block: bytes) -> Envelope:
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

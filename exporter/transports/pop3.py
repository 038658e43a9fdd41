"""POP3 (RFC 1939), step by step, with every failure turned into a :class:`ProbeFailure`.

No client library: POP3 is a line protocol of a dozen commands, and a monitor needs what the
standard library's ``poplib`` does not give (asyncio, a bounded read of every answer, TLS
upgraded in place for STLS, RFC 2595). Replies are read as ``+OK``/``-ERR`` with the extended
response codes of RFC 2449 and RFC 3206 (``[AUTH]``, ``[SYS/TEMP]``, ``[IN-USE]``), which
:func:`exporter.classify.pop3_reply` turns into a reason.

POP3 shows the maildrop as it was at login, and deletes only when the session ends with
``QUIT`` (the UPDATE state): a session that ends any other way deletes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from exporter import bounce, classify
from exporter.classify import Pop3Stage
from exporter.config import ServerConfig
from exporter.config.sections.pop3 import Pop3Config
from exporter.outcome import Phase, ProbeFailure, Reason, shorten
from exporter.result import TlsSession
from exporter.trace import Trace, recorder
from exporter.transports import Envelope, net
from exporter.transports.credentials import LoginPhases, log_in, scrub
from exporter.transports.imap import envelope, xoauth2_string
from exporter.transports.oauth import TokenCache

PHASES: Final = LoginPhases("pop3", Phase.POP3_CONNECT, Phase.POP3_TLS, Phase.POP3_AUTH)
RELOGIN: Final = LoginPhases("pop3", Phase.POP3_LIST, Phase.POP3_LIST, Phase.POP3_LIST)
"""Each poll logs in afresh (the maildrop is a snapshot taken at login): its time is counted
in ``pop3_list``, so that the login phases keep the time of the first login alone."""
MAX_LINE: Final = 64 * 1024
"""Longest line accepted (RFC 1939 allows 512 octets for a reply; message lines are longer)."""
MAX_LISTING: Final = 4 * 1024 * 1024
"""Most octets of a multi-line answer kept (a UIDL listing, a header): beyond it the answer
is a broken one."""
MAX_DRAIN: Final = 32 * 1024 * 1024
"""Most octets of a message read past what is kept, to finish its answer and keep the
session; a bigger message ends the session instead."""
MAX_MESSAGES: Final = 10_000_000
"""Message numbers above this are a broken answer, not millions of digits to convert."""
MAX_UID: Final = 70
"""A unique-id is 1 to 70 characters of 0x21 to 0x7E (RFC 1939, section 7)."""
MAX_SCAN: Final = 500
"""Only the newest this many messages are examined: a probe arrives as the newest, and a big
maildrop must not cost a header read of every message at every probe."""
MAX_REPORT_READS: Final = 10
"""Messages read in full at one look for bounces: new mail without a probe id."""
FIRST_POLL: Final = 0.025
"""As IMAP without IDLE: the first poll waits this long, each next one twice as long, up to
``poll_interval``."""

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _malformed(what: str) -> ProbeFailure:
    return ProbeFailure(Reason.PROTOCOL_ERROR, f"malformed {what} from the server")


def status(line: bytes) -> tuple[bool, str]:
    """``+OK text`` to (True, text), ``-ERR text`` to (False, text); anything else is a
    broken answer. The text is what the server said, unshortened and with secrets in it."""
    stripped = line.rstrip(b"\r\n")
    for marker, ok in ((b"+OK", True), (b"-ERR", False)):
        head, rest = stripped[: len(marker)], stripped[len(marker) :]
        if head.upper() == marker and rest[:1] in (b"", b" "):
            return ok, rest[1:].decode("utf-8", errors="replace").strip()
    raise _malformed("status line")


def _number(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > len(str(MAX_MESSAGES)) or not 0 < int(raw) <= MAX_MESSAGES:
        raise _malformed(what)
    return int(raw)


def uid_listing(lines: Sequence[bytes]) -> dict[str, int]:
    """A UIDL answer's lines (``N UID``) to message number by unique-id."""
    numbers: dict[str, int] = {}
    seen: set[int] = set()
    for line in lines:
        parts = line.strip(b"\r\n").split(b" ")
        if len(parts) != 2:
            raise _malformed("UIDL line")
        number = _number(parts[0], "message number")
        uid = parts[1]
        if not 0 < len(uid) <= MAX_UID or any(not 0x21 <= byte <= 0x7E for byte in uid):
            raise _malformed("unique-id")
        text = uid.decode("ascii")
        if number in seen or text in numbers:
            raise _malformed("UIDL listing (a number or unique-id twice)")
        seen.add(number)
        numbers[text] = number
    return numbers


def continuation(line: bytes) -> bool:
    """Whether a line is a SASL continuation (``+`` or ``+ data``, RFC 5034), not ``+OK``."""
    return line.rstrip(b"\r\n") == b"+" or line.startswith(b"+ ")


def unstuff(line: bytes) -> bytes:
    """A line of a multi-line answer without its byte-stuffing dot (RFC 1939, section 3)."""
    return line[1:] if line.startswith(b"..") else line


def capabilities(lines: Sequence[bytes]) -> frozenset[str]:
    """A CAPA answer (RFC 2449) as upper-case words: ``STLS``, ``UIDL``, ``TOP``,
    ``SASL XOAUTH2`` (one entry per mechanism)."""
    found: set[str] = set()
    for line in lines:
        words = line.decode("ascii", errors="replace").upper().split()
        if not words:
            continue
        found.add(words[0])
        if words[0] == "SASL":
            found.update(f"SASL {mechanism}" for mechanism in words[1:])
    return frozenset(found)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line, at most :data:`MAX_LINE` octets; a longer one or a closed connection fails."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _malformed(f"line (longer than {MAX_LINE:,} octets)") from None
    except asyncio.IncompleteReadError:
        raise ProbeFailure(Reason.NETWORK, "the server closed the connection") from None


async def read_answer(reader: asyncio.StreamReader, limit: int, *, strict: bool) -> list[bytes]:
    """The lines of a multi-line answer up to its terminating dot, unstuffed: at most ``limit``
    octets kept; past that a broken answer (``strict``), or dropped up to :data:`MAX_DRAIN`
    octets more (a message longer than the caller reads)."""
    kept: list[bytes] = []
    size = 0
    while True:
        line = await read_line(reader)
        if line.rstrip(b"\r\n") == b".":
            return kept
        line = unstuff(line)
        size += len(line)
        if size <= limit:
            kept.append(line)
        elif strict:
            raise _malformed(f"answer (more than {limit:,} octets)")
        elif size > limit + MAX_DRAIN:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "a message too big to read")


class Pop3Session:
    """One POP3 connection. Use as ``async with``: leaving it always closes the socket.

    None of it bounds its own time: the probe's deadline does.
    """

    def __init__(self, server: ServerConfig, say: Say = _quiet) -> None:
        self.server = server
        self.say = say
        self.tls: TlsSession | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.secrets: tuple[str, ...] = ()
        self._sock: socket.socket | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._recorder = recorder()
        self._conn = self._recorder.connection("pop3") if self._recorder is not None else 0
        """For ``probe --record``: every line as it was written and read."""

    async def __aenter__(self) -> Pop3Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def secret_forms(self, token: str | None) -> tuple[str, ...]:
        """The credential as :meth:`login` puts it on the wire: the password as it is, or the
        token inside the base64 XOAUTH2 response."""
        if token is not None:
            return (xoauth2_string(self.server.username, token),)
        return (self.server.password.reveal() if self.server.password else "",)

    def abort(self) -> None:
        """Drop the connection at once: nothing marked for deletion is deleted."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
        self._reader = None

    async def open(self) -> None:
        """Resolve and connect (TCP only)."""
        self._sock = await net.open_socket(self.server)
        peer = self._sock.getpeername()
        self.say(f"connected to {peer[0]}:{peer[1]}")

    async def greet(self) -> None:
        """Wait for the greeting (through implicit TLS where configured), then ask CAPA."""
        sock, self._sock = self._sock, None
        implicit = self.server.tls == "implicit"
        try:
            self._reader, self._writer = await asyncio.open_connection(
                sock=sock,
                limit=MAX_LINE,
                ssl=net.tls_context(self.server.tls_config) if implicit else None,
                server_hostname=net.server_name(self.server) if implicit else None,
            )
        except BaseException as exc:
            if sock is not None:
                sock.close()
            raise self._connection_failure(exc) from None
        if implicit:
            self._note_tls()
        ok, text = status(await self._line("greeting"))
        self.say(f"S: {'+OK' if ok else '-ERR'} {self._text(text)}".rstrip())
        if not ok:
            raise ProbeFailure(
                classify.pop3_reply(text, "greeting"), f"-ERR {self._text(text)}".strip()
            )
        await self._capa()

    async def starttls(self) -> None:
        """STLS (RFC 2595), then CAPA again; a server that does not offer STLS fails."""
        if "STLS" not in self.capabilities:
            raise ProbeFailure(Reason.TLS, "the server does not offer STLS")
        await self.command("STLS", "tls")
        writer = self._stream()[1]
        try:
            await writer.start_tls(
                net.tls_context(self.server.tls_config),
                server_hostname=net.server_name(self.server),
            )
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            raise self._failed(net.tls_failure(exc)) from None
        self._note_tls()
        await self._capa()

    async def login(self, token: str | None = None) -> None:
        """USER and PASS, or AUTH XOAUTH2 with a token (RFC 5034)."""
        username = self.server.username
        if token is not None:
            if "SASL XOAUTH2" not in self.capabilities:
                raise ProbeFailure(Reason.AUTH_REJECTED, "the server does not offer XOAUTH2")
            response = xoauth2_string(username, token)
            self.secrets = (token, response)
            await self._send("AUTH XOAUTH2", "AUTH XOAUTH2")
            line = await self._line("auth")
            if continuation(line):
                self.say("S: +")
                await self._send(response, f"<redacted: {username} and token>")
                line = await self._line("auth")
                if continuation(line):
                    # An error as a challenge (RFC 7628 style): answer empty, read the -ERR.
                    self.say("S: + <challenge>")
                    await self._send("", "(empty response)")
                    line = await self._line("auth")
            self._check(line, "auth")
            return
        password = self.server.password.reveal() if self.server.password else ""
        self.secrets = (password,)
        if any(ch in password for ch in "\r\n\0"):
            # PASS carries the password as the rest of one line: a line break would end it and
            # send what follows as a command.
            raise ProbeFailure(
                Reason.AUTH_REJECTED,
                "the password has a line break or NUL, which PASS cannot carry",
            )
        await self.command(f"USER {username}", "auth")
        await self.command(f"PASS {password}", "auth", shown="PASS <redacted>")

    async def command(self, line: str, stage: Pop3Stage, *, shown: str | None = None) -> str:
        """Send one command and read its status line; ``-ERR`` fails with its reason."""
        await self._send(line, shown or line)
        return self._check(await self._line(stage), stage)

    async def listing(self, line: str, stage: Pop3Stage) -> list[bytes]:
        """A command with a multi-line answer, its lines unstuffed, at most
        :data:`MAX_LISTING` octets."""
        await self.command(line, stage)
        kept = await self._multiline(stage, MAX_LISTING, strict=True)
        self.say(f"S: ({len(kept)} lines)")
        return kept

    async def uidl(self) -> dict[str, int]:
        """Message number by unique-id, for every message of the maildrop."""
        try:
            return uid_listing(await self.listing("UIDL", "mailbox"))
        except ProbeFailure as failure:
            raise self._failed(failure) from None

    async def header(self, number: int) -> bytes:
        """The header of message ``number`` (``TOP n 0``): the body is never downloaded."""
        lines = await self.listing(f"TOP {number} 0", "message")
        return b"".join(lines)

    async def retrieve(self, number: int, limit: int) -> bytes:
        """The first ``limit`` octets of message ``number`` (RETR; the rest is read and
        dropped, up to :data:`MAX_DRAIN`)."""
        await self.command(f"RETR {number}", "message")
        kept = await self._multiline("message", limit, strict=False)
        return b"".join(kept)[:limit]

    async def delete(self, numbers: Iterable[int]) -> bool:
        """DELE each message, then QUIT: only a ``+OK`` to QUIT means they are gone."""
        for number in numbers:
            await self.command(f"DELE {number}", "message")
        return await self.quit()

    async def quit(self) -> bool:
        """QUIT and hang up; whether the server confirmed (and so committed deletions)."""
        try:
            if not self.connected:
                return False
            await self._send("QUIT", "QUIT")
            ok, text = status(await self._line("message"))
            self.say(f"S: {'+OK' if ok else '-ERR'} {self._text(text)}".rstrip())
            return ok
        finally:
            self.abort()

    async def _capa(self) -> None:
        """CAPA (RFC 2449); a server without it (``-ERR``) is taken to offer nothing optional."""
        await self._send("CAPA", "CAPA")
        ok, text = status(await self._line("greeting"))
        self.say(f"S: {'+OK' if ok else '-ERR'} {self._text(text)}".rstrip())
        if not ok:
            self.capabilities = frozenset()
            return
        lines = await self._multiline("greeting", MAX_LISTING, strict=True)
        self.capabilities = capabilities(lines)
        self.say(f"S: {' '.join(sorted(self.capabilities))}")

    async def _multiline(self, stage: Pop3Stage, limit: int, *, strict: bool) -> list[bytes]:
        reader = self._stream()[0]
        with self._reading():
            lines = await read_answer(reader, limit, strict=strict)
        if self._recorder is not None:
            # As it was on the wire: dot-stuffed, and ended by its dot.
            for line in lines:
                stuffed = b"." + line if line.startswith(b".") else line
                self._recorder.received(self._conn, stuffed.rstrip(b"\r\n") + b"\r\n")
            self._recorder.received(self._conn, b".\r\n")
        return lines

    async def _send(self, line: str, shown: str) -> None:
        writer = self._stream()[1]
        self.say(f"C: {shown}".rstrip())
        try:
            if self._recorder is not None:
                self._recorder.sent(self._conn, line.encode("utf-8") + b"\r\n")
            writer.write(line.encode("utf-8") + b"\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            self.abort()
            raise ProbeFailure(Reason.NETWORK, "the server closed the connection") from None

    async def _line(self, stage: Pop3Stage) -> bytes:
        reader = self._stream()[0]
        with self._reading():
            line = await read_line(reader)
        if self._recorder is not None:
            self._recorder.received(self._conn, line.rstrip(b"\r\n") + b"\r\n")
        return line

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A read that fails ends the session, the failure said in the session's terms."""
        try:
            yield
        except ProbeFailure as failure:
            self.abort()
            raise self._failed(failure) from None
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.abort()
            raise self._connection_failure(exc) from None

    def _stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            raise ProbeFailure(Reason.NETWORK, "not connected")
        return self._reader, self._writer

    def _check(self, line: bytes, stage: Pop3Stage) -> str:
        ok, text = status(line)
        shown = self._text(text)
        self.say(f"S: {'+OK' if ok else '-ERR'} {shown}".rstrip())
        if not ok:
            raise ProbeFailure(classify.pop3_reply(text, stage), f"-ERR {shown}".strip())
        return text

    def _text(self, text: str) -> str:
        """What a server said, for a detail or the transcript: without the credential, even
        where the server echoes a command, and then shortened."""
        return shorten(scrub(text, self.secrets))

    def _connection_failure(self, exc: BaseException) -> BaseException:
        """A reason for what the connection raised, by its type: the text of a library's
        exception is never shown."""
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return self._failed(net.tls_failure(exc))
        if isinstance(exc, OSError):
            return self._failed(
                ProbeFailure(classify.os_error(exc), exc.strerror or type(exc).__name__)
            )
        return exc

    def _note_tls(self) -> None:
        writer = self._writer
        ssl_object = writer.get_extra_info("ssl_object") if writer is not None else None
        self.tls = net.tls_session(ssl_object)
        if self.tls:
            self.say(f"TLS established: {self.tls.version}")

    def _failed(self, failure: ProbeFailure) -> ProbeFailure:
        self.say(f"failed: {failure.detail}")
        return failure


def _pop3(server: ServerConfig) -> Pop3Config:
    if not isinstance(server, Pop3Config):
        raise TypeError(f"a pop3 section is needed, got {type(server).__name__}")
    return server


def _probe_id(block: bytes) -> str:
    return envelope(block).probe_id


class Pop3Receiver:
    """The maildrop watched over POP3, by polling: POP3 has no push.

    The maildrop is a snapshot taken at login, so each poll logs in afresh (after
    :data:`FIRST_POLL`, then twice as long each time, up to ``poll_interval``) and lists the
    unique-ids (UIDL); references are unique-ids, which stay the same across sessions. Headers
    are read with ``TOP n 0``, each message's once, without downloading bodies; only the
    newest :data:`MAX_SCAN` messages are examined. Deletion is DELE then QUIT, which commits:
    a session that fails before QUIT deletes nothing, the probe counts it as a cleanup
    failure, and the next round trip deletes the message as a late arrival.

    POP3 has no folders: no junk folder is watched (a provider that files a probe as junk
    hides it from POP3, and the probe fails as ``not_delivered``) and no Sent copies are
    seen. Bounces are found by reading new mail without a probe id in full (RETR, bounded by
    the caller) for the probe id's prefix.
    """

    def __init__(self, server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
        self.server = _pop3(server)
        self.trace = trace
        self.tokens = tokens
        self.session: Pop3Session | None = None
        self._numbers: dict[str, int] = {}
        self._at_open: set[str] = set()
        self._headers: dict[str, bytes] = {}
        self._reports: dict[str, bytes] = {}
        self._first_look: float | None = None
        self._pause = FIRST_POLL
        self._next_poll = 0.0
        """When the next new session looks (monotonic): kept across calls to :meth:`wait`,
        which the round trip also makes with an earlier ``deadline`` for its other looks."""

    async def _log_in(self, phases: LoginPhases) -> Pop3Session:
        if self.session is not None:
            self.session.abort()
        session = self.session = Pop3Session(self.server, self.trace.say)
        await log_in(session, self.server, phases, self.trace, self.tokens)
        with self.trace.phase(Phase.POP3_LIST):
            self._numbers = await session.uidl()
        return session

    async def _session(self) -> Pop3Session:
        """The session of the latest listing, or a fresh one after a deletion ended it."""
        if self.session is not None and self.session.connected:
            return self.session
        return await self._log_in(RELOGIN)

    async def open(self) -> None:
        await self._log_in(PHASES)
        self._at_open = set(self._numbers)

    async def wait(self, deadline: float) -> float | None:
        now = time.monotonic()
        if self._first_look is None:
            self._first_look = now
            self._next_poll = now + self._pause
            return now
        # No new session so near the probe's end that a login cut off by its timeout would be
        # reported as a timeout of the server rather than as mail not delivered.
        too_late = self.trace.deadline - self._next_poll <= self._pause
        if self._next_poll > deadline or too_late:
            await asyncio.sleep(max(0.0, deadline - now))
            return None
        await asyncio.sleep(max(0.0, self._next_poll - now))
        self._pause = min(self._pause * 2, self.server.poll_interval)
        before = set(self._numbers)
        if self.session is not None:
            # Nothing was marked for deletion: a new session is all that is needed.
            with contextlib.suppress(ProbeFailure):
                await self.session.quit()
        await self._log_in(RELOGIN)
        self._next_poll = time.monotonic() + self._pause
        return time.monotonic() if set(self._numbers) - before else None

    def _newest(self) -> list[str]:
        """Unique-ids of the newest :data:`MAX_SCAN` messages, newest first."""
        return sorted(self._numbers, key=self._numbers.__getitem__, reverse=True)[:MAX_SCAN]

    async def _headers_of(self, uids: Iterable[str]) -> None:
        """Read and keep the headers of those not read yet."""
        missing = [uid for uid in uids if uid not in self._headers]
        if not missing:
            return
        session = await self._session()
        with self.trace.phase(Phase.POP3_FETCH):
            for uid in missing:
                if uid in self._numbers:
                    self._headers[uid] = await session.header(self._numbers[uid])

    async def find(self, prefix: str) -> list[str]:
        newest = self._newest()
        await self._headers_of(newest)
        return [
            uid
            for uid in newest
            if uid in self._headers and _probe_id(self._headers[uid]).startswith(prefix)
        ]

    async def junk(self, prefix: str) -> list[str]:
        return []

    async def reports(self, prefix: str) -> list[str]:
        """New mail (since :meth:`open`) without a probe id whose text names the prefix; each
        message read once, at most :data:`MAX_REPORT_READS` at a look."""
        fresh = [uid for uid in self._newest() if uid not in self._at_open]
        await self._headers_of(fresh)
        unread = [
            uid
            for uid in fresh
            if uid in self._headers
            and uid not in self._reports
            and not _probe_id(self._headers[uid])
        ][:MAX_REPORT_READS]
        if unread:
            session = await self._session()
            with self.trace.phase(Phase.POP3_FETCH):
                for uid in unread:
                    if uid in self._numbers:
                        self._reports[uid] = await session.retrieve(
                            self._numbers[uid], bounce.MAX_REPORT
                        )
        needle = prefix.encode("ascii", errors="replace")
        return [uid for uid, raw in self._reports.items() if needle in raw and uid in self._numbers]

    async def sent_copies(self, prefix: str) -> list[str]:
        return []

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        await self._headers_of(refs)
        return {ref: envelope(self._headers[ref]) for ref in refs if ref in self._headers}

    async def raw(self, ref: str, limit: int) -> bytes:
        if ref in self._reports and limit <= bounce.MAX_REPORT:
            return self._reports[ref][:limit]
        session = await self._session()
        if ref not in self._numbers:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, "the message is no longer in the maildrop")
        with self.trace.phase(Phase.POP3_FETCH):
            return await session.retrieve(self._numbers[ref], limit)

    async def delete(self, refs: Sequence[str]) -> bool:
        """DELE and QUIT in the session of the latest listing; the next look logs in again."""
        session = await self._session()
        with self.trace.phase(Phase.POP3_CLEANUP):
            present = [self._numbers[ref] for ref in refs if ref in self._numbers]
            try:
                removed = await session.delete(present)
            except ProbeFailure:
                session.abort()  # nothing half-deleted is committed by a later QUIT
                raise
        for ref in refs:
            self._numbers.pop(ref, None)
        return removed and len(present) == len(refs)

    async def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(ProbeFailure):
                await self.session.quit()

    def abort(self) -> None:
        if self.session is not None:
            self.session.abort()


async def check_login(server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
    """pop3_login: can a client open a fresh POP3 session, log in and list the maildrop?"""
    async with Pop3Session(_pop3(server), trace.say) as session:
        await log_in(session, server, PHASES, trace, tokens)
        with trace.phase(Phase.POP3_LIST):
            await session.command("STAT", "mailbox")
        await session.quit()

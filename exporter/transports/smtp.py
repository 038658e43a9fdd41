"""SMTP submission, step by step, with every failure turned into a :class:`ProbeFailure`.

Built on aiosmtplib. Each step is a separate call so that a probe can time it as a phase; none
of them bounds its own time: the caller's deadline does. Each step reports what was said to a
transcript callback, with credentials replaced by ``<redacted>``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.auth import auth_login_encode, auth_plain_encode, auth_xoauth2_encode

from exporter import classify
from exporter.classify import SmtpStage
from exporter.config import ServerConfig
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.result import TlsSession
from exporter.trace import Trace, recorder
from exporter.transports import ProbeMessage, net
from exporter.transports.credentials import LoginPhases, log_in, scrub
from exporter.transports.oauth import TokenCache

LOCAL_HOSTNAME: Final = "mailbox-exporter.invalid"
QUIT_WAIT: Final = 1.0
"""How long to wait for the reply to QUIT once the message is accepted."""
PHASES: Final = LoginPhases("smtp", Phase.SMTP_CONNECT, Phase.SMTP_TLS, Phase.SMTP_AUTH)

Say = Callable[[str], None]


MALFORMED_PREFIX: Final = "Malformed SMTP response line: "
"""How aiosmtplib introduces a reply line it cannot read; the server's line follows."""


def failure(exc: BaseException, stage: SmtpStage) -> ProbeFailure:
    """Translate an aiosmtplib or socket error raised during ``stage``.

    The detail is built from what the server said and what is known (the stage, the kind of
    error), never from a library's own text, which may quote a command with its arguments.
    """
    if isinstance(exc, ProbeFailure):
        return exc
    cause = exc.__cause__
    if isinstance(exc, SMTPResponseException) and exc.code >= 200:
        reason = classify.smtp_reply(exc.code, exc.message, stage)
        return ProbeFailure(reason, classify.smtp_detail(exc.code, exc.message))
    if isinstance(exc, SMTPResponseException) and exc.code >= 0:
        return ProbeFailure(Reason.PROTOCOL_ERROR, classify.smtp_detail(exc.code, exc.message))
    if isinstance(exc, SMTPResponseException):
        return ProbeFailure(Reason.PROTOCOL_ERROR, _unreadable(exc.message))
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return ProbeFailure(Reason.TIMEOUT, "no answer from the server in time")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return net.tls_failure(exc)
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        return net.tls_failure(cause)
    if isinstance(exc, SMTPServerDisconnected) or isinstance(cause, SMTPServerDisconnected):
        return ProbeFailure(Reason.NETWORK, "the server closed the connection")
    if isinstance(cause, OSError):
        return ProbeFailure(classify.os_error(cause), cause.strerror or type(cause).__name__)
    if isinstance(exc, OSError):
        return ProbeFailure(classify.os_error(exc), exc.strerror or type(exc).__name__)
    return ProbeFailure(
        Reason.PROTOCOL_ERROR, f"the SMTP client failed at {stage} ({type(exc).__name__})"
    )


def _unreadable(message: str) -> str:
    """The detail of a reply aiosmtplib could not read: the server's line where the library
    quotes one, else what kind of trouble it was."""
    if message.startswith(MALFORMED_PREFIX):
        return "malformed reply: " + message[len(MALFORMED_PREFIX) :].strip()
    return "malformed or overlong reply"


def _quiet(_: str) -> None:
    pass


class SmtpSession:
    """One submission connection. Use as ``async with``: leaving it always closes the socket."""

    def __init__(self, server: ServerConfig, say: Say = _quiet) -> None:
        self.server = server
        self.say = say
        self.client = aiosmtplib.SMTP(local_hostname=LOCAL_HOSTNAME, timeout=None, start_tls=False)
        self.tls: TlsSession | None = None
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()

    def secret_forms(self, token: str | None) -> tuple[str, ...]:
        """The credential as :meth:`login` puts it on the wire, base64-encoded: the XOAUTH2
        response with the token, or the PLAIN response and the LOGIN password."""
        username = self.server.username
        if token is not None:
            return (auth_xoauth2_encode(username, token).decode(),)
        password = self.server.password.reveal() if self.server.password else ""
        _, login_password = auth_login_encode(username, password)
        return (auth_plain_encode(username, password).decode(), login_password.decode())

    def abort(self) -> None:
        """Drop the connection at once, without a QUIT."""
        self.client.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def open(self) -> None:
        """Resolve and connect (TCP only)."""
        self._sock = await net.open_socket(self.server)
        self.say(f"connected to {_peer(self._sock)}")

    async def greet(self) -> None:
        """Read the greeting (through implicit TLS where configured) and say EHLO."""
        sock, self._sock = self._sock, None
        implicit = self.server.tls == "implicit"
        try:
            response = await self.client.connect(
                sock=sock,
                hostname=net.server_name(self.server),
                port=None,
                use_tls=implicit,
                tls_context=net.tls_context(self.server.tls_config) if implicit else None,
            )
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, Exception):
                stage: SmtpStage = "tls" if implicit else "greeting"
                self._said_failure(exc, stage)
                raise failure(exc, stage) from None
            raise
        if implicit:
            self._note_tls()
        self._record(response)
        self._said(response)
        await self.ehlo()

    async def ehlo(self) -> None:
        self.say(f"C: EHLO {LOCAL_HOSTNAME}")
        try:
            self._said(await self.client.ehlo())
        except Exception as exc:
            self._said_failure(exc, "greeting")
            raise failure(exc, "greeting") from None

    async def starttls(self) -> None:
        """Upgrade to TLS and say EHLO again; a server that does not offer STARTTLS fails."""
        if not self.client.supports_extension("starttls"):
            raise ProbeFailure(Reason.TLS, "the server does not offer STARTTLS")
        self.say("C: STARTTLS")
        try:
            self._said(
                await self.client.starttls(
                    server_hostname=net.server_name(self.server),
                    tls_context=net.tls_context(self.server.tls_config),
                )
            )
        except Exception as exc:
            self._said_failure(exc, "tls")
            raise failure(exc, "tls") from None
        self._note_tls()
        await self.ehlo()

    async def login(self, token: str | None = None) -> None:
        """Authenticate with one mechanism: XOAUTH2 with a token, else PLAIN, else LOGIN.

        One attempt only: trying every mechanism in turn would triple the failed logins a
        server counts against the monitoring account.
        """
        if not self.client.supports_extension("auth"):
            raise ProbeFailure(Reason.AUTH_REJECTED, "the server offers no AUTH on this connection")
        methods = self.client.server_auth_methods
        username = self.server.username
        password = self.server.password.reveal() if self.server.password else ""
        secrets = (token or password, *self.secret_forms(token))
        try:
            if token is not None:
                if "xoauth2" not in methods:
                    raise ProbeFailure(
                        Reason.AUTH_REJECTED,
                        f"the server does not offer XOAUTH2 ({_offered(methods)})",
                    )
                self.say(f"C: AUTH XOAUTH2 <redacted: {username} and token>")
                self._said(await self.client.auth_xoauth2(username, token))
                return
            if "plain" in methods:
                self.say("C: AUTH PLAIN <redacted>")
                self._said(await self.client.auth_plain(username, password))
            elif "login" in methods:
                self.say("C: AUTH LOGIN <redacted>")
                self._said(await self.client.auth_login(username, password))
            else:
                raise ProbeFailure(
                    Reason.AUTH_REJECTED, f"no usable AUTH mechanism ({_offered(methods)})"
                )
        except ProbeFailure:
            raise
        except Exception as exc:
            said = _scrubbed(exc, secrets)
            self._said_failure(said, "auth")
            raise failure(said, "auth") from None

    async def send(self, mail_from: str, mail_to: str, message: bytes) -> None:
        """Submit one message; returns when the server has accepted it (its reply to DATA)."""
        try:
            self.say(f"C: MAIL FROM:<{mail_from}>")
            self._said(await self.client.mail(mail_from))
            self.say(f"C: RCPT TO:<{mail_to}>")
            self._said(await self.client.rcpt(mail_to))
            self.say(f"C: DATA ({len(message)} bytes)")
            self._said(await self.client.data(message))
        except Exception as exc:
            self._said_failure(exc, "send")
            raise failure(exc, "send") from None

    async def quit(self) -> None:
        """Say goodbye politely; a server that hangs up first is not a failure."""
        try:
            self.say("C: QUIT")
            self._said(await self.client.quit())
        except (SMTPException, OSError):
            pass
        finally:
            self.abort()

    def _record(self, greeting: SMTPResponse) -> None:
        """For ``probe --record``: the greeting (read before the protocol can be reached), then
        every line the protocol writes and reads, through the TLS upgrade too."""
        active, protocol = recorder(), self.client.protocol
        if active is None or protocol is None:
            return
        conn = active.connection("smtp")
        lines = greeting.message.splitlines() or [""]
        for index, line in enumerate(lines):
            mark = " " if index == len(lines) - 1 else "-"
            active.received(conn, f"{greeting.code}{mark}{line}\r\n".encode())
        write, data_received = protocol.write, protocol.data_received

        def recorded_write(data: bytes) -> None:
            active.sent(conn, data)
            write(data)

        def recorded_data_received(data: bytes) -> None:
            active.received(conn, data)
            data_received(data)

        protocol.write = recorded_write  # type: ignore[method-assign]
        protocol.data_received = recorded_data_received  # type: ignore[method-assign]

    def _note_tls(self) -> None:
        self.tls = net.tls_session(self.client.get_transport_info("ssl_object"))
        if self.tls:
            self.say(f"TLS established: {self.tls.version}")

    def _said(self, response: SMTPResponse) -> None:
        lines = response.message.splitlines() or [""]
        for index, line in enumerate(lines):
            self.say(f"S: {response.code}{' ' if index == len(lines) - 1 else '-'}{line}")

    def _said_failure(self, exc: BaseException, stage: SmtpStage) -> None:
        if isinstance(exc, SMTPResponseException) and exc.code >= 0:
            self.say(f"S: {exc.code} {exc.message}")
        else:
            self.say(f"failed: {failure(exc, stage).detail}")


def _scrubbed(exc: Exception, secrets: tuple[str, ...]) -> Exception:
    """A reply to AUTH without the credential, before its text is shortened for a detail: a
    server may echo the command with its argument."""
    if isinstance(exc, SMTPResponseException):
        return SMTPResponseException(exc.code, scrub(exc.message, secrets))
    return exc


def _offered(methods: list[str]) -> str:
    return "offered: " + (" ".join(methods).upper() or "none")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "server"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SmtpSender:
    """Submits the probe message over an authenticated submission session."""

    def __init__(self, server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
        self.server = server
        self.trace = trace
        self.tokens = tokens

    async def send(self, probe: ProbeMessage) -> float:
        async with SmtpSession(self.server, self.trace.say) as smtp:
            await log_in(smtp, self.server, PHASES, self.trace, self.tokens)
            with self.trace.phase(Phase.SMTP_SEND):
                await smtp.send(probe.mail_from, probe.mail_to, probe.raw)
            accepted = time.monotonic()
            try:
                async with asyncio.timeout(QUIT_WAIT):
                    await smtp.quit()
            except TimeoutError:
                pass
        return accepted


async def check_login(server: ServerConfig, trace: Trace, tokens: TokenCache) -> None:
    """smtp_login: can a client open a fresh submission session and log in?"""
    async with SmtpSession(server, trace.say) as session:
        await log_in(session, server, PHASES, trace, tokens)
        await session.quit()

"""SMTP submission, step by step, with every failure turned into a :class:`ProbeFailure`.

Built on aiosmtplib. Each step is a separate call so that a probe can time it as a phase; none
of them bounds its own time: the caller's deadline does.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from exporter import classify, net
from exporter.classify import SmtpStage
from exporter.config import ServerConfig
from exporter.outcome import ProbeFailure, Reason

LOCAL_HOSTNAME: Final = "mailbox-exporter.invalid"


def failure(exc: BaseException, stage: SmtpStage) -> ProbeFailure:
    """Translate an aiosmtplib or socket error raised during ``stage``."""
    if isinstance(exc, ProbeFailure):
        return exc
    cause = exc.__cause__
    if isinstance(exc, SMTPResponseException) and exc.code >= 200:
        reason = classify.smtp_reply(exc.code, exc.message, stage)
        return ProbeFailure(reason, f"{exc.code} {exc.message}"[:300])
    if isinstance(exc, SMTPResponseException):
        return ProbeFailure(Reason.PROTOCOL_ERROR, exc.message[:300])
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return ProbeFailure(Reason.TIMEOUT, "no answer from the server in time")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return net.tls_failure(exc)
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        return net.tls_failure(cause)
    if isinstance(exc, SMTPServerDisconnected):
        return ProbeFailure(Reason.NETWORK, "the server closed the connection")
    if isinstance(cause, OSError):
        return ProbeFailure(classify.os_error(cause), f"{cause.strerror or cause}")
    if isinstance(exc, OSError):
        return ProbeFailure(classify.os_error(exc), f"{exc.strerror or exc}")
    if isinstance(exc, SMTPException):
        return ProbeFailure(Reason.PROTOCOL_ERROR, exc.message[:300])
    return ProbeFailure(Reason.PROTOCOL_ERROR, f"{type(exc).__name__}: {exc}"[:300])


class SmtpSession:
    """One submission connection. Use as ``async with``: leaving it always closes the socket."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.client = aiosmtplib.SMTP(
            local_hostname=LOCAL_HOSTNAME,
            timeout=None,
            start_tls=False,
            validate_certs=True,
        )
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without a QUIT."""
        self.client.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def open(self) -> None:
        """Resolve and connect (TCP only)."""
        self._sock = await net.open_socket(self.server)

    async def greet(self) -> None:
        """Read the greeting (through implicit TLS where configured) and say EHLO."""
        sock, self._sock = self._sock, None
        implicit = self.server.tls == "implicit"
        try:
            await self.client.connect(
                sock=sock,
                hostname=self.server.host,
                port=None,
                use_tls=implicit,
                tls_context=net.tls_context() if implicit else None,
            )
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, Exception):
                raise failure(exc, "tls" if implicit else "greeting") from None
            raise
        await self.ehlo()

    async def ehlo(self) -> None:
        try:
            await self.client.ehlo()
        except Exception as exc:
            raise failure(exc, "greeting") from None

    async def starttls(self) -> None:
        """Upgrade to TLS and say EHLO again; a server that does not offer STARTTLS fails."""
        if not self.client.supports_extension("starttls"):
            raise ProbeFailure(Reason.TLS, "the server does not offer STARTTLS")
        try:
            await self.client.starttls(
                server_hostname=self.server.host, tls_context=net.tls_context()
            )
            await self.client.ehlo()
        except Exception as exc:
            raise failure(exc, "tls") from None

    async def login(self) -> None:
        """Authenticate with one mechanism (PLAIN, else LOGIN): one failed attempt, not three."""
        methods = self.client.server_auth_methods
        if not self.client.supports_extension("auth"):
            raise ProbeFailure(Reason.AUTH_REJECTED, "the server offers no AUTH on this connection")
        username, password = self.server.username, self.server.password.reveal()
        try:
            if "plain" in methods:
                await self.client.auth_plain(username, password)
            elif "login" in methods:
                await self.client.auth_login(username, password)
            else:
                offered = " ".join(methods).upper() or "none"
                raise ProbeFailure(
                    Reason.AUTH_REJECTED, f"no usable AUTH mechanism (offered: {offered})"
                )
        except Exception as exc:
            raise failure(exc, "auth") from None

    async def send(self, mail_from: str, mail_to: str, message: bytes) -> None:
        """Submit one message; returns when the server has accepted it (its reply to DATA)."""
        try:
            await self.client.mail(mail_from)
            await self.client.rcpt(mail_to)
            await self.client.data(message)
        except Exception as exc:
            raise failure(exc, "send") from None

    async def quit(self) -> None:
        """Say goodbye politely; a server that hangs up first is not a failure."""
        try:
            await self.client.quit()
        except (SMTPException, OSError):
            pass
        finally:
            self.abort()

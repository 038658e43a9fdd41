"""Reaching a server: name resolution, TCP connect, TLS contexts.

Both protocols open their socket here so that a DNS failure, a refusal and an unreachable
network are told apart the same way for SMTP and IMAP. Callers bound the time with the
probe's deadline; nothing here waits without one.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from exporter import classify
from exporter.config import ServerConfig
from exporter.outcome import ProbeFailure, Reason


async def open_socket(server: ServerConfig) -> socket.socket:
    """Resolve ``server.host`` and return a connected non-blocking TCP socket.

    Addresses are tried in the resolver's order; the last error decides the reason.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeFailure(Reason.DNS, f"cannot resolve {server.host}: {exc.strerror}") from None
    if not infos:
        raise ProbeFailure(Reason.DNS, f"{server.host} has no addresses")
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert last is not None
    raise ProbeFailure(
        classify.os_error(last),
        f"cannot connect to {server.host} port {server.port}: {last.strerror or last}",
    )


def tls_context() -> ssl.SSLContext:
    """A client context that verifies the server against the system trust store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_failure(exc: BaseException) -> ProbeFailure:
    """Describe a failed TLS handshake without the library's noise."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeFailure(Reason.TLS, f"certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ProbeFailure(Reason.TLS, f"TLS handshake failed: {exc.reason or exc}")
    return ProbeFailure(classify.os_error(exc), f"TLS handshake failed: {exc}")

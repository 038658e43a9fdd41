"""Reaching a server: name resolution, TCP connect, TLS contexts.

Both protocols open their socket here so that a DNS failure, a refusal and an unreachable
network are told apart the same way for SMTP and IMAP. Callers bound the time with the
probe's deadline; nothing here waits without one.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from exporter import classify
from exporter.config import ServerConfig, TlsConfig
from exporter.outcome import ProbeFailure, Reason
from exporter.result import TlsSession


async def open_socket(server: ServerConfig) -> socket.socket:
    """Resolve ``server.host`` and return a connected non-blocking TCP socket.

    Addresses are tried in the resolver's order. An address given as the host is used as it
    is: the resolver runs in a thread, which costs more than the rest of a connect.
    """
    loop = asyncio.get_running_loop()
    try:
        address = ipaddress.ip_address(server.host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return await _connect(
            loop, [(family, socket.SOCK_STREAM, 0, "", (server.host, server.port))], server
        )
    try:
        infos = await loop.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeFailure(Reason.DNS, f"cannot resolve {server.host}: {exc.strerror}") from None
    if not infos:
        raise ProbeFailure(Reason.DNS, f"{server.host} has no addresses")
    return await _connect(loop, infos, server)


async def _connect(
    loop: asyncio.AbstractEventLoop, infos: list[Any], server: ServerConfig
) -> socket.socket:
    """Connect to the first address that accepts; the last error decides the reason."""
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


@functools.lru_cache(maxsize=64)
def tls_context(config: TlsConfig) -> ssl.SSLContext:
    """A client context for ``config``: the system trust store unless a CA file is given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if config.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    )
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_name(server: ServerConfig) -> str:
    """The name the server's certificate must carry (and the SNI sent)."""
    return server.tls_config.server_name or server.host


def tls_session(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsSession | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return TlsSession(
        version=ssl_object.version() or "unknown",
        not_after=certificate_not_after(der) if der else None,
    )


def certificate_not_after(der: bytes) -> float | None:
    """The notAfter of a DER certificate, read without verifying it.

    Certificates that failed verification (with ``insecure_skip_verify``) still have an
    expiry worth exporting, and the standard library only decodes verified ones.
    """
    try:
        tbs = _der_children(der, 0)[0]
        fields = _der_children(der, tbs[0])
        validity = fields[4] if der[fields[0][0]] == 0xA0 else fields[3]
        tag, start, end = _der_children(der, validity[0])[1]
        text = der[start:end].decode("ascii")
    except (IndexError, UnicodeDecodeError):
        return None
    fmt = "%y%m%d%H%M%SZ" if der[tag] == 0x17 else "%Y%m%d%H%M%SZ"
    try:
        return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _der_children(der: bytes, start: int) -> list[tuple[int, int, int]]:
    """(tag offset, content start, content end) of each element inside the one at ``start``."""
    _, content, end = _der_element(der, start)
    children, offset = [], content
    while offset < end:
        element = _der_element(der, offset)
        children.append(element)
        offset = element[2]
    return children


def _der_element(der: bytes, offset: int) -> tuple[int, int, int]:
    length = der[offset + 1]
    header = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[offset + 2 : offset + 2 + count], "big")
        header += count
    return offset, offset + header, offset + header + length


def tls_failure(exc: BaseException) -> ProbeFailure:
    """Describe a failed TLS handshake without the library's noise."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeFailure(Reason.TLS, f"certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ProbeFailure(Reason.TLS, f"TLS handshake failed: {exc.reason or exc}")
    return ProbeFailure(classify.os_error(exc), f"TLS handshake failed: {exc}")

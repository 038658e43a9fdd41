"""The code changes proposed from the profile, applied by monkeypatching for measurement only.

``apply()`` replaces ``exporter.message.build`` with a template (same headers and body) and
makes ``exporter.net.open_socket`` skip the thread-pool ``getaddrinfo`` for IP literals.
``apply_poll_backoff()`` makes the round trip's polling (IDLE off) start with short pauses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Final

from bench.micro import template_build
from exporter import classify, message, net
from exporter.config import ServerConfig, Target
from exporter.imap import ImapSession
from exporter.message import ProbeIds
from exporter.outcome import ProbeFailure, Reason
from exporter.probes import roundtrip

POLL_FIRST_STEP: Final = 0.025

_original_open_socket = net.open_socket


async def open_socket(server: ServerConfig) -> socket.socket:
    """``net.open_socket``, but an IP literal is connected to without resolving it."""
    try:
        address = ipaddress.ip_address(server.host)
    except ValueError:
        return await _original_open_socket(server)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    except OSError as exc:
        sock.close()
        raise ProbeFailure(
            classify.os_error(exc),
            f"cannot connect to {server.host} port {server.port}: {exc.strerror or exc}",
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def apply() -> None:
    message.build = template_build  # type: ignore[assignment]
    net.open_socket = open_socket  # type: ignore[assignment]


async def _watch_backoff(
    imap: ImapSession, target: Target, ids: ProbeIds, examined: set[int], deadline: float
) -> tuple[float, list[int]]:
    """``roundtrip._watch`` with one change: without IDLE, the pause between polls starts at
    25 ms and doubles up to ``poll_interval``, instead of always being ``poll_interval``."""
    idle = imap.has("IDLE") and target.imap.idle
    step = POLL_FIRST_STEP
    while True:
        arrived: float | None
        if idle:
            remaining = deadline - time.monotonic()
            arrived = await imap.wait_for_new_mail(max(0.0, min(remaining, roundtrip.IDLE_RENEWAL)))
            await imap.idle_done()
        else:
            await imap.noop()
            arrived = time.monotonic()
        uids = await roundtrip._find(imap, ids, examined) if arrived is not None else []
        if uids:
            assert arrived is not None
            return arrived, uids
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProbeFailure(
                Reason.NOT_DELIVERED,
                "the probe message was accepted but had not arrived when the probe gave up",
            )
        if idle:
            await imap.idle_start()
        else:
            await asyncio.sleep(min(step, target.imap.poll_interval, remaining))
            step *= 2


def apply_poll_backoff() -> None:
    roundtrip._watch = _watch_backoff  # type: ignore[assignment]

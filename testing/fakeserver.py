"""Scripted servers for what a real mail server will not do on demand: hang, dribble, send
garbage or endless data, hang up or reset at chosen points.

Each server speaks just enough IMAP or SMTP to bring a probe to the point where it misbehaves.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Server = Callable[[str, str, bytes], Handler]
"""A scripted server: what to do, at which command, with which reply."""

IMAP_CAPABILITIES = b"IMAP4rev1 IDLE UIDPLUS STARTTLS AUTH=PLAIN"


async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the connection and say nothing, ever."""
    await reader.read()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _until_client_leaves(reader: asyncio.StreamReader) -> None:
    """Say nothing more; return once the client has gone (so no socket outlives it)."""
    while await reader.read(65536):
        pass


def imap(misbehave: str, at: str = "", reply: bytes = b"") -> Handler:
    """An IMAP server that misbehaves (``misbehave``) when the client sends ``at``.

    ``at`` is a command name (LOGIN, SELECT, IDLE, STARTTLS, ...) or "" for the greeting.
    ``misbehave="reply"`` answers with ``reply`` instead: the whole greeting line, or the
    tagged answer's text (``NO Server Unavailable. 15``), as a provider does in an outage.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def act(tag: bytes = b"") -> bool:
            if misbehave == "reply":
                writer.write((tag + b" " if tag else b"") + reply + b"\r\n")
                await writer.drain()
                if not tag:
                    await _until_client_leaves(reader)
                return True
            if misbehave == "silent":
                await _until_client_leaves(reader)
            elif misbehave == "dribble":
                for byte in b"* OK ready\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1)
            elif misbehave == "endless_line":
                while True:
                    writer.write(b"* OK " + b"x" * 65536)
                    await writer.drain()
            elif misbehave == "huge_literal":
                writer.write(b"* OK {104857600}\r\n")
                while True:
                    writer.write(b"y" * 65536)
                    await writer.drain()
            elif misbehave == "garbage":
                writer.write(b"\xff\xfe\x00garbage \xc3\x28 without a tag\r\nZZZ9 OK what\r\n")
                await writer.drain()
                await _until_client_leaves(reader)
            elif misbehave == "bye":
                writer.write(b"* BYE Server shutting down\r\n")
                await writer.drain()
                writer.close()
                return True
            elif misbehave == "reset":
                _reset(writer)
                return True
            return False

        if not at and await act():
            return
        writer.write(b"* OK [CAPABILITY " + IMAP_CAPABILITIES + b"] fake ready\r\n")
        await writer.drain()
        idle_tag = b""
        while line := await reader.readline():
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"UID":
                command = rest.split(b" ", 2)[1].upper()
            if tag.upper() == b"DONE":
                if at == "DONE":
                    await act()
                    return
                writer.write(idle_tag + b" OK idle done\r\n")
                await writer.drain()
                continue
            if command == b"STARTTLS" and misbehave == "no_handshake":
                writer.write(tag + b" OK begin TLS\r\n")
                await writer.drain()
                await _until_client_leaves(reader)
            if command.decode() == at and await act(tag):
                if misbehave == "reply":
                    continue
                return
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + IMAP_CAPABILITIES + b"\r\n" + tag + b" OK done\r\n")
            elif command == b"SELECT":
                writer.write(
                    b"* 0 EXISTS\r\n* OK [UIDNEXT 1] next\r\n" + tag + b" OK [READ-WRITE] done\r\n"
                )
            elif command == b"IDLE":
                idle_tag = tag
                writer.write(b"+ idling\r\n")
            elif command == b"STARTTLS":
                writer.write(tag + b" OK begin TLS\r\n")
            else:
                writer.write(tag + b" OK done\r\n")
            await writer.drain()

    return handler


def smtp(misbehave: str, at: str = "", reply: bytes = b"") -> Handler:
    """An SMTP server that misbehaves when the client sends ``at`` ("" for the greeting).

    ``misbehave="reply"`` answers with ``reply`` (``421 4.3.2 Service not active``) and hangs
    up, as a provider does in an outage.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def act() -> bool:
            if misbehave == "reply":
                writer.write(reply + b"\r\n")
                await writer.drain()
                writer.close()
                return True
            if misbehave == "silent":
                await _until_client_leaves(reader)
            elif misbehave == "dribble":
                for byte in b"220 ready\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1)
            elif misbehave == "endless_line":
                while True:
                    writer.write(b"220-" + b"x" * 65536)
                    await writer.drain()
            elif misbehave == "garbage":
                writer.write(b"\xff\xfe not a reply \xc3\x28\r\n")
                await writer.drain()
                await _until_client_leaves(reader)
            elif misbehave == "reset":
                _reset(writer)
                return True
            elif misbehave == "hangup":
                writer.close()
                return True
            return False

        if not at and await act():
            return
        writer.write(b"220 fake ESMTP\r\n")
        await writer.drain()
        while line := await reader.readline():
            command = line.strip().split(b" ", 1)[0].upper().decode(errors="replace")
            if command == "STARTTLS" and misbehave == "no_handshake":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await _until_client_leaves(reader)
            if command == at and await act():
                return
            if command == "EHLO":
                writer.write(b"250-fake\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
            elif command == "STARTTLS":
                writer.write(b"220 go ahead\r\n")
            elif command == "AUTH":
                writer.write(b"235 2.7.0 ok\r\n")
            elif command == "DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                writer.write(b"250 2.0.0 queued\r\n")
            elif command == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    return handler


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """Run ``handler`` for every connection on a free 127.0.0.1 port; yield the port."""
    connections: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            connections.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

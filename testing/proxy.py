"""A TCP proxy on 127.0.0.1 in front of one server, whose path a test can cut and restore: what a
location's broken network looks like to the exporter behind it (connections refused), while the
server itself and every other path to it keep working."""

from __future__ import annotations

import asyncio
import contextlib

from testing.exporter_process import free_port

CONNECT_SECONDS = 5.0
"""Longest the proxy waits for the server to accept a connection."""
IDLE_SECONDS = 120.0
"""A proxied connection with nothing to say either way for this long is closed."""
CHUNK = 65536


class Proxy:
    """Forwards connections to ``127.0.0.1:upstream`` from ``127.0.0.1:port``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (again, after :meth:`cut`) on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def cut(self) -> None:
        """Refuse new connections and drop those open: the path is gone."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._open):
            task.cancel()
        for task in list(self._open):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            # Since Python 3.12 this waits for the connections too: they are gone by now.
            async with asyncio.timeout(CONNECT_SECONDS):
                await server.wait_closed()

    async def close(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        self.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, TimeoutError):
            pass
        finally:
            # Whatever ended it (a side closing, an error, a cut): both sides see it end.
            for side in (writer, up_writer):
                if side is not None:
                    side.close()
            self._open.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file, then pass the end of file on."""
    while True:
        async with asyncio.timeout(IDLE_SECONDS):
            data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        async with asyncio.timeout(IDLE_SECONDS):
            await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()

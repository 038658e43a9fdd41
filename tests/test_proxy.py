"""The harness's TCP proxy (testing/proxy.py): it forwards both ways, and a cut path refuses
connections and drops those open until it is restored, on the same port."""

from __future__ import annotations

import asyncio

import pytest

from testing.proxy import Proxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async with asyncio.timeout(5):
        writer.write(await reader.readline())
        await writer.drain()
    writer.close()


async def _ask(port: int) -> bytes:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        await writer.drain()
        answer = await reader.readline()
    writer.close()
    return answer


async def test_a_cut_path_refuses_until_restored() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]
    proxy = Proxy(upstream)
    await proxy.start()
    try:
        assert await _ask(proxy.port) == b"hello\n"
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            while proxy.connections < 2:
                await asyncio.sleep(0.01)
        await proxy.cut()
        async with asyncio.timeout(5):
            assert await reader.read() == b"", "an open connection is dropped"
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await _ask(proxy.port)
        await proxy.start()
        assert await _ask(proxy.port) == b"hello\n"
        assert proxy.connections == 3
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()

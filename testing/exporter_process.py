"""Running the exporter as users do: a separate process, and a client for its endpoints."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from testing.mailstack import _free_ports

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A port for a server to listen on, from this test process's own share of the harness's
    ports: outside the kernel's ephemeral range, so that no outgoing connection of this or
    another test process takes it before the server binds it."""
    (port,) = _free_ports(1)
    return port


class Running:
    """A running exporter process and a client for its HTTP endpoints."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, log: Path, session: aiohttp.ClientSession
    ) -> None:
        self.process, self.port, self.log, self.session = process, port, log, session
        self.url = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.url + path) as response:
            return response.status, await response.text()

    async def post(self, path: str) -> tuple[int, str]:
        async with self.session.post(self.url + path) as response:
            return response.status, await response.text()

    async def samples(self) -> Samples:
        status, text = await self.get("/metrics")
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def until(
        self,
        predicate: Callable[[Samples], bool],
        seconds: float = 30,
    ) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exporter exited:\n{self.log.read_text()}")
            if predicate(await self.samples()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"condition not met in {seconds}s:\n{self.log.read_text()[-3000:]}")


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def start(
    config: Path, tmp_path: Path, *args: str, storage: Path | None = None
) -> AsyncIterator[Running]:
    """Run the exporter on ``config`` until the caller is done; its log and (unless
    ``storage`` names another) its state directory are kept in ``tmp_path``."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--storage.path",
                str(storage if storage is not None else tmp_path / "state"),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            running = Running(process, port, log, session)
            for _ in range(100):
                try:
                    if (await running.get("/-/ready"))[0] == 200:
                        break
                except aiohttp.ClientConnectionError:
                    pass
                if process.poll() is not None:
                    raise AssertionError(log.read_text())
                await asyncio.sleep(0.1)
            yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise

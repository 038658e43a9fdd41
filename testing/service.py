"""What the harness's servers share: ``with server:`` starts it and always stops it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp

READY_TRIES = 150
READY_PAUSE = 0.2
"""A process gets 30 s to become ready."""
LOG_TAIL = 3000
"""Characters of its log shown when it fails."""
STOP_GRACE = 10.0


class Service:
    """A server of the harness, run with ``start()`` and ``stop()``, or as a context."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def until_ready(
    name: str,
    process: subprocess.Popen[bytes],
    session: aiohttp.ClientSession,
    url: str,
    log: Path,
    tries: int = READY_TRIES,
) -> None:
    """Wait for ``url`` (a Prometheus-style ``/-/ready``) to answer 200; fail with the end of
    ``log`` if the process exits or never gets there."""
    for _ in range(tries):
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{log.read_text()[-LOG_TAIL:]}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(READY_PAUSE)
    raise AssertionError(f"{name} never became ready:\n{log.read_text()[-LOG_TAIL:]}")


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """Terminate ``process``, killing it if it outlives ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

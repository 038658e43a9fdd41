"""Runs every (target, check) on its own interval.

Each pair has its own task: its first run is jittered across one interval so that many
targets do not all start together, a run never overlaps the previous one, and runs that a
slow probe made impossible are skipped rather than queued. A global semaphore bounds how
many probes are in flight. Since every probe is bounded by its timeout, one hung server
holds at most its own task.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from exporter import probes
from exporter.config import Config, Target
from exporter.message import ProbeIds
from exporter.oauth import TokenCache
from exporter.outcome import Check
from exporter.probes import ProbeResult
from exporter.probes.roundtrip import SentProbes

log = logging.getLogger(__name__)

Key = tuple[str, Check]


class Scheduler:
    """Owns the probe tasks; :meth:`apply` makes them match a configuration."""

    def __init__(self, on_result: Callable[[ProbeResult], None], ids: ProbeIds) -> None:
        self.ids = ids
        self._on_result = on_result
        self._tasks: dict[Key, tuple[Target, asyncio.Task[None]]] = {}
        self._sent: dict[str, SentProbes] = {}
        self._limit = asyncio.Semaphore(32)
        self._limit_size = 32
        self.tokens = TokenCache()

    def apply(self, config: Config) -> None:
        """Start, restart and stop tasks; pairs whose target is unchanged keep running."""
        if config.max_concurrent_probes != self._limit_size:
            self._limit_size = config.max_concurrent_probes
            self._limit = asyncio.Semaphore(self._limit_size)
        wanted = {(t.name, c): t for t in config.targets for c in t.checks}
        for key in list(self._tasks):
            target, task = self._tasks[key]
            if wanted.get(key) != target:
                task.cancel()
                del self._tasks[key]
        for key, target in wanted.items():
            if key not in self._tasks:
                task = asyncio.create_task(
                    self._run(target, key[1]), name=f"probe {key[0]} {key[1]}"
                )
                self._tasks[key] = (target, task)
        names = {t.name for t in config.targets}
        self._sent = {name: sent for name, sent in self._sent.items() if name in names}

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.tokens.close()

    async def _run(self, target: Target, check: Check) -> None:
        interval = target.interval(check)
        planned = time.monotonic() + random.uniform(0, interval)
        sent = self._sent.setdefault(target.name, SentProbes())
        while True:
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            async with self._limit:
                result = await probes.run(
                    target, check, sent=sent, tokens=self.tokens, ids=self.ids
                )
            try:
                self._on_result(result)
            except Exception:
                log.exception("recording a probe result failed")
            now = time.monotonic()
            planned += interval
            if planned < now:
                planned += (now - planned) // interval * interval + interval

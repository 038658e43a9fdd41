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
from collections.abc import Awaitable, Callable

from exporter.config import Config, Target
from exporter.outcome import Check
from exporter.result import ProbeResult

log = logging.getLogger(__name__)

Key = tuple[str, Check]
RunProbe = Callable[[Target, Check], Awaitable[ProbeResult]]
"""Runs one probe of a check of a target; never raises but for cancellation."""


class Scheduler:
    """Owns the probe tasks; :meth:`apply` makes them match a configuration.

    ``run`` does the probing and ``rng`` places each pair's first run, both given so that
    tests can drive the schedule without mail servers. A provider that asks us to wait
    (``Retry-After``) holds back every check of that target, and no other.
    """

    def __init__(
        self,
        run: RunProbe,
        on_result: Callable[[ProbeResult], None],
        rng: random.Random,
        max_concurrent: int,
    ) -> None:
        self._run_probe = run
        self._on_result = on_result
        self._rng = rng
        self._not_before: dict[str, float] = {}
        self._tasks: dict[Key, tuple[Target, asyncio.Task[None]]] = {}
        self._limit = asyncio.Semaphore(max_concurrent)
        self._limit_size = max_concurrent

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
        self._not_before = {n: t for n, t in self._not_before.items() if n in names}

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, target: Target, check: Check) -> None:
        interval = target.interval(check)
        planned = time.monotonic() + self._rng.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            held = self._not_before.get(target.name, 0.0) - time.monotonic()
            if held > 0:
                await asyncio.sleep(held)
            async with self._limit:
                result = await self._run_probe(target, check)
            if result.found.retry_after is not None:
                self._not_before[target.name] = time.monotonic() + result.found.retry_after
            try:
                self._on_result(result)
            except Exception:
                log.exception("recording a probe result failed")
            now = time.monotonic()
            planned += interval
            if planned < now:
                planned += (now - planned) // interval * interval + interval

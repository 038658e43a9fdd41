"""The scheduler, driven by a stand-in run function and a seeded random source: no mail
servers, only time."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from itertools import pairwise

from exporter import config
from exporter.outcome import Check
from exporter.result import Findings, ProbeResult
from exporter.scheduler import Scheduler

CONFIG = """
defaults:
  smtp: {host: h, username: u@x.org, password: p}
  imap: {host: h, username: u@x.org, password: p}
  checks: [smtp_login, imap_login]
targets:
  - name: a
    interval: 200ms
    timeout: 100ms
  - name: b
    interval: 200ms
    timeout: 100ms
"""


class Recorder:
    """Stands in for probing: notes when each (target, check) runs, and for how long."""

    def __init__(self, duration: float = 0.0, retry_after: dict[str, float] | None = None):
        self.duration = duration
        self.retry_after = retry_after or {}
        self.starts: dict[tuple[str, Check], list[float]] = defaultdict(list)
        self.running: set[tuple[str, Check]] = set()
        self.overlapped = False

    async def run(self, target: config.Target, check: Check) -> ProbeResult:
        key = (target.name, check)
        self.overlapped |= key in self.running
        self.running.add(key)
        self.starts[key].append(time.monotonic())
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.running.discard(key)
        wait = self.retry_after.pop(target.name, None)
        return ProbeResult(
            target=target.name,
            check=check,
            success=True,
            started=time.time(),
            duration=self.duration,
            found=Findings(retry_after=wait),
        )


def _scheduler(recorder: Recorder, results: list[ProbeResult]) -> Scheduler:
    return Scheduler(recorder.run, results.append, random.Random(7), max_concurrent=32)


LAG = 0.12
"""Seconds a start may lag its slot on a busy machine; a missed slot would be 0.2."""


async def test_every_pair_runs_on_its_interval_with_a_jittered_start() -> None:
    recorder, results = Recorder(), list[ProbeResult]()
    scheduler = _scheduler(recorder, results)
    began = time.monotonic()
    scheduler.apply(config.parse(CONFIG))
    await asyncio.sleep(1.05)
    await scheduler.stop()
    assert set(recorder.starts) == {
        (t, c) for t in "ab" for c in (Check.SMTP_LOGIN, Check.IMAP_LOGIN)
    }
    firsts = [times[0] - began for times in recorder.starts.values()]
    # Tolerances allow for a loaded machine (the suite runs in parallel): a start may come up
    # to LAG late, and the one after it that much early against its slot.
    assert all(0 <= first <= 0.2 + LAG for first in firsts), firsts
    assert len({round(first, 3) for first in firsts}) > 1, "first runs are spread out"
    for times in recorder.starts.values():
        gaps = [later - earlier for earlier, later in pairwise(times)]
        assert all(0.2 - LAG <= gap <= 0.2 + LAG for gap in gaps), gaps
    assert len(results) == sum(len(times) for times in recorder.starts.values())


async def test_a_slow_probe_never_overlaps_and_missed_runs_are_skipped() -> None:
    recorder, results = Recorder(duration=0.45), list[ProbeResult]()
    scheduler = _scheduler(recorder, results)
    scheduler.apply(config.parse(CONFIG))
    await asyncio.sleep(1.5)
    await scheduler.stop()
    assert not recorder.overlapped
    for times in recorder.starts.values():
        gaps = [later - earlier for earlier, later in pairwise(times)]
        # runs fall on the 200 ms grid after a 450 ms probe: the next slot, not a queue
        assert all(0.45 <= gap <= 0.65 for gap in gaps), gaps


async def test_retry_after_holds_back_that_target_and_no_other() -> None:
    recorder, results = Recorder(retry_after={"a": 0.8}), list[ProbeResult]()
    scheduler = _scheduler(recorder, results)
    scheduler.apply(config.parse(CONFIG))
    await asyncio.sleep(1.2)
    await scheduler.stop()
    first_a = min(times[0] for (t, _), times in recorder.starts.items() if t == "a")
    later_a = sorted(
        start
        for (t, _), times in recorder.starts.items()
        if t == "a"
        for start in times
        if start > first_a + 0.01
    )
    assert later_a and later_a[0] >= first_a + 0.8 - 0.01, "both checks of a wait 0.8 s"
    b_runs = sum(len(times) for (t, _), times in recorder.starts.items() if t == "b")
    assert b_runs >= 2 * 5, "b keeps its schedule"


async def test_apply_keeps_unchanged_pairs_and_stops_removed_ones() -> None:
    recorder, results = Recorder(), list[ProbeResult]()
    scheduler = _scheduler(recorder, results)
    scheduler.apply(config.parse(CONFIG))
    await asyncio.sleep(0.5)
    scheduler.apply(config.parse(CONFIG.split("  - name: b")[0]))
    stopped = time.monotonic()
    await asyncio.sleep(0.5)
    await scheduler.stop()
    b_after = [
        start
        for (t, _), times in recorder.starts.items()
        if t == "b"
        for start in times
        if start > stopped
    ]
    assert b_after == []
    a_times = recorder.starts[("a", Check.SMTP_LOGIN)]
    gaps = [later - earlier for earlier, later in pairwise(a_times)]
    assert all(gap <= 0.3 for gap in gaps), "a kept running through the reload"

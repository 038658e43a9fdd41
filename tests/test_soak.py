"""A short fault soak (the full one: `python -m bench.soak`; figures in docs/safety.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.soak import soak


@pytest.mark.services
async def test_a_short_soak_keeps_every_guarantee(tmp_path: Path) -> None:
    report = await soak(
        tmp_path, roundtrips=120, targets=4, interval=1.5, probe_timeout=1.5, existing=40, seed=7
    )
    summary = report.summary()
    assert report.crashed == "", summary
    assert sum(report.faults.values()) >= 3, summary
    assert report.reasons, "faults made some round trips fail"
    assert report.successes > 0
    assert report.existing_after == report.existing_before == 40, summary
    assert report.probe_messages_left == 0, summary
    assert report.recovery_seconds, summary
    assert max(report.recovery_seconds) <= 2 * report.interval, summary

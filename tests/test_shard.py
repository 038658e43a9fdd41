"""Sharding: every target in exactly one shard, shards near even, replicas that agree."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from pathlib import Path

import pytest

from exporter import config
from exporter.app import Exporter
from exporter.config.model import Target
from exporter.outcome import Check
from exporter.result import ProbeResult
from exporter.shard import Shard, assign, parse
from testing.exporter_process import start
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_context, target_yaml

NAMES = [f"target-{i:04d}" for i in range(1000)]


@pytest.mark.parametrize("count", range(1, 11))
def test_a_thousand_targets_split_evenly(count: int) -> None:
    shards = assign(NAMES, count)
    assert set(shards) == set(NAMES)
    sizes = [sum(1 for s in shards.values() if s == index) for index in range(count)]
    assert sum(sizes) == len(NAMES), "each name in exactly one shard"
    even = len(NAMES) / count
    assert all(abs(size - even) <= 0.2 * even for size in sizes), sizes


def test_the_split_is_stable() -> None:
    before = assign(NAMES, 5)
    assert assign(reversed(NAMES), 5) == before, "independent of the order in the file"
    after = assign([*NAMES, "target-new"], 5)
    moved = [name for name in NAMES if before[name] != after[name]]
    assert len(moved) <= 10, moved


@pytest.mark.parametrize("text", ["3/3", "1", "-1/2", "a/b", "0/0"])
def test_bad_shard_arguments(text: str) -> None:
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        parse(text)


async def test_replicas_split_the_targets_between_them(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    text = "targets:\n" + "".join(
        target_yaml(mailstack, user, name=f"t{i}", interval="10m", timeout="5s") for i in range(12)
    )
    path = tmp_path / "c.yml"
    path.write_text(text)
    expected = assign([t.name for t in config.parse(text).targets], 2)
    seen: list[set[str]] = []
    for index in range(2):
        async for running in start(path, tmp_path / f"r{index}", "--shard", f"{index}/2"):
            _, exposition = await running.get("/metrics")
            seen.append({name for name in expected if f'target="{name}"' in exposition})
    assert seen[0] | seen[1] == set(expected)
    assert not seen[0] & seen[1]
    assert seen[0] == {name for name, shard in expected.items() if shard == 0}


class _First(random.Random):
    """Plans every scheduled probe's first run at once."""

    def uniform(self, a: float, b: float) -> float:
        return a


class _Instant(Exporter):
    """An exporter whose scheduled probes answer at once, as from a server that always
    accepts: what is under test is who probes which target, not the protocol."""

    async def run_scheduled(self, target: Target, check: Check) -> ProbeResult:
        return ProbeResult(
            target=target.name, check=check, success=True, started=time.time(), duration=0.0
        )


@pytest.mark.services  # four exporters of 10,000 targets: not in the quick tier
async def test_four_shards_of_ten_thousand_targets_probe_each_target_exactly_once(
    tmp_path: Path,
) -> None:
    """Four exporters given one configuration of 10,000 targets, each with its --shard: every
    target's check shows one probe in the /metrics of exactly one of them."""
    names = [f"mailbox-{i:05d}" for i in range(10_000)]
    text = "targets:\n" + "".join(
        f"  - name: {name}\n    checks: [smtp_login]\n    interval: 1h\n"
        f"    smtp: {{host: 127.0.0.1, port: 25, tls: none, username: u{i}@x.test, password: p}}\n"
        for i, name in enumerate(names)
    )
    assert len(text) > 1024 * 1024, "a configuration written out in full, as generated"
    loaded = config.parse(text)
    replicas = [
        _Instant(tmp_path / "c.yml", Shard(index, 4), probe_context(), _First(), False)
        for index in range(4)
    ]
    probed: list[set[str]] = []
    logging.disable(logging.INFO)
    try:
        for replica in replicas:
            replica.start(loaded)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = sum(
                state.checks[Check.SMTP_LOGIN].probes
                for replica in replicas
                for state in replica.store.targets.values()
            )
            if done >= len(names):
                break
            await asyncio.sleep(0.1)
        for replica in replicas:
            exposition = (await replica.exposition()).decode()
            probed.append(
                set(re.findall(r'mailbox_probes_total\{target="([^"]+)",[^}]*\} 1\n', exposition))
            )
    finally:
        logging.disable(logging.NOTSET)
        for replica in replicas:
            await replica.stop()
    assert sum(len(shard) for shard in probed) == len(names), [len(s) for s in probed]
    assert set().union(*probed) == set(names), "every target probed"
    even = len(names) / 4
    assert all(abs(len(shard) - even) <= 0.06 * even for shard in probed), [len(s) for s in probed]

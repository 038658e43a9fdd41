"""Sharding: every target in exactly one shard, shards near even, replicas that agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import config
from exporter.shard import assign, parse
from testing.exporter_process import start
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

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

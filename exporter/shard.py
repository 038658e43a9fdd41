"""Splitting targets among processes with no coordination: ``--shard INDEX/COUNT``.

Every replica reads the same configuration, so every replica can compute the same split on
its own. Targets are taken in the order of a stable hash of their names; each goes to the
shard its hash names, unless that shard already holds 5% more than an even share, in which
case it goes to the next shard with room (consistent hashing with bounded loads). Shards stay
within a few per cent of even, and adding or removing a target moves only a handful of
others. Replicas must run the same target list: while a new configuration is being rolled
out, a target may briefly be probed by two replicas or by none.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from exporter.config import Config

SLACK = 1.05
"""How far above an even share a shard may fill before targets spill to the next one."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def select(self, config: Config) -> Config:
        """The configuration this shard runs: its own targets only."""
        if self.count == 1:
            return config
        shards = assign((t.name for t in config.targets), self.count)
        return replace(
            config, targets=tuple(t for t in config.targets if shards[t.name] == self.index)
        )


ALL = Shard(0, 1)


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def assign(names: Iterable[str], count: int) -> dict[str, int]:
    """The shard of every target name, the same in every process given the same names."""
    ordered = sorted(set(names), key=lambda name: (_hash(name), name))
    capacity = max(1, math.ceil(len(ordered) / count * SLACK))
    load = [0] * count
    shards: dict[str, int] = {}
    for name in ordered:
        shard = _hash(name) % count
        while load[shard] >= capacity:
            shard = (shard + 1) % count
        load[shard] += 1
        shards[name] = shard
    return shards


def parse(text: str) -> Shard:
    """``INDEX/COUNT``, 0-based: ``0/3``, ``1/3``, ``2/3``."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"expected INDEX/COUNT with 0 <= INDEX < COUNT, such as 0/3; got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))

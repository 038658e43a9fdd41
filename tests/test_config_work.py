"""The work of reading a large configuration: the cycle collector stays out of it (it walked
every object built so far, again and again) and is left as it was found."""

from __future__ import annotations

import gc
import inspect
import sys
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

import pytest

from exporter import cli, config
from exporter.config.model import ConfigError
from testing.targets import short_config

TARGETS = 2_000
"""Enough containers for the collector to run many times over without the pause."""


WATCHED: frozenset[CodeType] = frozenset(
    inspect.unwrap(function).__code__ for function in (config.parse, cli.summary)
)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of each collection the cycle collector runs while a configuration is
    read or summarised (once they are done, the collector runs as ever)."""
    runs: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        frame: FrameType | None = sys._getframe()
        while phase == "start" and frame is not None:
            if frame.f_code in WATCHED:
                runs.append(info["generation"])
                return
            frame = frame.f_back

    gc.callbacks.append(record)
    try:
        yield runs
    finally:
        gc.callbacks.remove(record)


def test_reading_and_summarising_run_no_cycle_collection_and_leave_it_as_found(
    collections: list[int],
) -> None:
    assert gc.isenabled()
    loaded = config.parse(short_config(TARGETS))
    text = cli.summary(loaded)
    assert len(loaded.targets) == TARGETS and f"{TARGETS} target(s)" in text
    assert gc.isenabled(), "the collector runs again afterwards"
    with pytest.raises(ConfigError, match=r"targets\[1\]\.smtp\.port"):
        config.parse(short_config(1) + "  - {name: b, smtp: {username: b@x.test, port: x}}\n")
    assert gc.isenabled(), "and after a refused configuration"
    gc.disable()
    try:
        config.parse(short_config(2))
        assert not gc.isenabled(), "a collector paused by the caller stays paused"
    finally:
        gc.enable()
    assert collections == []

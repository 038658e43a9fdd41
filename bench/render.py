"""How long ``/metrics`` takes to render for many targets, without any mail server.

    python -m bench.render --targets 10000 --repeat 10 [--profile]

Fills the exporter's in-memory store with one successful result per (target, check), as after
a run, then times ``exporter.serve.metrics.render`` (the probes' part of a scrape):

* ``render_ms``: a scrape after the probes of one scrape interval (``--scrape-interval``,
  15 s) were recorded, at the default schedule given by ``--login-every`` (60 s) and
  ``--roundtrip-every`` (300 s): the scrapes of a running exporter;
* ``cold_render_ms``: every target written, as at the first scrape (when the renderer keeps
  no text between scrapes, every scrape is this one);
* ``scrape_ms`` and ``cold_scrape_ms``: the same two written as the web handler writes them
  (``render_async``, in slices with the event loop free between them), from start to end;
  ``loop_held_ms`` and ``cold_loop_held_ms``: the longest the event loop waited for it meanwhile,
  which is how late a probe due during the scrape can start;

median of ``--repeat``. ``--profile`` prints cProfile's top functions of one cold render.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._common import summary
from exporter import config as configuration
from exporter.outcome import Check, Phase
from exporter.result import Findings, ProbeResult
from exporter.serve import metrics
from exporter.state import Store

ROOT = Path(__file__).resolve().parent.parent

ROUNDTRIP_PHASES = [p for p in Phase]


def filled_store(targets: int, checks: list[str], store_class: Any) -> Any:
    text = "targets:\n" + "".join(
        f"  - name: t{i}\n    checks: [{', '.join(checks)}]\n"
        f"    smtp: {{host: 127.0.0.1, port: 25, tls: none, username: u{i}@x.test, "
        f"password: p}}\n"
        f"    imap: {{host: 127.0.0.1, port: 143, tls: none, username: u{i}@x.test, "
        f"password: p}}\n"
        for i in range(targets)
    )
    config = configuration.parse(text)
    store = store_class()
    store.configure(config)
    now = time.time()
    for target in config.targets:
        for check in target.checks:
            roundtrip = check is Check.ROUNDTRIP
            store.record(
                ProbeResult(
                    target=target.name,
                    check=check,
                    success=True,
                    started=now,
                    duration=0.52,
                    phases={p: 0.01 for p in ROUNDTRIP_PHASES[: 11 if roundtrip else 4]},
                    found=Findings(
                        delivery_seconds=0.5 if roundtrip else None,
                        lookalikes=0 if roundtrip else None,
                    ),
                )
            )
    return store


def record_interval(store: Any, rng: random.Random, args: argparse.Namespace) -> int:
    """Record the results one scrape interval brings, on random (target, check) pairs."""
    pairs = [(name, check) for name, state in store.targets.items() for check in state.checks]
    every = {Check.ROUNDTRIP: args.roundtrip_every}
    count = 0
    now = time.time()
    for name, check in pairs:
        if rng.random() >= args.scrape_interval / every.get(check, args.login_every):
            continue
        count += 1
        store.record(
            ProbeResult(
                target=name,
                check=check,
                success=rng.random() > FAILING,
                started=now,
                duration=rng.random(),
                phases={p: rng.random() for p in ROUNDTRIP_PHASES[:4]},
                reason=None,
            )
        )
    return count


FAILING = 0.01
"""Share of probes that fail in the steady-state scrape."""


def cold(store: Any) -> str:
    """A render with nothing kept from earlier scrapes."""
    cache = getattr(metrics, "_EXPOSITIONS", None)
    if cache is not None:
        cache.pop(store, None)
    return metrics.render(store)


async def held(scrape: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """How long one scrape took, and the longest the event loop waited for it meanwhile
    (measured by a task that does nothing but yield)."""
    done = False
    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    begin = time.perf_counter()
    await scrape()
    took = time.perf_counter() - begin
    done = True
    await ticking
    return took, longest


async def sliced(store: Any, rng: random.Random, args: argparse.Namespace) -> dict[str, object]:
    """Cold and steady-state scrapes as the web handler writes them."""

    async def cold_scrape() -> object:
        cache = getattr(metrics, "_EXPOSITIONS", None)
        if cache is not None:
            cache.pop(store, None)
        return await metrics.render_async(store)

    times: dict[str, list[float]] = {k: [] for k in ("cold", "cold_held", "warm", "warm_held")}
    for _ in range(args.repeat):
        took, longest = await held(cold_scrape)
        times["cold"].append(took)
        times["cold_held"].append(longest)
        record_interval(store, rng, args)
        took, longest = await held(lambda: metrics.render_async(store))
        times["warm"].append(took)
        times["warm_held"].append(longest)
    return {
        "scrape_ms": summary(times["warm"], 1000, 1),
        "loop_held_ms": summary(times["warm_held"], 1000, 1),
        "cold_scrape_ms": summary(times["cold"], 1000, 1),
        "cold_loop_held_ms": summary(times["cold_held"], 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--checks", default="roundtrip,smtp_login,imap_login")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--login-every", type=float, default=60.0)
    parser.add_argument("--roundtrip-every", type=float, default=300.0)
    parser.add_argument(
        "--unbounded",
        action="store_true",
        help="lift the configuration's size limits first (to time code that had lower ones)",
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.unbounded:
        from exporter.config import document

        document.MAX_BYTES = document.MAX_NODES = 10**9  # type: ignore[misc]
    checks = args.checks.split(",")
    rng = random.Random(1)
    begin = time.perf_counter()
    store = filled_store(args.targets, checks, Store)
    results: dict[str, object] = {
        "targets": args.targets,
        "checks": checks,
        "fill_s": round(time.perf_counter() - begin, 1),
    }
    times, cold_times, recorded = [], [], []
    text = metrics.render(store)
    for _ in range(args.repeat):
        begin = time.perf_counter()
        text = cold(store)
        cold_times.append(time.perf_counter() - begin)
        recorded.append(record_interval(store, rng, args))
        begin = time.perf_counter()
        text = metrics.render(store)
        times.append(time.perf_counter() - begin)
    results["render_ms"] = summary(times, 1000, 1)
    results["results_per_scrape"] = statistics.median(recorded)
    results["cold_render_ms"] = summary(cold_times, 1000, 1)
    results["bytes"] = len(text)
    results["series"] = sum(1 for line in text.splitlines() if not line.startswith("#"))
    results["series_per_target"] = round(
        sum(1 for line in text.splitlines() if 'target="t0"' in line and line[0] != "#"), 1
    )
    if hasattr(metrics, "render_async"):
        results.update(asyncio.run(sliced(store, rng, args)))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(cold, store)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

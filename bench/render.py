"""How long ``/metrics`` takes to render for many targets, without any mail server.

    python -m bench.render --targets 1000 --repeat 20 [--profile]

Fills the exporter's in-memory store with one successful result per (target, check), as after
a run, then times ``exporter.serve.metrics.render`` (the probes' part of a scrape), median of
``--repeat``. ``--compare-with REV`` also times, in the same run, the prometheus_client
collector that rendered the store at that git revision. ``--profile`` prints cProfile's top
functions of one render.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

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


def previous_implementation(rev: str) -> ModuleType:
    """``exporter/metrics.py`` as it was at ``rev``, loaded beside the current one."""
    source = subprocess.run(
        ["git", "show", f"{rev}:exporter/metrics.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    module = ModuleType("metrics_at_" + rev.replace("~", "_"))
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:exporter/metrics.py", "exec"), module.__dict__)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--checks", default="roundtrip,smtp_login,imap_login")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        help="also time the prometheus_client collector of that git revision",
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    checks = args.checks.split(",")
    store = filled_store(args.targets, checks, Store)
    results: dict[str, object] = {"targets": args.targets, "checks": checks}
    times = []
    for _ in range(args.repeat):
        begin = time.perf_counter()
        text = metrics.render(store)
        times.append(time.perf_counter() - begin)
    results["render_ms"] = summary(times, 1000, 1)
    results["bytes"] = len(text)
    results["series"] = sum(1 for line in text.splitlines() if not line.startswith("#"))
    if args.compare_with:
        old = previous_implementation(args.compare_with)
        old_store = filled_store(args.targets, checks, old.Store)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(old.StoreCollector(old_store))
        old_times = []
        for _ in range(args.repeat):
            begin = time.perf_counter()
            generate_latest(registry)
            old_times.append(time.perf_counter() - begin)
        results[f"collector_at_{args.compare_with}_ms"] = summary(old_times, 1000, 1)
        results["ratio"] = round(statistics.median(old_times) / statistics.median(times), 1)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(metrics.render, store)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

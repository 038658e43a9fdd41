"""How long ``/metrics`` takes to render for many targets, without any mail server.

    python bench/render.py --targets 1000 --repeat 20 [--profile]

Fills the exporter's in-memory store with one successful result per (target, check), as after
a run, then times the two halves of a scrape: ``StoreCollector.collect()`` (building metric
families) and ``prometheus_client.generate_latest`` (collect + text exposition), median of
``--repeat``. ``--profile`` prints cProfile's top functions of one render.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from bench._common import summary
from exporter import config as configuration
from exporter.metrics import DELIVERY_BUCKETS, Store, StoreCollector
from exporter.outcome import Check, Phase
from exporter.probes import ProbeResult

ROUNDTRIP_PHASES = [p for p in Phase]


def filled_store(targets: int, checks: list[str]) -> Store:
    text = "targets:\n" + "".join(
        f"  - name: t{i}\n    checks: [{', '.join(checks)}]\n"
        f"    smtp: {{host: 127.0.0.1, port: 25, tls: none, username: u{i}@x.test, "
        f"password: p}}\n"
        f"    imap: {{host: 127.0.0.1, port: 143, tls: none, username: u{i}@x.test, "
        f"password: p}}\n"
        for i in range(targets)
    )
    config = configuration.parse(text)
    store = Store()
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
                    delivery_seconds=0.5 if roundtrip else None,
                    lookalikes=0 if roundtrip else None,
                )
            )
    return store


def direct_render(store: Store) -> bytes:
    """A sketch of rendering the store's series straight to text (the proposed fix).

    Label sets are escaped once per target and check and cached; values are formatted with
    ``repr`` (Prometheus' parser accepts it). Only the series that dominate the size are
    written, as they are laid out by ``StoreCollector``: enough to time the approach.
    """
    out: list[str] = []
    append = out.append
    cache: dict[tuple[str, str], str] = {}
    families: dict[str, list[str]] = {}
    for name, target in store.targets.items():
        for check, state in target.checks.items():
            key = (name, check.value)
            labels = cache.get(key)
            if labels is None:
                labels = cache[key] = f'target="{_esc(name)}",check="{check.value}"'
            families.setdefault("mailbox_probes_total", []).append(
                f"mailbox_probes_total{{{labels}}} {float(state.probes)!r}\n"
            )
            fam = families.setdefault("mailbox_probe_failures_total", [])
            for reason, count in state.failures.items():
                fam.append(
                    f'mailbox_probe_failures_total{{{labels},reason="{reason.value}"}} '
                    f"{float(count)!r}\n"
                )
            last = state.last
            if last is None:
                continue
            for metric, value in (
                ("mailbox_probe_success", 1.0 if last.success else 0.0),
                ("mailbox_probe_duration_seconds", last.duration),
                ("mailbox_probe_interval_seconds", state.interval),
                ("mailbox_probe_timeout_seconds", state.timeout),
                ("mailbox_probe_consecutive_failures", float(state.consecutive_failures)),
                ("mailbox_probe_last_timestamp_seconds", last.started + last.duration),
            ):
                families.setdefault(metric, []).append(f"{metric}{{{labels}}} {value!r}\n")
            fam = families.setdefault("mailbox_probe_phase_duration_seconds", [])
            for phase, seconds in last.phases.items():
                fam.append(
                    f'mailbox_probe_phase_duration_seconds{{{labels},phase="{phase.value}"}} '
                    f"{seconds!r}\n"
                )
        fam = families.setdefault("mailbox_roundtrip_delivery_seconds", [])
        target_label = f'target="{_esc(name)}"'
        cumulative = 0
        for bound, count in zip(DELIVERY_BUCKETS, target.delivery_counts, strict=True):
            cumulative += count
            fam.append(
                f'mailbox_roundtrip_delivery_seconds_bucket{{{target_label},le="{bound!r}"}} '
                f"{float(cumulative)!r}\n"
            )
    for metric, lines in families.items():
        append(f"# HELP {metric} ...\n# TYPE {metric} gauge\n")
        out.extend(lines)
    return "".join(out).encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--checks", default="roundtrip,smtp_login,imap_login")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--direct", action="store_true", help="also time direct_render (the proposed fix)"
    )
    args = parser.parse_args()
    store = filled_store(args.targets, args.checks.split(","))
    collector = StoreCollector(store)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    collect, render = [], []
    size = 0
    for _ in range(args.repeat):
        begin = time.perf_counter()
        families = list(collector.collect())
        collect.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        body = generate_latest(registry)
        render.append(time.perf_counter() - begin)
        size = len(body)
    samples = sum(len(f.samples) for f in families)
    direct: list[float] = []
    direct_size = 0
    if args.direct:
        for _ in range(args.repeat):
            begin = time.perf_counter()
            direct_size = len(direct_render(store))
            direct.append(time.perf_counter() - begin)
    print(
        json.dumps(
            {
                "targets": args.targets,
                "checks": args.checks,
                "samples": samples,
                "bytes": size,
                "collect_ms": summary(collect, 1000, 1),
                "generate_latest_ms": summary(render, 1000, 1),
                "direct_render_ms": summary(direct, 1000, 1) if direct else None,
                "direct_render_bytes": direct_size or None,
                "us_per_sample": round(sorted(render)[len(render) // 2] / max(samples, 1) * 1e6, 2),
            },
            indent=2,
        )
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        generate_latest(registry)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

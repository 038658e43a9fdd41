"""Scale: many targets on one local Postfix + Dovecot, one exporter.

    python -m bench.scale --targets 1000 --checks roundtrip --interval 30s
    python -m bench.scale --targets 1000 --checks smtp_login,imap_login --interval 60s
    python -m bench.scale --mode inprocess --targets 1000 --interval 30s [--loop uvloop]

``--mode process`` (default) runs the real CLI (``python -m exporter``) and measures, over a
window that starts once every (target, check) has had its first, jittered, run:

* exporter CPU (utime + stime from /proc) per completed probe, from ``mailbox_probes_total``;
* Postfix's and Dovecot's CPU over the same window (whole process trees), and the machine's;
* probes completed per minute and failures by reason;
* resident memory (VmRSS) at the end, and ``GET /metrics`` render time (``--metrics-gets``);
* optionally a py-spy profile of the exporter during the window (``--profile PREFIX``).

``--mode inprocess`` runs ``exporter.app.Exporter`` in this process (no HTTP server) and adds
schedule lag: each probe's actual start (after the concurrency limit lets it in) minus its
planned time, learnt by wrapping the scheduler's ``random.uniform`` (first plan) and
``probes.run`` (starts). ``--loop uvloop`` runs the same on uvloop. ``--scrape-every 15``
renders ``/metrics`` on the event loop as often, as a Prometheus scraping it would.

``--servers fast`` (in-process mode) runs against :mod:`bench.fastservers`, scripted servers
that accept every login at once and deliver in memory, instead of Postfix and Dovecot, which
saturate two cores long before ten thousand targets. ``--roundtrip-interval`` gives round
trips a schedule of their own; the warm-up must cover the longest interval:

    python -m bench.scale --mode inprocess --servers fast --targets 10000 \
        --checks smtp_login,imap_login,roundtrip --interval 60s --roundtrip-interval 5m \
        --timeout 15s --warmup 310 --window 300 --scrape-every 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import aiohttp

from bench._common import (
    ROOT,
    TunedStack,
    cpu_seconds,
    free_port,
    machine,
    machine_cpu,
    publish,
    rss_mib,
    spawn,
    stack_cpu,
    stop_process,
    summary,
    target_entry,
)
from exporter import config as configuration
from exporter.config import model as config_model
from exporter.outcome import Check
from exporter.result import ProbeResult
from exporter.shard import ALL
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_context


def intervals(checks: list[str], interval: str, roundtrip: str | None) -> str:
    """Every check's interval as YAML: one duration, or a mapping where round trips differ."""
    if roundtrip is None or "roundtrip" not in checks:
        return interval
    return (
        "{"
        + ", ".join(
            f"{check}: {roundtrip if check == 'roundtrip' else interval}" for check in checks
        )
        + "}"
    )


def write_config(
    path: Path,
    stack: MailStack,
    users: list[MailUser],
    checks: list[str],
    interval: str,
    timeout: str,
    concurrency: int,
) -> None:
    text = f"global:\n  max_concurrent_probes: {concurrency}\ntargets:\n" + "".join(
        target_entry(stack, user, f"t{i}", checks=checks, interval=interval, timeout=timeout)
        for i, user in enumerate(users)
    )
    path.write_text(text)


def parse_counts(text: str) -> tuple[Counter[str], Counter[str]]:
    """Probes completed by check, and failures by reason, summed over targets."""
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("mailbox_probes_total{"):
            check = line.split('check="', 1)[1].split('"', 1)[0]
            done[check] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("mailbox_probe_failures_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            failed[reason] += int(float(line.rsplit(" ", 1)[1]))
    return done, failed


class Window:
    """CPU snapshots of the exporter, the stack and the machine at the start of a window."""

    def __init__(self, pid: int, stack: MailStack | None) -> None:
        self.pid, self.stack = pid, stack
        self.wall = time.monotonic()
        self.exporter = cpu_seconds(pid, children=False)
        self.daemons = self._daemons()
        self.machine = machine_cpu()

    def _daemons(self) -> dict[str, float]:
        """The stack's CPU; with ``--servers fast``, the scripted servers' as "postfix"."""
        if self.stack is not None:
            return stack_cpu(self.stack)
        return {"postfix": cpu_seconds(FAST_SERVERS[0], children=False), "dovecot": 0.0}

    def close(self) -> dict[str, float]:
        seconds = time.monotonic() - self.wall
        daemons = self._daemons()
        busy, total = machine_cpu()
        out = {
            "seconds": seconds,
            "exporter_cpu_s": cpu_seconds(self.pid, children=False) - self.exporter,
            "postfix_cpu_s": daemons["postfix"] - self.daemons["postfix"],
            "dovecot_cpu_s": daemons["dovecot"] - self.daemons["dovecot"],
            "machine_busy_s": busy - self.machine[0],
            "machine_total_s": total - self.machine[1],
        }
        out["others_cpu_s"] = (
            out["machine_busy_s"]
            - out["exporter_cpu_s"]
            - out["postfix_cpu_s"]
            - out["dovecot_cpu_s"]
        )
        return {k: round(v, 2) for k, v in out.items()}


def per_probe(window: dict[str, float], probes: int) -> dict[str, Any]:
    """CPU milliseconds per completed probe, and each party's share of the machine."""
    if probes <= 0:
        return {}
    cores = window["machine_total_s"] / window["seconds"]
    return {
        "probes": probes,
        "per_minute": round(probes / window["seconds"] * 60, 1),
        "exporter_cpu_ms_per_probe": round(window["exporter_cpu_s"] / probes * 1000, 2),
        "postfix_cpu_ms_per_probe": round(window["postfix_cpu_s"] / probes * 1000, 2),
        "dovecot_cpu_ms_per_probe": round(window["dovecot_cpu_s"] / probes * 1000, 2),
        "cores_used": {
            name: round(window[f"{name}_cpu_s"] / window["seconds"], 2)
            for name in ("exporter", "postfix", "dovecot", "others")
        }
        | {"machine_busy": round(window["machine_busy_s"] / window["seconds"], 2)},
        "cores_available": round(cores, 2),
    }


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return await response.text()


async def run_process(args: argparse.Namespace, stack: MailStack, cfg: Path, tmp: Path) -> Any:
    port = free_port()
    log = (tmp / "exporter.log").open("wb")
    process = spawn(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(cfg),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--storage.path",
            str(tmp / "state"),
            "--log.level",
            args.log_level,
        ],
        log,
    )
    profiler: subprocess.Popen[bytes] | None = None
    url = f"http://127.0.0.1:{port}"
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/-/ready") as response:
                        if response.status == 200:
                            break
                if process.poll() is not None:
                    raise RuntimeError((tmp / "exporter.log").read_text()[-3000:])
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.warmup)
            done0, failed0 = parse_counts(await get(session, url + "/metrics"))
            window = Window(process.pid, stack)
            if args.profile:
                profiler = spawn(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(process.pid),
                        "--duration",
                        str(int(args.window)),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "-o",
                        f"{args.profile}.txt",
                    ],
                    (tmp / "py-spy.log").open("wb"),
                )
            await asyncio.sleep(args.window)
            measured = window.close()
            done1, failed1 = parse_counts(await get(session, url + "/metrics"))
            renders: list[float] = []
            size = 0
            for _ in range(args.metrics_gets):
                begin = time.perf_counter()
                body = await get(session, url + "/metrics")
                renders.append(time.perf_counter() - begin)
                size = len(body)
            rss = rss_mib(process.pid)
    finally:
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
            stop_process(profiler)
        stop_process(process)
        log.close()
    done = done1 - done0
    return {
        "window": measured,
        "completed": dict(done),
        "failures": dict(failed1 - failed0),
        "cpu": per_probe(measured, sum(done.values())),
        "rss_mib": round(rss, 1),
        "metrics_get_ms": summary(renders, 1000, 2),
        "metrics_bytes": size,
    }


TICK: Final = 0.05
"""Seconds the loop-stall probe sleeps between looks."""
FAST_SERVERS: list[int] = []
"""The process id of the scripted servers, while they run."""


@dataclass(frozen=True)
class Finished:
    """What the benchmark keeps of a probe that ended in the window (not the whole result)."""

    at: float
    check: str
    success: bool
    reason: str | None
    duration: float

    @classmethod
    def of(cls, at: float, result: ProbeResult) -> Finished:
        reason = result.reason.value if result.reason is not None else None
        return cls(at, result.check.value, result.success, reason, result.duration)


async def run_inprocess(args: argparse.Namespace, stack: MailStack | None, cfg: Path) -> Any:
    from exporter import app as app_module

    first_plan: dict[str, float] = {}
    starts: dict[str, list[float]] = defaultdict(list)
    finished: list[Finished] = []
    measuring = asyncio.Event()
    """Set when the window starts: only then are starts and results kept, so that what the
    benchmark keeps does not grow its own resident memory over a long warm-up."""

    class Planned(random.Random):
        """The scheduler's source of randomness: notes each task's first planned start."""

        def uniform(self, a: float, b: float) -> float:
            value = super().uniform(a, b)
            task = asyncio.current_task()
            if task is not None:
                first_plan[task.get_name()] = time.monotonic() + value
            return value

    class Timed(app_module.Exporter):
        """Notes when each scheduled probe really starts and when it ends."""

        async def run_scheduled(self, target: config_model.Target, check: Check) -> ProbeResult:
            task = asyncio.current_task()
            if task is not None and measuring.is_set():
                starts[task.get_name()].append(time.monotonic())
            result = await super().run_scheduled(target, check)
            if measuring.is_set():
                finished.append(Finished.of(time.monotonic(), result))
            return result

    loaded = configuration.load(cfg)
    exporter = Timed(
        cfg,
        ALL,
        probe_context(),
        Planned(),
        key_persistent=False,
    )
    exporter.start(loaded)
    renders: list[float] = []

    async def scrape() -> None:
        """Render /metrics on the event loop every --scrape-every s, as the web handler does."""
        while True:
            await asyncio.sleep(args.scrape_every)
            begin = time.perf_counter()
            await exporter.exposition()
            renders.append(time.perf_counter() - begin)

    stalls: list[float] = []

    async def tick() -> None:
        """How late the event loop wakes a task that sleeps :data:`TICK` s: what every probe
        due at that moment waits on top of its plan (a render, a collection, a busy loop)."""
        while True:
            begin = time.perf_counter()
            await asyncio.sleep(TICK)
            if measuring.is_set():
                stalls.append(time.perf_counter() - begin - TICK)

    collections: dict[int, list[float]] = defaultdict(list)
    collecting: list[float] = []

    def timed_gc(phase: str, info: dict[str, int]) -> None:
        """The garbage collector's pauses in the window, by generation."""
        if phase == "start":
            collecting[:] = [time.perf_counter()]
        elif collecting and measuring.is_set():
            collections[info["generation"]].append(time.perf_counter() - collecting[0])

    gc.callbacks.append(timed_gc)
    ticker = asyncio.create_task(tick())
    scraper = asyncio.create_task(scrape()) if args.scrape_every > 0 else None
    try:
        await asyncio.sleep(args.warmup)
        if args.gc_freeze:
            gc.freeze()
        window_start = time.monotonic()
        measuring.set()
        window = Window(os.getpid(), stack)
        await asyncio.sleep(args.window)
        measured = window.close()
        window_end = time.monotonic()
        rss, rss_peak = rss_mib(os.getpid()), rss_mib(os.getpid(), "VmHWM")
    finally:
        if scraper is not None:
            scraper.cancel()
        ticker.cancel()
        gc.callbacks.remove(timed_gc)
        await exporter.stop()
    intervals = {f"probe {t.name} {c}": t.interval(c) for t in loaded.targets for c in t.checks}
    lags: dict[str, list[float]] = defaultdict(list)
    for name, times in starts.items():
        planned0, interval = first_plan.get(name), intervals.get(name)
        if planned0 is None or interval is None:
            continue
        for start in times:
            if window_start <= start <= window_end:
                k = round((start - planned0) / interval)
                lags[name.rsplit(" ", 1)[1]].append(start - (planned0 + k * interval))
    in_window = [r for r in finished if window_start <= r.at <= window_end]
    done = Counter(r.check for r in in_window)
    failed = Counter(f"{r.check} {r.reason}" for r in in_window if not r.success)
    durations: dict[str, list[float]] = defaultdict(list)
    for r in in_window:
        if r.success:
            durations[r.check].append(r.duration)
    due: dict[str, float] = defaultdict(float)
    for name, interval in intervals.items():
        due[name.rsplit(" ", 1)[1]] += (window_end - window_start) / interval
    return {
        "loop": args.loop,
        "window": measured,
        # Runs due in the window by the schedule: when fewer start, the scheduler skipped the
        # slots it had missed, and the lag below (to the nearest slot) no longer shows it.
        "due": {check: round(count) for check, count in sorted(due.items())},
        "completed": dict(done),
        "failures": dict(failed),
        "cpu": per_probe(measured, len(in_window)),
        "schedule_lag_ms": summary([lag for each in lags.values() for lag in each], 1000, 1),
        "schedule_lag_ms_by_check": {c: summary(v, 1000, 1) for c, v in sorted(lags.items())},
        "probe_duration_ms": {c: summary(v, 1000, 1) for c, v in sorted(durations.items())},
        "rss_mib_bench_process": round(rss, 1),
        "rss_peak_mib_bench_process": round(rss_peak, 1),
        "scrape_every_s": args.scrape_every,
        "render_on_loop_ms": summary(renders, 1000, 1) if renders else None,
        "loop_stall_ms": summary(stalls, 1000, 1),
        "gc_pause_ms_by_generation": {
            str(generation): summary(pauses, 1000, 1) | {"total_s": round(sum(pauses), 2)}
            for generation, pauses in sorted(collections.items())
        },
    }


def start_fast_servers(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], int, int]:
    """:mod:`bench.fastservers` in a process of their own, once they listen; and their ports."""
    smtp_port, imap_port = free_port(), free_port()
    servers = subprocess.Popen(
        [sys.executable, "-m", "bench.fastservers", str(smtp_port), str(imap_port)],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
    )
    assert servers.stdout is not None
    if servers.stdout.readline().strip() != b"ready":
        stop_process(servers)
        raise RuntimeError("the scripted servers did not start")
    FAST_SERVERS[:] = [servers.pid]
    return servers, smtp_port, imap_port


async def run_fast(args: argparse.Namespace, checks: list[str], tmp: Path) -> dict[str, Any]:
    """In-process run against :mod:`bench.fastservers` in a process of their own."""
    log = (tmp / "fastservers.log").open("wb")
    servers, smtp_port, imap_port = start_fast_servers(log)
    try:
        cfg = tmp / "mailbox-exporter.yml"
        cfg.write_text(
            f"global:\n  max_concurrent_probes: {args.concurrency}\n"
            f"defaults:\n  interval: {intervals(checks, args.interval, args.roundtrip_interval)}\n"
            f"  timeout: {args.timeout}\n"
            f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none, password: p}}\n"
            f"  imap: {{host: 127.0.0.1, port: {imap_port}, tls: none, password: p}}\n"
            "targets:\n"
            + "".join(
                f"  - {{name: t{i}, checks: [{', '.join(checks)}], "
                f"smtp: {{username: u{i}@x.test}}, imap: {{username: u{i}@x.test}}}}\n"
                for i in range(args.targets)
            )
        )
        begin = time.perf_counter()
        result: dict[str, Any] = await run_inprocess(args, None, cfg)
        result["config_bytes"] = cfg.stat().st_size
        result["wall_s"] = round(time.perf_counter() - begin, 1)
        return result
    finally:
        stop_process(servers)
        log.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    checks = args.checks.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name:
        tmp = Path(name)
        if args.servers == "fast":
            fast: dict[str, Any] = {
                "machine": machine(),
                "settings": vars(args) | {"json": str(args.json), "checks": checks},
            }
            measured: dict[str, Any] = await run_fast(args, checks, tmp)
            return fast | measured
        stack = TunedStack(tmp / "stack")
        users = [stack.add_user(f"u{i}", f"pw-scale-{i}") for i in range(args.targets)]
        cfg = tmp / "mailbox-exporter.yml"
        interval = intervals(checks, args.interval, args.roundtrip_interval)
        write_config(cfg, stack, users, checks, interval, args.timeout, args.concurrency)
        result: dict[str, Any]
        with stack:
            if args.mode == "process":
                result = await run_process(args, stack, cfg, tmp)
            else:
                result = await run_inprocess(args, stack, cfg)
    return {
        "machine": machine(),
        "settings": {
            "mode": args.mode,
            "targets": args.targets,
            "checks": checks,
            "interval": args.interval,
            "roundtrip_interval": args.roundtrip_interval,
            "timeout": args.timeout,
            "max_concurrent_probes": args.concurrency,
            "warmup_s": args.warmup,
            "window_s": args.window,
        },
    } | result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["process", "inprocess"], default="process")
    parser.add_argument(
        "--servers",
        choices=["stack", "fast"],
        default="stack",
        help="Postfix and Dovecot, or scripted servers that deliver in memory (inprocess)",
    )
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--checks", default="roundtrip", help="comma-separated (default roundtrip)")
    parser.add_argument("--interval", default="30s", help="every check's interval")
    parser.add_argument(
        "--roundtrip-interval", help="the round trip's interval, if not --interval (e.g. 5m)"
    )
    parser.add_argument("--timeout", default="20s")
    parser.add_argument("--concurrency", type=int, default=32, help="max_concurrent_probes")
    parser.add_argument(
        "--warmup", type=float, default=35.0, help="seconds before the window (>= interval)"
    )
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--metrics-gets", type=int, default=50)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--profile", help="py-spy raw profile to PREFIX.txt (process mode)")
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=0.0,
        help="inprocess: render /metrics on the loop this often (s), as a scrape would",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="inprocess: gc.freeze() after the warm-up (what is alive then is never scanned again)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    random.seed(args.seed)
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    publish(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Requests and exporter CPU per round trip over the Graph and Gmail API transports.

Each simulator runs in a process of its own (``python -m bench.api --serve graph|gmail``), so
the CPU measured here is the exporter's alone: ``time.process_time()`` of this process around
each round trip. Round trips run one after another, each a real one (send, look with the
back-off, verify, delete), with the simulator's default delivery delay of 0.2 s. Requests are
those the probe counts (``Findings.requests``) plus token requests (the first round trip gets
the token; it is cached for the others).

    python -m bench.api [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exporter import probes
from exporter.config import parse
from exporter.outcome import Check
from testing.targets import probe_context

ROOT = Path(__file__).resolve().parent.parent


def serve(kind: str) -> None:
    """Run one simulator with one mailbox and credentials; print them; stop on stdin EOF."""
    if kind == "graph":
        from testing.simulators.graph import GraphSimulator

        graph = GraphSimulator(domains=("contoso.example",)).start_in_thread()
        graph.add_mailbox("probe@contoso.example")
        graph.add_app("bench", secret="bench-secret", mailboxes=["probe@contoso.example"])
        facts: dict[str, Any] = {
            "section": (
                "    graph:\n      mailbox: probe@contoso.example\n"
                f"      tenant: {graph.tenant}\n      client_id: bench\n"
                f"      client_secret: bench-secret\n      graph_url: {graph.graph_url}\n"
                f"      login_url: {graph.url}\n"
            )
        }
    else:
        from testing.simulators.gmail import FULL_SCOPE, GmailSimulator

        gmail = GmailSimulator(domains=("example.test",)).start_in_thread()
        gmail.add_mailbox("probe@example.test")
        key = gmail.create_service_account("bench@project.example", "1234")
        gmail.delegate("1234", "example.test", [FULL_SCOPE])
        key_file = Path(tempfile.mkdtemp()) / "sa.json"
        key_file.write_text(json.dumps(key))
        facts = {
            "section": (
                "    gmail:\n      mailbox: probe@example.test\n"
                f"      service_account_file: {key_file}\n      api_url: {gmail.url}\n"
            )
        }
    print(json.dumps(facts), flush=True)
    sys.stdin.read()


async def measure(section: str, rounds: int) -> dict[str, float]:
    target = parse(f"targets:\n  - name: bench\n{section}").targets[0]
    context = probe_context()
    requests, cpu, wall, delivery = [], [], [], []
    try:
        for _ in range(rounds):
            cpu_before, wall_before = time.process_time(), time.monotonic()
            tokens_before = context.tokens.requests
            result = await probes.run(target, Check.ROUNDTRIP, context)
            cpu.append(time.process_time() - cpu_before)
            wall.append(time.monotonic() - wall_before)
            assert result.success, result
            requests.append(result.found.requests + context.tokens.requests - tokens_before)
            delivery.append(result.found.delivery_seconds or 0.0)
    finally:
        await context.close()
    return {
        "requests_median": statistics.median(requests),
        "requests_max": max(requests),
        "requests_first": requests[0],
        "cpu_ms_median": 1000 * statistics.median(cpu[1:] or cpu),
        "cpu_ms_first": 1000 * cpu[0],
        "wall_s_median": statistics.median(wall),
        "delivery_s_median": statistics.median(delivery),
    }


def run(kind: str, rounds: int) -> dict[str, float]:
    """Start the simulator in its own process, measure, stop it."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        facts = json.loads(server.stdout.readline())
        return asyncio.run(measure(facts["section"], rounds))
    finally:
        server.stdin.close()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--serve", choices=("graph", "gmail"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    for kind in ("graph", "gmail"):
        figures = run(kind, args.rounds)
        print(kind, " ".join(f"{key}={value:.3g}" for key, value in figures.items()))


if __name__ == "__main__":
    main()

"""Fault soak: round trips against a real Postfix + Dovecot while faults come and go at random.

    python -m bench.soak --roundtrips 2000 --targets 8

Several mailboxes are probed at once, each on its own schedule, while a fault injector breaks
the stack and heals it: Dovecot restarted, logins broken, delivery deferred, Postfix stopped.
Afterwards, with the stack healed, every mailbox gets one more round trip (the cleanup pass),
and the report checks what the safety guarantees promise: nothing crashed, success came back
within one interval of each healing (the first probe that starts after it succeeds, so that
recovery, counted to the end of that probe, takes at most two intervals), the mail that was in
the mailboxes before is all still there, and no probe message is left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path

from exporter import config, probes
from exporter.outcome import Check
from testing.mailstack import MailStack, MailUser
from testing.targets import fixed_ids, probe_context

ROOT = Path(__file__).resolve().parent.parent

FAULTS = {
    "dovecot restarted": ("stop_dovecot", "start_dovecot"),
    "logins broken": ("break_passwd_file", "restore_passwd_file"),
    "delivery deferred": ("defer_delivery", "resume_delivery"),
    "postfix stopped": ("stop_postfix", "start_postfix"),
}


@dataclass
class Report:
    roundtrips: int = 0
    successes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    recovery_seconds: list[float] = field(default_factory=list)
    recovery_by_fault: dict[str, list[float]] = field(default_factory=dict)
    drain_seconds: list[float] = field(default_factory=list)
    interrupted: int = 0
    not_recovered: int = 0
    late_arrivals: int = 0
    deleted: int = 0
    existing_before: int = 0
    existing_after: int = 0
    probe_messages_left: int = 0
    crashed: str = ""
    interval: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        recoveries = sorted(self.recovery_seconds)
        data["recovery_seconds"] = {
            "count": len(recoveries),
            "median": round(statistics.median(recoveries), 3) if recoveries else None,
            "max": round(max(recoveries), 3) if recoveries else None,
        }
        data["recovery_by_fault"] = {
            name: {"median": round(statistics.median(v), 3), "max": round(max(v), 3)}
            for name, v in sorted(self.recovery_by_fault.items())
            if v
        }
        data["drain_seconds"] = (
            {
                "median": round(statistics.median(self.drain_seconds), 3),
                "max": round(max(self.drain_seconds), 3),
            }
            if self.drain_seconds
            else None
        )
        data["reasons"] = dict(self.reasons)
        data["faults"] = dict(self.faults)
        data["holds"] = self.holds()
        return data

    def holds(self) -> bool:
        return (
            not self.crashed
            and self.existing_after == self.existing_before
            and self.probe_messages_left == 0
            and all(r <= self.interval + 5 for r in self.recovery_seconds)
        )


def _mail(index: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "colleague@example.test"
    mail["To"] = "monitor@example.test"
    mail["Subject"] = f"existing mail {index}"
    mail.set_content(f"keep me {index}\n")
    return mail.as_bytes()


async def soak(
    root: Path,
    roundtrips: int,
    targets: int,
    interval: float = 2.0,
    probe_timeout: float = 2.0,
    existing: int = 200,
    seed: int = 1,
) -> Report:
    """Run the soak in ``root``; returns the report (never raises for a probe)."""
    rng = random.Random(seed)
    report = Report(interval=interval)
    started = time.monotonic()
    stack = MailStack(root)
    users: list[MailUser] = [stack.add_user(f"soak{i}", f"pw-soak-{i}") for i in range(targets)]
    for index in range(existing):
        stack.put_message(users[index % targets], _mail(index))
    report.existing_before = sum(len(stack.message_files(u)) for u in users)
    ms = int(probe_timeout * 1000)
    parsed = config.parse(
        "targets:\n"
        + "".join(
            f"  - name: soak{i}\n    interval: {int(interval * 1000)}ms\n    timeout: {ms}ms\n"
            f"    checks: [roundtrip]\n"
            f"    smtp: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, "
            f"username: {u.address}, password: {u.password}}}\n"
            f"    imap: {{host: 127.0.0.1, port: {stack.imap_port}, tls: none, "
            f"username: {u.address}, password: {u.password}}}\n"
            for i, u in enumerate(users)
        )
    )
    context = probe_context()
    ids = fixed_ids(context)
    healed_at: list[tuple[str, float]] = []
    broken_at: list[float] = []
    done = asyncio.Event()
    results: list[tuple[str, float, float, bool]] = []

    async def prober(target: config.Target) -> None:
        await asyncio.sleep(rng.uniform(0, interval))
        while not done.is_set():
            begin = time.monotonic()
            result = await probes.run(target, Check.ROUNDTRIP, context)
            report.roundtrips += 1
            report.successes += result.success
            report.late_arrivals += result.found.late_arrivals
            report.deleted += result.found.cleanup_deleted
            if result.reason:
                report.reasons[result.reason.value] += 1
            results.append((target.name, begin, time.monotonic(), result.success))
            if report.roundtrips >= roundtrips:
                done.set()
            await asyncio.sleep(max(0.0, begin + interval - time.monotonic()))

    async def injector() -> None:
        while not done.is_set():
            await asyncio.sleep(rng.uniform(2, 5))
            if done.is_set():
                return
            name = rng.choice(list(FAULTS))
            breaks, heals = FAULTS[name]
            report.faults[name] += 1
            broken_at.append(time.monotonic())
            await asyncio.to_thread(getattr(stack, breaks))
            await asyncio.sleep(rng.uniform(2, 6))
            await asyncio.to_thread(getattr(stack, heals))
            if name == "delivery deferred":
                # The stack is healed once Postfix has delivered what it held back: until then
                # new mail waits behind that backlog, and probes rightly report it late.
                drain_started = time.monotonic()
                for _ in range(600):  # at most a minute
                    if not await asyncio.to_thread(stack.queue_size):
                        break
                    await asyncio.sleep(0.1)
                report.drain_seconds.append(time.monotonic() - drain_started)
            healed_at.append((name, time.monotonic()))

    with stack:
        try:
            await asyncio.gather(injector(), *(prober(t) for t in parsed.targets))
            for target in parsed.targets:
                for _ in range(5):
                    result = await probes.run(target, Check.ROUNDTRIP, context)
                    report.deleted += result.found.cleanup_deleted
                    report.late_arrivals += result.found.late_arrivals
                    if result.success:
                        break
        except Exception as exc:
            report.crashed = f"{type(exc).__name__}: {exc}"
        for fault, heal in healed_at:
            # Only probes that ran between this healing and the next fault tell how fast
            # success came back; a target whose first such probe overlaps the next fault is
            # counted as interrupted instead.
            next_fault = min((b for b in broken_at if b > heal), default=float("inf"))
            for target in parsed.targets:
                clean = [
                    (begin, end, ok)
                    for name, begin, end, ok in results
                    if name == target.name and heal <= begin and end <= next_fault
                ]
                if not clean:
                    report.interrupted += 1
                    continue
                first_ok = [end for begin, end, ok in clean if ok]
                if first_ok:
                    report.recovery_seconds.append(min(first_ok) - heal)
                    report.recovery_by_fault.setdefault(fault, []).append(min(first_ok) - heal)
                else:
                    report.not_recovered += 1
        report.existing_after = sum(
            1 for u in users for p in stack.message_files(u) if b"existing mail" in p.read_bytes()
        )
        report.probe_messages_left = sum(
            1
            for u in users
            for p in stack.message_files(u)
            if ids.prefix.encode() in p.read_bytes()
        )
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--roundtrips", type=int, default=2000)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = asyncio.run(
            soak(Path(tmp), args.roundtrips, args.targets, args.interval, seed=args.seed)
        )
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.holds() else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Delivery-time accuracy against ground truth, for the exporter and prometheus-mailexporter.

    python -m bench.accuracy --roundtrips 200 --variant-roundtrips 60

Ground truth is the moment the message file appears in the Dovecot maildir (new/ or cur/),
seen with inotify, minus the moment the SMTP server accepted the message (the 250 reply to
DATA). A tool's error is its reported delivery time minus that true delivery time.

Run side by side on one Postfix + Dovecot, each with a mailbox of its own:

* the exporter's round trip in this process (``probes.run``) with the default wait (polls
  from 25 ms after sending, backing off, for 2 s, then IMAP IDLE);
* the same with ``imap.idle: true`` (IDLE only) and with ``imap.idle: false`` (NOOP + UID
  SEARCH, backing off to a ``poll_interval`` of 1 s);
* the round trip with the POP3 receiver on Dovecot's POP3 service (the same maildir): POP3
  has no push, so it polls, logging in afresh each time, from 25 ms after sending, the pause
  doubling up to its ``poll_interval`` (2 s by default);
* ``mailexporter`` (Debian ``prometheus-mailexporter``), which watches the maildir with
  inotify; it is sent through a small TCP relay here that stamps the 250 reply, and its
  per-message duration is read from ``mail_last_deliver_duration_seconds`` as the histogram
  count grows (scraped every 50 ms).

Then variants, one at a time on a fresh stack: IDLE with the default Dovecot settings again,
with ``imap_idle_notify_interval`` and ``mailbox_idle_check_interval`` changed (does either
move IDLE's delay?), and polling with shorter ``poll_interval`` values.

Last, slow delivery (``--slow-roundtrips``): a relay between Postfix and Dovecot's LMTP holds
each message's final dot for a random time (uniform up to ``--slow-delay``), and the default
IMAP wait and POP3 polling run side by side on a fresh stack: how far behind a delivery that
takes seconds each of them sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import aiohttp

from bench._common import (
    MaildirWatcher,
    TunedStack,
    free_port,
    machine,
    publish,
    stop_process,
    summary,
    target_entry,
)
from exporter import config, probes
from exporter.config import Target
from exporter.outcome import Check
from exporter.transports.smtp import SmtpSession
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_context

_accepts: contextvars.ContextVar[list[float]] = contextvars.ContextVar("accepts")

RELAY_WAIT: Final = 30.0
"""Longest wait of the delaying relay for a connection, a read or a write (its own delays
apart); Postfix opens a new connection after one it kept idle is closed."""
POLL_1S = ", idle: false, poll_interval: 1s"
IDLE_ONLY = ", idle: true"
VARIANTS: dict[str, tuple[str, str]] = {
    # name: (extra dovecot.conf settings, extra imap keys of the target)
    "IDLE, default": ("", IDLE_ONLY),
    "IDLE, imap_idle_notify_interval=1s": ("imap_idle_notify_interval = 1 secs\n", IDLE_ONLY),
    "IDLE, imap_idle_notify_interval=10min": ("imap_idle_notify_interval = 10 mins\n", IDLE_ONLY),
    "IDLE, mailbox_idle_check_interval=30s": (
        "mailbox_idle_check_interval = 30 secs\n",
        IDLE_ONLY,
    ),
    "polling 100ms": ("", ", idle: false, poll_interval: 100ms"),
    "polling 25ms": ("", ", idle: false, poll_interval: 25ms"),
    # polls start 25 ms after sending and back off, doubling, to poll_interval
    "polling, poll_interval 1s": ("", POLL_1S),
}


def patch_smtp_send() -> None:
    """Note the wall-clock time at which SmtpSession.send returns (the server said 250)."""
    original = SmtpSession.send

    async def send(self: SmtpSession, mail_from: str, mail_to: str, message: bytes) -> None:
        await original(self, mail_from, mail_to, message)
        with contextlib.suppress(LookupError):
            _accepts.get().append(time.time())

    SmtpSession.send = send  # type: ignore[method-assign]


@dataclass
class Series:
    """Per-message figures of one tool."""

    reported: list[float] = field(default_factory=list)
    truth: list[float] = field(default_factory=list)
    failures: int = 0
    unmatched: int = 0

    @property
    def errors(self) -> list[float]:
        return [r - t for r, t in zip(self.reported, self.truth, strict=True)]

    def report(self) -> dict[str, Any]:
        return {
            "roundtrips": len(self.reported),
            "failures": self.failures,
            "unmatched": self.unmatched,
            "true_delivery_ms": summary(self.truth, 1000),
            "reported_ms": summary(self.reported, 1000),
            "error_ms": summary(self.errors, 1000),
        }


def pop3_entry(stack: MailStack, user: MailUser, name: str, pop3_extra: str = "") -> str:
    """A round-trip target that sends over SMTP and watches the mailbox over POP3."""
    return (
        f"  - name: {name}\n"
        "    checks: [roundtrip]\n"
        "    interval: 10s\n"
        "    timeout: 10s\n"
        "    receiver: pop3\n"
        f"    smtp: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}'}}\n"
        f"    pop3: {{host: 127.0.0.1, port: {stack.pop3_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}'{pop3_extra}}}\n"
    )


async def exporter_series(
    stack: MailStack,
    user: MailUser,
    watcher: MaildirWatcher,
    count: int,
    imap_extra: str,
    name: str,
    pause: float = 0.2,
    *,
    pop3: bool = False,
) -> Series:
    """Run ``count`` round trips one after another and compare with inotify's arrivals; with
    ``pop3``, received over POP3 (``imap_extra`` then holds extra keys of the pop3 section)."""
    if pop3:
        entry = pop3_entry(stack, user, name, imap_extra)
    else:
        entry = target_entry(stack, user, name, imap_extra=imap_extra)
    maildir = stack.maildir(user)

    def arrived(since: float) -> float | None:
        arrival = watcher.first_new_after(maildir, since)
        return None if arrival is None else arrival.wall

    target = config.parse("targets:\n" + entry).targets[0]
    return await timed_series(target, arrived, count, pause)


async def timed_series(
    target: Target, arrived: Callable[[float], float | None], count: int, pause: float
) -> Series:
    """``count`` round trips of ``target`` one after another, each reported delivery time
    beside the truth: ``arrived(since)`` is the wall time the probe reached the mailbox (None
    if it did not), minus the SMTP server's acceptance stamped by :func:`patch_smtp_send`."""
    accepts: list[float] = []
    _accepts.set(accepts)
    context = probe_context()
    series = Series()
    try:
        for _ in range(count):
            begin = time.time()
            before = len(accepts)
            result = await probes.run(target, Check.ROUNDTRIP, context)
            if not result.success or result.delivery_seconds is None or len(accepts) == before:
                series.failures += 1
                continue
            arrival = arrived(begin)
            if arrival is None:
                series.unmatched += 1
                continue
            series.reported.append(result.delivery_seconds)
            series.truth.append(arrival - accepts[-1])
            await asyncio.sleep(pause)
    finally:
        await context.close()
    return series


# ------------------------------------------------------------------ mailexporter


class StampingRelay:
    """A TCP relay to Postfix that stamps each ``250 ... queued as`` reply (wall clock)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.queued: list[float] = []
        self.sessions: list[float] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened = time.time()
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            try:
                while data := await src.read(65536):
                    if down and b" queued as " in data:
                        now = time.time()
                        self.queued.append(now)
                        self.sessions.append(now - opened)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_w, False), pump(up_r, writer, True))


class DelayingRelay:
    """A TCP relay in front of Dovecot's LMTP that holds back the end of each message's data
    (the final dot, after which Dovecot delivers) for a random time: a slow delivery."""

    def __init__(self, upstream: int, most: float, rng: random.Random) -> None:
        self.upstream = upstream
        self.most = most
        self.rng = rng
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.upstream), RELAY_WAIT
        )

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: bool) -> None:
            tail = b""
            try:
                while data := await asyncio.wait_for(src.read(65536), RELAY_WAIT):
                    seen, tail = tail + data, (tail + data)[-4:]
                    if hold and b"\r\n.\r\n" in seen:  # Postfix pipelines QUIT after it
                        await asyncio.sleep(self.rng.uniform(0, self.most))
                    dst.write(data)
                    await asyncio.wait_for(dst.drain(), RELAY_WAIT)
            except (ConnectionError, OSError, TimeoutError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))


async def scrape_mailexporter(
    url: str, stop: asyncio.Event, seen: list[tuple[float, float]]
) -> None:
    """Record (wall time, last duration) each time the delivery histogram's count grows."""
    last_count = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not stop.is_set():
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            count, duration = None, None
            for line in text.splitlines():
                if line.startswith("mail_deliver_durations_seconds_count"):
                    count = float(line.split()[-1])
                elif line.startswith("mail_last_deliver_duration_seconds{"):
                    duration = float(line.split()[-1])
            if count is not None and duration is not None and count > last_count:
                if count > last_count + 1 and last_count:
                    seen.append((time.time(), float("nan")))  # missed one: keep order honest
                seen.append((time.time(), duration))
                last_count = count
            await asyncio.sleep(0.05)


def mailexporter_config(relay_port: int, user: MailUser, maildir: Path, interval: str) -> str:
    return (
        f"monitoringinterval: {interval}\n"
        "mailchecktimeout: 20s\n"
        "startupoffset: 1s\n"
        "servers:\n"
        "  - name: bench\n"
        "    server: 127.0.0.1\n"
        f"    port: {relay_port}\n"
        f"    login: {user.address}\n"
        f"    passphrase: {user.password}\n"
        f"    from: {user.address}\n"
        f"    to: {user.address}\n"
        f"    detectiondir: {maildir / 'new'}\n"
    )


def pair_mailexporter(
    queued: list[float],
    seen: list[tuple[float, float]],
    watcher: MaildirWatcher,
    maildir: Path,
) -> Series:
    """Match each accepted message with its arrival and the next reported duration."""
    series = Series()
    arrivals = [a for a in watcher.arrivals.get(maildir, []) if a.directory.name == "new"]
    used = 0
    for index, accepted in enumerate(queued):
        later = [a for a in arrivals if a.wall >= accepted]
        nxt = queued[index + 1] if index + 1 < len(queued) else float("inf")
        if not later or later[0].wall >= nxt:
            series.unmatched += 1
            continue
        arrival = later[0]
        while used < len(seen) and seen[used][0] < arrival.wall:
            used += 1
        if used >= len(seen) or seen[used][0] >= nxt + 0.5:
            series.unmatched += 1
            continue
        reported = seen[used][1]
        used += 1
        if reported != reported:  # NaN: a scrape missed this one
            series.unmatched += 1
            continue
        series.reported.append(reported)
        series.truth.append(arrival.wall - accepted)
    return series


def spawn(argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a peer process with its output in ``log``."""
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


async def with_mailexporter(
    stack: MailStack,
    user: MailUser,
    watcher: MaildirWatcher,
    workdir: Path,
    interval: str,
    body: Callable[[], Awaitable[dict[str, Series]]],
) -> tuple[dict[str, Series], Series | None, dict[str, Any]]:
    """Run mailexporter alongside ``body()``; return body's series and mailexporter's."""
    binary = shutil.which("mailexporter")
    if binary is None:
        return await body(), None, {"skipped": "mailexporter is not installed"}
    relay = StampingRelay(stack.smtp_port)
    await relay.start()
    port = free_port()
    conf = workdir / "mailexporter.conf"
    conf.write_text(mailexporter_config(relay.port, user, stack.maildir(user), interval))
    log = (workdir / "mailexporter.log").open("wb")
    process = spawn(
        [binary, "-config.file", str(conf), "-web.listen-address", f"127.0.0.1:{port}"], log
    )
    stop = asyncio.Event()
    seen: list[tuple[float, float]] = []
    url = f"http://127.0.0.1:{port}/metrics"
    scraper = asyncio.create_task(scrape_mailexporter(url, stop, seen))
    try:
        results = await body()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        stop_process(process, grace=10)
        log.close()
        await scraper
        await relay.close()
    series = pair_mailexporter(relay.queued, seen, watcher, stack.maildir(user))
    extra = {
        "smtp_session_ms": summary(relay.sessions, 1000),
        "note": "reported duration starts before the SMTP connection is opened",
    }
    return results, series, extra


# ------------------------------------------------------------------ runs


async def main_run(workdir: Path, roundtrips: int, me_interval: str) -> dict[str, Any]:
    stack = TunedStack(workdir / "stack")
    names = ("default", "idle", "poll", "pop3", "mailexp")
    users = {n: stack.add_user(n, f"pw-{n}-acc") for n in names}
    watcher = MaildirWatcher()
    for user in users.values():
        watcher.watch(stack.maildir(user))
    watcher.start()
    try:
        with stack:

            async def ours() -> dict[str, Series]:
                default, idle, poll, pop3 = await asyncio.gather(
                    exporter_series(stack, users["default"], watcher, roundtrips, "", "default"),
                    exporter_series(stack, users["idle"], watcher, roundtrips, IDLE_ONLY, "idle"),
                    exporter_series(stack, users["poll"], watcher, roundtrips, POLL_1S, "poll"),
                    exporter_series(
                        stack, users["pop3"], watcher, roundtrips, "", "pop3", pop3=True
                    ),
                )
                return {
                    "exporter (default: polls 2 s, then IDLE)": default,
                    "exporter (idle: true)": idle,
                    "exporter (idle: false, poll_interval 1s)": poll,
                    "exporter, POP3 (polls, poll_interval 2s)": pop3,
                }

            results, me, extra = await with_mailexporter(
                stack, users["mailexp"], watcher, workdir, me_interval, ours
            )
    finally:
        watcher.close()
    report = {name: series.report() for name, series in results.items()}
    if me is not None:
        report["mailexporter"] = me.report() | extra
    else:
        report["mailexporter"] = extra
    return report


async def variant_run(
    workdir: Path, index: int, extra: str, imap_extra: str, roundtrips: int
) -> dict[str, Any]:
    stack = TunedStack(workdir / f"variant-{index}", extra)
    user = stack.add_user("idle", "pw-idle-var")
    watcher = MaildirWatcher()
    watcher.watch(stack.maildir(user))
    watcher.start()
    try:
        with stack:
            series = await exporter_series(stack, user, watcher, roundtrips, imap_extra, "idle")
    finally:
        watcher.close()
    return {
        "dovecot_settings": extra.strip() or "(MailStack defaults)",
        "imap": imap_extra.strip(", ") or "(idle: true)",
    } | series.report()


async def slow_run(workdir: Path, roundtrips: int, most: float, seed: int) -> dict[str, Any]:
    """The default IMAP wait and POP3 side by side, each delivery delayed by up to ``most``."""
    stack = TunedStack(workdir / "slow")
    users = {n: stack.add_user(n, f"pw-{n}-slow") for n in ("default", "pop3")}
    watcher = MaildirWatcher()
    for user in users.values():
        watcher.watch(stack.maildir(user))
    watcher.start()
    relay = DelayingRelay(stack.lmtp_port, most, random.Random(seed))
    try:
        with stack:
            await relay.start()
            stack._postconf(f"virtual_transport=lmtp:inet:127.0.0.1:{relay.port}")
            stack._reload_postfix()
            default, pop3 = await asyncio.gather(
                exporter_series(stack, users["default"], watcher, roundtrips, "", "default"),
                exporter_series(stack, users["pop3"], watcher, roundtrips, "", "pop3", pop3=True),
            )
            await relay.close()
    finally:
        watcher.close()
    return {
        "delay": f"uniform 0 to {most} s between Postfix and Dovecot's LMTP",
        "exporter (default: polls 2 s, then IDLE)": default.report(),
        "exporter, POP3 (polls, poll_interval 2s)": pop3.report(),
    }


def render(report: dict[str, Any]) -> str:
    """A compact Markdown table of the errors."""
    lines = [
        "| tool | n | true delivery median ms | error median ms | error p10 | error p90 | "
        "error p99 | error max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = dict(report["main"])
    rows.update({f"variant: {k}": v for k, v in report.get("variants", {}).items()})
    slow = report.get("slow", {})
    rows.update({f"slow delivery: {k}": v for k, v in slow.items() if isinstance(v, dict)})
    for name, data in rows.items():
        err = data.get("error_ms", {})
        if not err or not err.get("n"):
            lines.append(f"| {name} | 0 | | | | | | |")
            continue
        lines.append(
            f"| {name} | {err['n']} | {data['true_delivery_ms']['median']} | {err['median']} | "
            f"{err['p10']} | {err['p90']} | {err['p99']} | {err['max']} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    patch_smtp_send()
    report: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        started = time.monotonic()
        report["main"] = {}
        if args.roundtrips > 0:
            report["main"] = await main_run(Path(tmp), args.roundtrips, args.mailexporter_interval)
        report["main_seconds"] = round(time.monotonic() - started, 1)
        if args.variant_roundtrips > 0:
            report["variants"] = {}
            wanted = args.variants.split(",") if args.variants else list(VARIANTS)
            for index, (name, (extra, imap_extra)) in enumerate(VARIANTS.items()):
                if name not in wanted:
                    continue
                report["variants"][name] = await variant_run(
                    Path(tmp), index, extra, imap_extra, args.variant_roundtrips
                )
        if args.slow_roundtrips > 0:
            report["slow"] = await slow_run(
                Path(tmp), args.slow_roundtrips, args.slow_delay, args.seed
            )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--roundtrips", type=int, default=200, help="per tool (default 200); 0 skips"
    )
    parser.add_argument(
        "--variant-roundtrips", type=int, default=60, help="per Dovecot variant; 0 skips them"
    )
    parser.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument(
        "--mailexporter-interval", default="1s", help="mailexporter's monitoringinterval"
    )
    parser.add_argument(
        "--slow-roundtrips",
        type=int,
        default=0,
        help="round trips of the default IMAP wait and of POP3 with delivery delayed (0 skips)",
    )
    parser.add_argument(
        "--slow-delay", type=float, default=4.0, help="most seconds a delivery is held back"
    )
    parser.add_argument("--seed", type=int, default=1, help="of the delays")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    publish(report, args.json)
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

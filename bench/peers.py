"""CPU cost against peers on the same local Postfix + Dovecot.

    python -m bench.peers --roundtrip-targets 50 --roundtrip-interval 3s --login-probes 300

* round trips: ``mailexporter`` (Debian ``prometheus-mailexporter``, Go) with N configured
  servers, each probing every interval; its CPU (utime + stime from /proc) over a window
  divided by the deliveries it counted (``mail_deliver_durations_seconds_count``). Compare
  with the exporter's CPU per round trip from ``bench/scale.py`` at the same rate. Note that
  mailexporter does much less per round trip: one SMTP session and an inotify watch on a
  maildir it reads directly, no IMAP at all.
* logins over STARTTLS: ``prometheus-blackbox-exporter`` (tcp prober, ``query_response``
  with ``starttls``: greeting, EHLO / CAPABILITY, STARTTLS, handshake, QUIT; no login) against
  the exporter's ``smtp_login`` and ``imap_login`` (which also authenticate), both driven the
  same way: ``--login-probes`` GETs of their ``/probe`` endpoints, ``--concurrency`` at a time.
  CPU per probe is the process's CPU delta divided by the probes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
import trustme

from bench._common import (
    TunedStack,
    cpu_seconds,
    free_port,
    machine,
    publish,
    rss_mib,
    spawn,
    stack_cpu,
    stop_process,
    summary,
    target_entry,
)
from testing.mailstack import MailStack, TlsFiles


async def wait_http(
    session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]
) -> None:
    for _ in range(300):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status < 500:
                    return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# ------------------------------------------------------------------ round trips


async def mailexporter_roundtrips(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    binary = shutil.which("mailexporter")
    if binary is None:
        return {"skipped": "mailexporter is not installed"}
    stack = TunedStack(tmp / "me-stack")
    users = [stack.add_user(f"m{i}", f"pw-me-{i}") for i in range(args.roundtrip_targets)]
    conf = tmp / "mailexporter.conf"
    offset_ms = max(1, int(parse_seconds(args.roundtrip_interval) * 1000 / len(users)))
    conf.write_text(
        f"monitoringinterval: {args.roundtrip_interval}\n"
        "mailchecktimeout: 20s\n"
        f"startupoffset: {offset_ms}ms\n"
        "servers:\n"
        + "".join(
            f"  - name: m{i}\n    server: 127.0.0.1\n    port: {stack.smtp_port}\n"
            f"    login: {u.address}\n    passphrase: {u.password}\n"
            f"    from: {u.address}\n    to: {u.address}\n"
            f"    detectiondir: {stack.maildir(u) / 'new'}\n"
            for i, u in enumerate(users)
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with stack:
        log = (tmp / "mailexporter.log").open("wb")
        process = spawn(
            [binary, "-config.file", str(conf), "-web.listen-address", f"127.0.0.1:{port}"], log
        )
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                await wait_http(session, url, process)
                await asyncio.sleep(args.warmup)
                count0 = await deliveries(session, url)
                cpu0, daemons0, wall0 = cpu_seconds(process.pid), stack_cpu(stack), time.monotonic()
                await asyncio.sleep(args.window)
                cpu1, daemons1 = cpu_seconds(process.pid), stack_cpu(stack)
                seconds = time.monotonic() - wall0
                count1 = await deliveries(session, url)
                rss = rss_mib(process.pid)
        finally:
            stop_process(process)
            log.close()
    done = count1 - count0
    return {
        "servers": len(users),
        "interval": args.roundtrip_interval,
        "window_s": round(seconds, 1),
        "deliveries": done,
        "per_minute": round(done / seconds * 60, 1),
        "cpu_ms_per_roundtrip": round((cpu1 - cpu0) / done * 1000, 3) if done else None,
        "postfix_cpu_ms_per_roundtrip": round(
            (daemons1["postfix"] - daemons0["postfix"]) / done * 1000, 2
        )
        if done
        else None,
        "dovecot_cpu_ms_per_roundtrip": round(
            (daemons1["dovecot"] - daemons0["dovecot"]) / done * 1000, 2
        )
        if done
        else None,
        "rss_mib": round(rss, 1),
    }


async def deliveries(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        text = await response.text()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mail_deliver_durations_seconds_count")
        )
    )


def parse_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for unit in ("ms", "s", "m"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


# ------------------------------------------------------------------ logins over STARTTLS


BLACKBOX_CONFIG = """\
modules:
  smtp_starttls:
    prober: tcp
    timeout: 10s
    tcp:
      tls_config: {{ca_file: {ca}}}
      query_response:
        - expect: "^220 "
        - send: "EHLO bench.example.test\\r"
        - expect: "^250-STARTTLS"
        - send: "STARTTLS\\r"
        - expect: "^220 "
        - starttls: true
        - send: "EHLO bench.example.test\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
        - expect: "^221 "
  imap_starttls:
    prober: tcp
    timeout: 10s
    tcp:
      tls_config: {{ca_file: {ca}}}
      query_response:
        - expect: "^\\\\* OK .*STARTTLS"
        - send: "a1 STARTTLS\\r"
        - expect: "^a1 OK"
        - starttls: true
        - send: "a2 CAPABILITY\\r"
        - expect: "^a2 OK"
        - send: "a3 LOGOUT\\r"
        - expect: "^a3 OK"
"""


async def hammer(
    session: aiohttp.ClientSession,
    url: str,
    count: int,
    concurrency: int,
    ok: str,
) -> tuple[int, list[float]]:
    """GET url ``count`` times, ``concurrency`` at a time; successes and latencies."""
    successes = 0
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        nonlocal successes
        for _ in todo:
            begin = time.perf_counter()
            async with session.get(url) as response:
                text = await response.text()
            latencies.append(time.perf_counter() - begin)
            successes += ok in text

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return successes, latencies


async def measure(
    session: aiohttp.ClientSession,
    pid: int,
    stack: MailStack,
    url: str,
    args: argparse.Namespace,
    ok: str,
) -> dict[str, Any]:
    await hammer(session, url, 10, 2, ok)  # warm up
    cpu0, daemons0, wall0 = cpu_seconds(pid), stack_cpu(stack), time.monotonic()
    successes, latencies = await hammer(session, url, args.login_probes, args.concurrency, ok)
    cpu1, daemons1 = cpu_seconds(pid), stack_cpu(stack)
    seconds = time.monotonic() - wall0
    n = args.login_probes
    return {
        "probes": n,
        "successes": successes,
        "per_second": round(n / seconds, 1),
        "cpu_ms_per_probe": round((cpu1 - cpu0) / n * 1000, 2),
        "postfix_cpu_ms_per_probe": round(
            (daemons1["postfix"] - daemons0["postfix"]) / n * 1000, 2
        ),
        "dovecot_cpu_ms_per_probe": round(
            (daemons1["dovecot"] - daemons0["dovecot"]) / n * 1000, 2
        ),
        "latency_ms": summary(latencies, 1000, 1),
    }


async def logins(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    tls = TlsFiles.write(tmp / "tls", chain, leaf.private_key_pem.bytes())
    stack = TunedStack(tmp / "tls-stack", tls=tls)
    user = stack.add_user("login", "pw-login-1")
    ours_cfg = tmp / "mailbox-exporter.yml"
    ours_cfg.write_text(
        "targets:\n"
        + target_entry(
            stack,
            user,
            "t",
            checks=["smtp_login", "imap_login"],
            interval="1h",
            timeout="10s",
            tls="starttls",
            ca_file=ca_file,
        )
    )
    bb_cfg = tmp / "blackbox.yml"
    bb_cfg.write_text(BLACKBOX_CONFIG.format(ca=ca_file))
    results: dict[str, Any] = {}
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    with stack:
        try:
            ours_port, bb_port = free_port(), free_port()
            logs.append((tmp / "exporter.log").open("wb"))
            ours = spawn(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--config.file",
                    str(ours_cfg),
                    "--web.listen-address",
                    f"127.0.0.1:{ours_port}",
                    "--storage.path",
                    str(tmp / "state"),
                    "--log.level",
                    "warn",
                ],
                logs[-1],
            )
            processes.append(ours)
            binary = shutil.which("prometheus-blackbox-exporter")
            blackbox = None
            if binary:
                logs.append((tmp / "blackbox.log").open("wb"))
                blackbox = spawn(
                    [
                        binary,
                        "--config.file",
                        str(bb_cfg),
                        "--web.listen-address",
                        f"127.0.0.1:{bb_port}",
                        "--log.level",
                        "warn",
                    ],
                    logs[-1],
                )
                processes.append(blackbox)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await wait_http(session, f"http://127.0.0.1:{ours_port}/-/ready", ours)
                base = f"http://127.0.0.1:{ours_port}/probe?target=t&check="
                for check in ("smtp_login", "imap_login"):
                    results[f"exporter {check}"] = await measure(
                        session, ours.pid, stack, base + check, args, "probe_success 1"
                    )
                if blackbox is not None:
                    await wait_http(session, f"http://127.0.0.1:{bb_port}/metrics", blackbox)
                    for module, port in (
                        ("smtp_starttls", stack.smtp_port),
                        ("imap_starttls", stack.imap_port),
                    ):
                        url = (
                            f"http://127.0.0.1:{bb_port}/probe?module={module}"
                            f"&target=127.0.0.1:{port}"
                        )
                        results[f"blackbox {module}"] = await measure(
                            session, blackbox.pid, stack, url, args, "probe_success 1"
                        )
                    results["rss_mib"] = {
                        "exporter": round(rss_mib(ours.pid), 1),
                        "blackbox": round(rss_mib(blackbox.pid), 1),
                    }
        finally:
            for process in processes:
                stop_process(process)
            for log in logs:
                log.close()
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as name:
        tmp = Path(name)
        if args.login_probes > 0:
            report["logins_starttls"] = await logins(args, tmp)
        if args.roundtrip_targets > 0:
            report["mailexporter_roundtrips"] = await mailexporter_roundtrips(args, tmp)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--roundtrip-targets", type=int, default=50, help="0 skips")
    parser.add_argument("--roundtrip-interval", default="3s")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--login-probes", type=int, default=300, help="per check; 0 skips")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    publish(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared helpers for the benchmarks: statistics, /proc accounting, inotify, stacks, configs."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from testing.mailstack import MailStack, MailUser, process_family

ROOT = Path(__file__).resolve().parent.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ statistics


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1]) of a non-empty sequence."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = q * (len(data) - 1)
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    """n, median, p10, p90, p99, min and max, multiplied by ``scale`` (e.g. 1000 for ms)."""
    if not values:
        return {"n": 0}
    out = {
        "n": len(values),
        "median": statistics.median(values),
        "p10": quantile(values, 0.10),
        "p90": quantile(values, 0.90),
        "p99": quantile(values, 0.99),
        "min": min(values),
        "max": max(values),
    }
    return {k: (v if k == "n" else round(v * scale, digits)) for k, v in out.items()}


# ------------------------------------------------------------------ /proc


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime (+ cutime + cstime of reaped children) of a process, in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def rss_mib(pid: int, name: str = "VmRSS") -> float:
    """Resident memory (VmRSS; VmHWM for its peak so far) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def family_cpu(masters: Iterable[int | None]) -> float:
    """CPU seconds of daemon masters and all their descendants (reaped children included).

    Deltas of this sum are exact across children exiting in between: a child's time moves
    into its parent's cutime/cstime when it is reaped.
    """
    total = 0.0
    for master in masters:
        if master is None:
            continue
        for pid in process_family(master):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                total += cpu_seconds(pid)
    return total


def stack_cpu(stack: MailStack) -> dict[str, float]:
    """CPU seconds used so far by this stack's Postfix and Dovecot process trees."""
    return {
        "postfix": family_cpu([stack._postfix_master()]),
        "dovecot": family_cpu([stack._dovecot_master()]),
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / CLK_TCK, sum(parts) / CLK_TCK


def machine() -> dict[str, str]:
    """What the results were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]

    def version(argv: list[str], pattern: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        found = re.search(pattern, out.stdout + out.stderr)
        return found.group(1) if found else "?"

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram_gib": f"{int(mem) / 1024 / 1024:.1f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postfix": version(["postconf", "-d", "mail_version"], r"= (\S+)"),
        "dovecot": version(["dovecot", "--version"], r"(\S+)"),
    }


# ------------------------------------------------------------------ inotify


IN_CREATE = 0x100
IN_MOVED_TO = 0x80
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass
class Arrival:
    """A file that appeared in a watched directory, with the wall-clock time it was seen."""

    wall: float
    directory: Path
    name: str


@dataclass
class MaildirWatcher:
    """Watches new/ and cur/ of maildirs with inotify in a thread of its own.

    Each IN_CREATE or IN_MOVED_TO is stamped with ``time.time()`` as soon as ``read``
    returns, and kept per maildir, so that the first appearance of a message can be told.
    """

    arrivals: dict[Path, list[Arrival]] = field(default_factory=dict)
    _fd: int = -1
    _dirs: dict[int, tuple[Path, Path]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop_r: int = -1
    _stop_w: int = -1

    def __post_init__(self) -> None:
        self._fd = _libc.inotify_init1(os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._stop_r, self._stop_w = os.pipe()

    def watch(self, maildir: Path) -> None:
        self.arrivals.setdefault(maildir, [])
        for sub in ("new", "cur"):
            wd = _libc.inotify_add_watch(
                self._fd, str(maildir / sub).encode(), IN_CREATE | IN_MOVED_TO
            )
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {maildir / sub}")
            self._dirs[wd] = (maildir, maildir / sub)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inotify", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import select

        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            data = os.read(self._fd, 65536)
            now = time.time()
            offset = 0
            while offset < len(data):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16 : offset + 16 + length]
                offset += 16 + length
                name = raw.rstrip(b"\0").decode(errors="replace")
                where = self._dirs.get(wd)
                if where is None:
                    continue
                with self._lock:
                    self.arrivals[where[0]].append(Arrival(now, where[1], name))

    def first_after(self, maildir: Path, since: float) -> Arrival | None:
        """The first file seen in the maildir at or after ``since`` (wall clock)."""
        with self._lock:
            for arrival in self.arrivals.get(maildir, []):
                if arrival.wall >= since:
                    return arrival
        return None

    def first_new_after(self, maildir: Path, since: float) -> Arrival | None:
        """The first message file seen at or after ``since`` that was not seen before it: a
        message left from earlier, moved from new/ to cur/ (as a POP3 login does), is none."""
        with self._lock:
            arrivals = list(self.arrivals.get(maildir, []))
        before = {a.name.split(":", 1)[0] for a in arrivals if a.wall < since}
        return next(
            (a for a in arrivals if a.wall >= since and a.name.split(":", 1)[0] not in before),
            None,
        )

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


# ------------------------------------------------------------------ stacks and configs


class TunedStack(MailStack):
    """A MailStack whose dovecot.conf gets extra (overriding) settings appended to its top."""

    def __init__(self, root: Path, dovecot_extra: str = "", **kwargs: object) -> None:
        self.dovecot_extra = dovecot_extra
        super().__init__(root, **kwargs)  # type: ignore[arg-type]

    def _dovecot_config(self) -> str:
        text = super()._dovecot_config()
        if not self.dovecot_extra:
            return text
        # Later top-level settings win in Dovecot, but the namespace blocks must stay intact:
        # drop any default line for the same key and add ours before the first block.
        extra = self.dovecot_extra.splitlines()
        keys = {line.split("=")[0].strip() for line in extra if "=" in line}
        kept = [
            line
            for line in text.splitlines()
            if not (line and not line[0].isspace() and line.split("=")[0].strip() in keys)
        ]
        return self.dovecot_extra.rstrip("\n") + "\n" + "\n".join(kept) + "\n"


def target_entry(
    stack: MailStack,
    user: MailUser,
    name: str,
    *,
    checks: Sequence[str] = ("roundtrip",),
    interval: str = "10s",
    timeout: str = "10s",
    tls: str = "none",
    ca_file: Path | None = None,
    imap_extra: str = "",
) -> str:
    """One target's YAML (a list item under ``targets:``)."""
    tls_config = f", tls_config: {{ca_file: {ca_file}}}" if ca_file else ""
    return (
        f"  - name: {name}\n"
        f"    checks: [{', '.join(checks)}]\n"
        f"    interval: {interval}\n"
        f"    timeout: {timeout}\n"
        f"    smtp: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: {tls}, "
        f"username: {user.address}, password: '{user.password}'{tls_config}}}\n"
        f"    imap: {{host: 127.0.0.1, port: {stack.imap_port}, tls: {tls}, "
        f"username: {user.address}, password: '{user.password}'{tls_config}{imap_extra}}}\n"
    )


def publish(report: object, path: Path | None) -> None:
    """Print the report as JSON, and write it to ``path`` too when given."""
    text = json.dumps(report, indent=2)
    if path is not None:
        path.write_text(text + "\n")
    print(text)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a process of the benchmark from the repository's root, its output to ``log``."""
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_process(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""The demo as a newcomer runs it: ``python -m scripts.demo`` (what ``./scripts/demo`` runs once
everything is installed), then ``break delivery`` and ``break heal`` from another process. The
page and its resolution must be printed in the demo's terminal, and SIGTERM must stop
everything the demo started. Takes about two minutes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from scripts import demo
from testing.exporter_process import free_port

pytestmark = pytest.mark.services  # the demo: mail stack, exporter, Prometheus, Alertmanager

ROOT = Path(__file__).resolve().parent.parent

PAGE_WITHIN = 150
"""Seconds from a ``break`` to the printed page or ticket: the demo promises two minutes, and
a loaded machine probes and evaluates late."""
RESOLVED_WITHIN = 60


class Terminal:
    """What a process prints, line by line, read as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<closed>")
            self.changed.notify_all()

    def wait_for(self, pattern: str, seconds: float, since: int = 0) -> re.Match[str]:
        """The first line from line ``since`` on matching ``pattern``, waiting for it up to
        ``seconds``."""
        deadline = time.monotonic() + seconds
        seen = since
        with self.changed:
            while True:
                for line in self.lines[seen:]:
                    if found := re.search(pattern, line):
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or "<closed>" in self.lines:
                    raise AssertionError(
                        f"no line matching {pattern!r} within {seconds}s:\n" + self.text()
                    )
                self.changed.wait(left)

    def text(self) -> str:
        return "\n".join(self.lines)


def _command(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--state-file", str(state), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _demo(port: int, state: Path, *args: str) -> subprocess.Popen[str]:
    """The demo, started as a user would, its web UI on ``port``, its output readable."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.demo",
            *args,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--state-file",
            str(state),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _processes_using(path: str) -> list[str]:
    """Command lines of live processes that name ``path`` or run inside it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if path in cmdline or cwd.startswith(path):
            found.append(f"{entry}: {cmdline}")
    return found


def test_break_delivery_pages_in_the_terminal_and_heal_resolves_it(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "demo.json"
    process = _demo(port, state)
    terminal = Terminal(process)
    try:
        terminal.wait_for(r"ready +all checks succeed", 90)
        screen = terminal.text()
        assert "Demo timings" in screen and "at most 30s" in screen, screen
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status") as response:
            status = json.load(response)
        assert [t["state"] for t in status["targets"]] == ["up"], status

        broke = time.monotonic()
        answer = _command(state, "break", "delivery")
        assert answer.returncode == 0, answer.stderr
        assert "MailboxDeliveryStalled" in answer.stdout
        page = terminal.wait_for(
            r"PAGE +FIRING +MailboxDeliveryStalled +target=demo .*location=dc,office",
            PAGE_WITHIN,
        )
        paged_after = time.monotonic() - broke

        healed = time.monotonic()
        answer = _command(state, "break", "heal")
        assert answer.returncode == 0, answer.stderr
        terminal.wait_for(
            r"PAGE +RESOLVED +MailboxDeliveryStalled +target=demo",
            RESOLVED_WITHIN,
        )
        resolved_after = time.monotonic() - healed
        print(f"paged {paged_after:.0f}s after break delivery: {page.group(0)}")
        print(f"resolved {resolved_after:.0f}s after heal")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        terminal.reader.join(10)

    assert code == 0, terminal.text()
    assert not state.exists()
    screen = terminal.text()
    work = re.search(r"Logs: +(\S+)/\{", screen)
    assert work, screen
    assert not Path(work[1]).exists()
    assert _processes_using(work[1]) == []
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", screen.split("Demo timings")[0])]
    assert port in ports and len(ports) >= 5, screen  # exporter (twice), Prometheus, AM, mail
    assert [p for p in ports if not _refused(p)] == []


def test_break_needs_a_running_demo(tmp_path: Path) -> None:
    answer = _command(tmp_path / "missing.json", "break", "delivery")
    assert answer.returncode == 1
    assert "No demo is running" in answer.stderr


def test_the_demo_rules_differ_from_the_shipped_ones_only_in_holds_and_span() -> None:
    shipped = demo.RULES.read_text()
    spanned = demo.shorten_span(shipped, 15)
    assert spanned.count(">= 15\n") >= 5 and ">= 150" not in spanned
    assert [line for line in spanned.splitlines() if ">= 15" not in line] == [
        line for line in shipped.splitlines() if ">= 150" not in line
    ]
    limits = {"for": 30, "keep_firing_for": 20}
    short = demo.shorten_holds(shipped, limits)
    assert yaml.safe_load(short) is not None
    changed = [
        (a, b) for a, b in zip(shipped.splitlines(), short.splitlines(), strict=True) if a != b
    ]
    assert {b.split(":")[0].strip() for _, b in changed} == set(limits), "both kinds are cut"
    for before, after in changed:
        kind = re.fullmatch(r"\s*(for|keep_firing_for): \S+", before)
        assert kind, before
        assert after == f"{before.split(':')[0]}: {limits[kind[1]]}s", after
    assert "for: 5s\n" in demo.shorten_holds("    for: 5s\n", limits)
    assert demo.shorten_holds("    for: 1h30m\n", limits) == "    for: 30s\n"
    assert demo.shorten_holds("    keep_firing_for: 2m\n", limits) == "    keep_firing_for: 20s\n"


def test_the_demo_error_budget_alerts_wait_longer_than_a_probe_page() -> None:
    """As shipped, a burn rate alert holds longer than a probe page takes, so the page that
    quiets it comes first: the demo's holds keep that order."""
    short = demo.shorten_holds(demo.RULES.read_text(), demo.LONGEST_HOLDS)
    burn = next(
        r
        for g in yaml.safe_load(short)["groups"]
        for r in g["rules"]
        if r.get("alert") == "MailboxErrorBudgetBurn"
    )
    interval, evaluation = (
        int(t.removesuffix("s")) for t in (demo.PROBE_INTERVAL, demo.EVALUATION_INTERVAL)
    )
    page_within = demo.FAILING_FOR + interval + 2 * evaluation
    assert int(burn["for"].removesuffix("s")) > page_within, burn["for"]


def test_the_demo_alertmanager_sends_every_receiver_here() -> None:
    config = yaml.safe_load(demo.alertmanager_config(4321))
    urls = [h["url"] for r in config["receivers"] for h in r["webhook_configs"]]
    assert urls and all(u.startswith("http://127.0.0.1:4321/") for u in urls), urls
    assert config["route"]["group_interval"] == demo.GROUP_INTERVAL
    assert config["route"]["group_wait"] == demo.GROUP_WAIT
    shipped = yaml.safe_load(demo.ALERTMANAGER.read_text())
    assert config["inhibit_rules"] == shipped["inhibit_rules"]
    for route in shipped["route"]["routes"]:
        route.pop("mute_time_intervals", None)
    assert config["route"]["routes"] == shipped["route"]["routes"]


def _cycle(terminal: Terminal, state: Path, fault: str, firing: str, resolved: str) -> str:
    """Break ``fault``, wait for ``firing``, heal, wait for ``resolved``; the lines between."""
    start = len(terminal.lines)
    answer = _command(state, "break", fault)
    assert answer.returncode == 0, answer.stderr
    terminal.wait_for(firing, PAGE_WITHIN, start)
    answer = _command(state, "break", "heal")
    assert answer.returncode == 0, answer.stderr
    terminal.wait_for(resolved, RESOLVED_WITHIN, start)
    time.sleep(SETTLE)
    return "\n".join(terminal.lines[start:])


SETTLE = 15
"""Seconds after a resolution in which no further page may arrive."""


@pytest.mark.parametrize(
    ("fault", "alert"),
    [
        ("auth", "MailboxLoginFailing"),
        ("imap", "MailboxServerUnreachable"),
        ("path", "MailboxLocationPathFailing"),
    ],
)
def test_an_outage_pages_once_and_a_cut_path_only_warns(
    tmp_path: Path, fault: str, alert: str
) -> None:
    """As a newcomer tries it: each outage is one FIRING and one RESOLVED page, from both
    locations, whatever the reasons of the failures; the dc location's path cut is a ticket for
    dc and no page. About two minutes each."""
    port = free_port()
    state = tmp_path / "demo.json"
    process = _demo(port, state)
    terminal = Terminal(process)
    kind = "TICKETS" if fault == "path" else "PAGE"
    try:
        terminal.wait_for(r"ready +all checks succeed", 90)
        said = _cycle(
            terminal,
            state,
            fault,
            rf"{kind} +FIRING +{alert} +target=demo",
            rf"{kind} +RESOLVED +{alert} +target=demo",
        )
        print(said)
        if fault == "path":
            assert re.search(rf"TICKETS +FIRING +{alert} +target=demo location=dc\b", said), said
            assert "PAGE " not in said, said
        else:
            pages = re.findall(r"PAGE +(FIRING|RESOLVED) +(\w+)", said)
            assert pages == [("FIRING", alert), ("RESOLVED", alert)], said
            assert "location=dc,office" in said, said
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        terminal.reader.join(10)


def test_the_demo_watches_a_cyrus_mailbox_over_jmap(tmp_path: Path) -> None:
    """``--receiver jmap``: the probe goes over SMTP to a mailbox on Cyrus, watched over JMAP;
    everything stops with the demo."""
    port = free_port()
    state = tmp_path / "demo.json"
    process = _demo(port, state, "--receiver", "jmap")
    terminal = Terminal(process)
    try:
        terminal.wait_for(r"ready +all checks succeed", 90)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status") as response:
            status = json.load(response)
        [target] = status["targets"]
        checks = {check["check"]: check for check in target["checks"]}
        assert {name: check["state"] for name, check in checks.items()} == {
            "roundtrip": "up",
            "smtp_login": "up",
            "jmap_login": "up",
        }, status
        assert "jmap_cleanup" in checks["roundtrip"]["last"]["phases"], status
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        terminal.reader.join(10)
    assert code == 0, terminal.text()
    screen = terminal.text()
    jmap_port = re.search(r"Cyrus JMAP on http://127\.0\.0\.1:(\d+)", screen)
    assert jmap_port, screen
    assert _refused(int(jmap_port[1]))
    work = re.search(r"Logs: +(\S+)/\{", screen)
    assert work, screen
    assert not Path(work[1]).exists() and _processes_using(work[1]) == []

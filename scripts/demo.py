"""The demo: a mail outage that pages.

``./scripts/demo`` starts a throwaway Postfix + Dovecot on 127.0.0.1, two exporters probing one
mailbox on it from two locations (``office`` directly, ``dc`` through a TCP proxy in this
process), Prometheus evaluating the shipped rules, Alertmanager with the example routing, and a
webhook receiver in this process that prints each page. ``./scripts/demo break
auth|delivery|imap|path|heal`` from another shell breaks (or heals) the mail stack, or the dc
location's path to it, of the running demo. ``./scripts/demo --receiver pop3`` watches the
mailbox over POP3 instead of IMAP; ``--receiver jmap`` sends to a mailbox on a throwaway Cyrus
(Postfix delivers to it over LMTP) and watches it over JMAP.
Everything lives in a temporary directory and stops with Ctrl-C or SIGTERM.

Only timings differ from the shipped files, so that a page arrives within a minute or two:
`SHORTENED` says which, and the demo prints it.

The running demo is found through a state file (`STATE_FILE`, readable by root only): the
address of a control endpoint on 127.0.0.1 and a token it requires.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import yaml
from aiohttp import web

from testing.cyrus import CyrusServer, CyrusUser
from testing.exporter_process import free_port
from testing.mailstack import MailStack, MailUser
from testing.proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules/mailbox.rules.yml"
ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"
STATE_FILE = Path(tempfile.gettempdir()) / "mailbox-exporter-demo.json"
TARGET = "demo"

PROBE_INTERVAL, PROBE_TIMEOUT = "15s", "10s"
EVALUATION_INTERVAL = "5s"
FAILING_FOR = 15
"""Seconds of failed probes a page needs in the demo's rules: two probes in a row."""
LONGEST_HOLDS = {"for": 60, "keep_firing_for": 30}
"""Seconds: the demo copy of the rules caps each kind of hold at this. A ``for:`` stays longer
than a probe page takes from both locations (FAILING_FOR, up to a probe interval before the
first failure, two evaluations: 40s), so that, as shipped, the error budget alerts wait for
the probe page that quiets them."""
LOCATIONS = ("office", "dc")
"""Where the demo's two exporters probe from: office directly, dc through :class:`Proxy`."""
GROUP_WAIT, GROUP_INTERVAL = "10s", "10s"
BACKOFF_INITIAL, BACKOFF_MAX = "15s", "30s"

SHORTENED = (
    (
        f"probes of every check every {PROBE_INTERVAL}, timeout {PROBE_TIMEOUT}",
        "defaults: round trip 1m, logins 30s",
    ),
    (f"Prometheus scrapes and evaluates every {EVALUATION_INTERVAL}", "example: 15s"),
    (
        f"rules: every for: at most {LONGEST_HOLDS['for']}s, keep_firing_for:"
        f" at most {LONGEST_HOLDS['keep_firing_for']}s",
        "shipped: up to 15m",
    ),
    (f"rules: a check pages once its failures span {FAILING_FOR}s", "shipped: 150s"),
    (f"Alertmanager group_wait {GROUP_WAIT} for tickets too", "example: 30s, pages 10s"),
    (f"Alertmanager group_interval {GROUP_INTERVAL}, so resolutions come soon", "example: 5m"),
    (
        f"login back-off after refused logins {BACKOFF_INITIAL} to {BACKOFF_MAX}",
        "default: 1m to 15m",
    ),
)
"""What the demo shortens, and what it is outside the demo."""

NOTE = """\
A fault pages after two failed probes in a row: here within about a minute, once per outage
(one FIRING, one RESOLVED), from both locations in one page. Cutting dc's path opens a ticket
for that location within two minutes and pages nobody."""


CONFIG = """\
# Written by scripts/demo: one mailbox on a local Postfix + Dovecot, with short demo timings.
defaults:
  interval: {interval}
  timeout: {timeout}
global:
  login_backoff: {{initial: {initial}, max: {maximum}}}
targets:
  - name: {target}
    smtp: {{host: 127.0.0.1, port: {smtp}, tls: none, username: {address}, password_file: password}}
    {watch}: {{host: 127.0.0.1, port: {watch_port}, tls: none, username: {address},
      password_file: password}}
"""


Children = list[tuple[str, subprocess.Popen[bytes], Path]]
"""Name, process and log of each program the demo runs."""


@dataclass(frozen=True)
class Fault:
    what: str
    pages: str
    breaks: Callable[[MailStack], None]
    heals: Callable[[MailStack], None]


class LocationPath:
    """The dc location's path to the mail stack: its exporter's proxies (SMTP, IMAP)."""

    proxies: ClassVar[list[Proxy]] = []

    @classmethod
    def cut(cls, _: MailStack) -> None:
        cls._each("cut")

    @classmethod
    def restore(cls, _: MailStack) -> None:
        cls._each("start")

    @classmethod
    def _each(cls, method: str) -> None:
        loop = cls.loop
        for proxy in cls.proxies:
            asyncio.run_coroutine_threadsafe(getattr(proxy, method)(), loop).result(10)

    loop: ClassVar[asyncio.AbstractEventLoop]


FAULTS: dict[str, Fault] = {
    # In the order `heal` undoes them: Dovecot first, since delivery and logins need it.
    "imap": Fault(
        "Dovecot stopped: IMAP refused, SMTP closed before its greeting",
        "MailboxServerUnreachable",
        MailStack.stop_dovecot,
        MailStack.start_dovecot,
    ),
    "auth": Fault(
        "password database unreadable: logins fail",
        "MailboxLoginFailing",
        MailStack.break_passwd_file,
        MailStack.restore_passwd_file,
    ),
    "delivery": Fault(
        "Postfix accepts mail but keeps it queued",
        "MailboxDeliveryStalled",
        MailStack.defer_delivery,
        MailStack.resume_delivery,
    ),
    "path": Fault(
        "the dc location's path to the mail servers cut",
        "MailboxLocationPathFailing (a ticket for dc, no page)",
        LocationPath.cut,
        LocationPath.restore,
    ),
}
COMMANDS = (*FAULTS, "heal")


def shorten_holds(rules: str, longest: Mapping[str, int]) -> str:
    """The rules with every hold (``for:``, ``keep_firing_for:``) longer than its kind's
    ``longest`` seconds cut to it; the text is otherwise unchanged (comments included)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

    def cut(match: re.Match[str]) -> str:
        limit = longest[match[2]]
        seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", match[3]))
        return match[1] + (f"{limit}s" if seconds > limit else match[3])

    return re.sub(r"^(\s*(for|keep_firing_for): )(\S+)$", cut, rules, flags=re.MULTILINE)


def shorten_span(rules: str, seconds: int) -> str:
    """The rules with the span of failed probes a page needs cut to ``seconds``."""
    return re.sub(
        r"(mailbox_probe_failing_since_timestamp_seconds(?:\{[^}]*\})? >= )\d+\b",
        rf"\g<1>{seconds}",
        rules,
    )


def alertmanager_config(receiver_port: int) -> str:
    """The example routing with `GROUP_WAIT`, `GROUP_INTERVAL` and no maintenance window, its
    webhooks sent to this process."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["route"].update(group_wait=GROUP_WAIT, group_interval=GROUP_INTERVAL)
    for route in config["route"]["routes"]:
        # The demo pages whatever the time: the example's weekly maintenance window would mute it.
        route.pop("mute_time_intervals", None)
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = re.sub(r"^http://[^/]+", f"http://127.0.0.1:{receiver_port}", hook["url"])
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_config(exporters: dict[str, str], alertmanager: str, rules: Path) -> str:
    return yaml.safe_dump(
        {
            "global": {
                "scrape_interval": EVALUATION_INTERVAL,
                "evaluation_interval": EVALUATION_INTERVAL,
            },
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [
                {
                    "job_name": "mailbox-exporter",
                    "static_configs": [
                        {"targets": [address], "labels": {"location": location}}
                        for location, address in exporters.items()
                    ],
                }
            ],
        },
        sort_keys=False,
    )


def say(line: str) -> None:
    print(line, flush=True)


def stamped(line: str) -> None:
    say(f"{time.strftime('%H:%M:%S')} {line}")


def page_line(receiver: str, notification: dict[str, Any]) -> str:
    """One line for one Alertmanager group (a page): what, where, from which locations, and
    the latest reason (from the first alert's description)."""
    alerts = notification.get("alerts") or [{}]
    labels = alerts[0].get("labels", {})
    where = "target" if "target" in labels else "instance"
    shown = [f"{where}={labels[where]}"] if where in labels else []
    for key in ("check", "location"):
        values = sorted({a["labels"][key] for a in alerts if key in a.get("labels", {})})
        if values:
            shown.append(f"{key}={','.join(values)}")
    kind = "PAGE" if receiver == "pager" else receiver.upper()
    text = alerts[0].get("annotations", {}).get("description", "")
    reason = re.search(r"in phase (\S+) with reason (\w+)", text)
    if reason:
        shown.append(f"phase={reason[1]} reason={reason[2]}")
    summary = alerts[0].get("annotations", {}).get("summary", "")
    return (
        f"{kind:<6} {notification['status'].upper():<8} {labels.get('alertname', '?')}  "
        + " ".join(shown)
        + (f"  | {summary}" if summary else "")
    )


def preferred_port(port: int) -> int:
    """``port`` if it is free on 127.0.0.1, else any free port. In a parallel test run
    (pytest-xdist), where demos start at the same time, always any free port: two could both
    find ``port`` free and then both try to listen on it."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


# ------------------------------------------------------------------ the running demo


@dataclass
class Demo:
    stack: MailStack
    token: str
    printed: dict[str, str] = field(default_factory=dict)
    """Alertmanager group to the status last printed: each page and its resolution is printed
    once, whatever alerts join the group meanwhile."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def notified(self, request: web.Request) -> web.Response:
        """Alertmanager's webhook: print each group (a page, or a ticket) whose status changed."""
        body = await request.json()
        key = body.get("groupKey") or json.dumps(body.get("groupLabels"), sort_keys=True)
        if self.printed.get(key) != body.get("status"):
            self.printed[key] = body.get("status", "")
            stamped(page_line(body.get("receiver", "?"), body))
        return web.Response(text="ok\n")

    async def control(self, request: web.Request) -> web.Response:
        """POST /break/NAME from ``scripts/demo break NAME``: apply a fault, or heal all."""
        if not secrets.compare_digest(request.headers.get("X-Demo-Token", ""), self.token):
            return web.Response(status=403, text="wrong token\n")
        name = request.match_info["name"]
        if name not in COMMANDS:
            return web.Response(status=404, text=f"unknown fault {name!r}\n")
        async with self.lock:
            try:
                if name == "heal":
                    for fault in FAULTS.values():
                        await asyncio.to_thread(fault.heals, self.stack)
                    text = "healed: the mail stack works again; resolutions follow"
                else:
                    fault = FAULTS[name]
                    await asyncio.to_thread(fault.breaks, self.stack)
                    text = f"broke {name}: {fault.what}; expect {fault.pages}"
            except Exception as exc:  # the demo keeps running; the caller sees why
                stamped(f"FAULT  {name} failed: {exc}")
                return web.Response(status=500, text=f"{name} failed: {exc}\n")
        stamped(f"FAULT  {text}")
        return web.Response(text=text + "\n")


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own session: Ctrl-C reaches only the demo, which stops it in order."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _wait_ready(
    session: aiohttp.ClientSession, url: str, name: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(150):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"{url}/-/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise SystemExit(f"{name} did not become ready at {url}:\n{_tail(log)}")


async def _watch_probes(session: aiohttp.ClientSession, exporter: str) -> None:
    """Print each check's changes between up and down, as the status page shows them."""
    states: dict[str, str] = {}
    announced = False
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
            async with session.get(f"{exporter}/api/v1/status") as response:
                status = await response.json()
            for target in status["targets"]:
                for check in target["checks"]:
                    state, last = check["state"], check["last"] or {}
                    key = f"{target['name']} {check['check']}"
                    if state != "pending" and states.get(key) != state:
                        why = (
                            f": {last.get('phase')} {last.get('reason')}" if state == "down" else ""
                        )
                        stamped(f"probe  {key} {state}{why}")
                    states[key] = state
            if not announced and states and all(s == "up" for s in states.values()):
                announced = True
                stamped(
                    "ready  all checks succeed. Break something from another shell:"
                    " ./scripts/demo break delivery"
                )
        await asyncio.sleep(1)


@contextlib.contextmanager
def _state_file(path: Path, control: str, token: str) -> Iterator[None]:
    """Announce the control endpoint; refuse to start while another demo owns ``path``."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        other = json.loads(path.read_text())["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(other, 0)
            raise SystemExit(f"a demo is already running (pid {other}, {path})")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"pid": os.getpid(), "control": control, "token": token}, out)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


RECEIVERS = ("imap", "pop3", "jmap")
"""What the demo's round trip watches the mailbox with (``--receiver``)."""


async def run(listen: str, state_file: Path, receiver: str = "imap") -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    MailStack.check_requirements()
    with tempfile.TemporaryDirectory(prefix="mailbox-exporter-demo-") as tmp:
        work = Path(tmp)
        stack = MailStack(work / "mail")
        user = stack.add_user(TARGET, secrets.token_urlsafe(12))
        await asyncio.to_thread(stack.start)
        children: Children = []
        runner: web.AppRunner | None = None
        cyrus: CyrusServer | None = None
        try:
            jmap = None
            if receiver == "jmap":
                cyrus = CyrusServer(work / "cyrus")
                await asyncio.to_thread(cyrus.start)
                stack.route(cyrus.domain, cyrus.lmtp_port, protocol="lmtp")
                jmap = (cyrus, cyrus.add_user(TARGET, secrets.token_urlsafe(12)))
                say(f"Cyrus JMAP on {cyrus.url}, mailbox {jmap[1].address}")
            demo = Demo(stack, secrets.token_urlsafe(16))
            app = web.Application()
            app.router.add_post("/pager", demo.notified)
            app.router.add_post("/tickets", demo.notified)
            app.router.add_post("/break/{name}", demo.control)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            receiver_port = free_port()
            await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
            children, urls = _start_children(
                work, stack, user, listen, receiver_port, receiver, jmap
            )
            LocationPath.loop = asyncio.get_running_loop()
            for proxy in LocationPath.proxies:
                await proxy.start()
            with _state_file(state_file, f"http://127.0.0.1:{receiver_port}", demo.token):
                return await _serve(work, stack, user, children, urls, stop)
        finally:
            for _name, process, _log in reversed(children):
                await asyncio.to_thread(_stop, process)
            if runner is not None:
                await runner.cleanup()
            for proxy in LocationPath.proxies:
                await proxy.close()
            if cyrus is not None:
                await asyncio.to_thread(cyrus.cleanup)
            await asyncio.to_thread(stack.stop)
            stack.cleanup()


def _watch_over_jmap(work: Path, text: str, cyrus: CyrusServer, account: CyrusUser) -> str:
    """The configuration with a ``jmap`` section for ``account`` in place of the IMAP one: the
    probe goes over SMTP to the account's address, which Postfix delivers to Cyrus."""
    (work / "jmap-password").write_text(account.password)
    os.chmod(work / "jmap-password", 0o600)
    watch = re.search(r"^    jmap: \{.*?\}\n", text, re.M | re.S)
    if watch is None:
        raise RuntimeError("the demo configuration has no receiver section")
    section = (
        f"    jmap: {{url: 'http://127.0.0.1:{cyrus.http_port}', username: {account.login},\n"
        f"      password_file: jmap-password}}\n    to: {account.address}\n"
    )
    return text[: watch.start()] + section + text[watch.end() :]


def _start_children(
    work: Path,
    stack: MailStack,
    user: MailUser,
    listen: str,
    receiver_port: int,
    receiver: str = "imap",
    jmap: tuple[CyrusServer, CyrusUser] | None = None,
) -> tuple[Children, dict[str, str]]:
    """Alertmanager, the exporter and Prometheus, in that order; their URLs by name."""
    (work / "password").write_text(user.password)
    os.chmod(work / "password", 0o600)
    config = work / "mailbox-exporter.yml"
    text = CONFIG.format(
        interval=PROBE_INTERVAL,
        timeout=PROBE_TIMEOUT,
        initial=BACKOFF_INITIAL,
        maximum=BACKOFF_MAX,
        target=TARGET,
        smtp=stack.smtp_port,
        watch=receiver,
        watch_port=stack.pop3_port if receiver == "pop3" else stack.imap_port,
        address=user.address,
    )
    if jmap is not None:
        text = _watch_over_jmap(work, text, *jmap)
    config.write_text(text)
    # The dc location: the same mailbox, through proxies that `break path` cuts.
    LocationPath.proxies = [
        Proxy(stack.smtp_port),
        Proxy(int(re.findall(r"(?:port: |127\.0\.0\.1:)(\d+)", config.read_text())[1])),
    ]
    dc_config = work / "mailbox-exporter-dc.yml"
    dc_text = config.read_text()
    for proxy in LocationPath.proxies:
        dc_text = dc_text.replace(f"port: {proxy.upstream},", f"port: {proxy.port},")
        dc_text = dc_text.replace(f"127.0.0.1:{proxy.upstream}'", f"127.0.0.1:{proxy.port}'")
    dc_config.write_text(dc_text)
    dc_listen = f"127.0.0.1:{free_port()}"
    rules = work / "mailbox.rules.yml"
    rules.write_text(shorten_span(shorten_holds(RULES.read_text(), LONGEST_HOLDS), FAILING_FOR))
    (work / "alertmanager.yml").write_text(alertmanager_config(receiver_port))
    am_port, prom_port = preferred_port(9093), preferred_port(9090)
    if prom_port == am_port:
        prom_port = free_port()
    (work / "prometheus.yml").write_text(
        prometheus_config({"office": listen, "dc": dc_listen}, f"127.0.0.1:{am_port}", rules)
    )
    started: Children = []
    for name, argv in (
        (
            "alertmanager",
            [
                shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
                f"--config.file={work / 'alertmanager.yml'}",
                f"--storage.path={work / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
        ),
        (
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                listen,
                "--storage.path",
                str(work / "exporter-data"),
            ],
        ),
        (
            "exporter-dc",
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(dc_config),
                "--web.listen-address",
                dc_listen,
                "--storage.path",
                str(work / "exporter-dc-data"),
            ],
        ),
        (
            "prometheus",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
        ),
    ):
        log = work / f"{name}.log"
        started.append((name, _start(argv, log), log))
    urls = {
        "alertmanager": f"http://127.0.0.1:{am_port}",
        "exporter": f"http://{listen}",
        "exporter-dc": f"http://{dc_listen}",
        "prometheus": f"http://127.0.0.1:{prom_port}",
    }
    return started, urls


async def _serve(
    work: Path,
    stack: MailStack,
    user: MailUser,
    children: Children,
    urls: dict[str, str],
    stop: asyncio.Event,
) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for name, process, log in children:
            await _wait_ready(session, urls[name], name, process, log)
        breaks = "\n".join(
            f"  ./scripts/demo break {name:<9} {what:<62} -> {pages}"
            for name, what, pages in [
                *((name, fault.what, fault.pages) for name, fault in FAULTS.items()),
                ("heal", "every fault above undone", "the pages resolve"),
            ]
        )
        timings = "\n".join(f"  {what:<60} ({usual})" for what, usual in SHORTENED)
        say(
            f"""
mailbox-exporter demo: one mailbox on a throwaway Postfix + Dovecot, the exporter probing it,
Prometheus with the shipped rules, Alertmanager with the example routing, and pages printed here.

  Status page         {urls["exporter"]}/
  Metrics             {urls["exporter"]}/metrics
  Prometheus alerts   {urls["prometheus"]}/alerts
  Alertmanager        {urls["alertmanager"]}/

Mail stack: Postfix on 127.0.0.1:{stack.smtp_port}, Dovecot IMAP on 127.0.0.1:{stack.imap_port}, \
mailbox {user.address}
Logs:       {work}/{{exporter,prometheus,alertmanager}}.log

Demo timings (the shipped files are unchanged; the demo's copies are in {work}):
{timings}
{NOTE}

Break something from another shell, and heal it:
{breaks}
Ctrl-C stops everything.
"""
        )
        watcher = asyncio.create_task(_watch_probes(session, urls["exporter"]))
        try:
            while not stop.is_set():
                for name, process, log in children:
                    if process.poll() is not None:
                        say(f"{name} exited with {process.returncode}:\n{_tail(log)}")
                        return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    say("Stopping.")
    return 0


# ------------------------------------------------------------------ break, from another shell


def send_fault(name: str, state_file: Path) -> int:
    """Ask the running demo to apply fault ``name`` (or heal); print its answer."""
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        print(
            f"No demo is running ({state_file} is missing): start one with ./scripts/demo",
            file=sys.stderr,
        )
        return 1
    request = urllib.request.Request(
        f"{state['control']}/break/{name}",
        method="POST",
        headers={"X-Demo-Token": state["token"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            print(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode().strip(), file=sys.stderr)
    except OSError as exc:
        print(f"The demo does not answer at {state['control']}: {exc}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:10025",
        help="the exporter's address (default 127.0.0.1:10025)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=STATE_FILE,
        help=f"where the running demo says how to reach it (default {STATE_FILE})",
    )
    parser.add_argument(
        "--receiver",
        choices=RECEIVERS,
        default="imap",
        help="watch the mailbox over IMAP (default) or POP3",
    )
    commands = parser.add_subparsers(dest="command")
    breaking = commands.add_parser("break", help="break the running demo's mail stack, or heal it")
    breaking.add_argument("fault", choices=COMMANDS)
    commands.add_parser("heal", help="the same as: break heal")
    args = parser.parse_args(argv)
    if args.command == "break":
        return send_fault(args.fault, args.state_file)
    if args.command == "heal":
        return send_fault("heal", args.state_file)
    return asyncio.run(run(args.listen, args.state_file, args.receiver))


if __name__ == "__main__":
    raise SystemExit(main())

"""Pages, end to end: real mail servers broken on purpose, the exporter, real Prometheus with
the shipped rules, real Alertmanager with the example routing, and a webhook receiver here.

With ``MAILBOX_SHIPPED_TIMINGS=1`` in the environment the test keeps the shipped probe
intervals, a 15s scrape and evaluation interval and the example's Alertmanager timings, and
prints the time from fault to page: that is how docs/alerting.md's table was checked.

Two exporters watch the same mail stack: ``single`` has one target, so its per-target pages
must arrive; ``many`` has three, so a fault raises one widespread page that must inhibit its
per-target ones. Only the timings are shortened (probe intervals, scrape and evaluation
intervals, Alertmanager's group waits, and the widespread alert's keep_firing_for, which
spans a round-trip interval); rules and routing are otherwise the shipped ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from testing.exporter_process import Running, free_port, start
from testing.mailstack import MailStack
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES_FOR_SINGLE = {"MailboxLoginFailing", "MailboxServerUnreachable", "MailboxDeliveryStalled"}
PER_TARGET = {"MailboxRoundTripFailing", *PAGES_FOR_SINGLE}
WINDOWED = {"MailboxErrorBudgetBurn", "MailboxErrorBudgetBurnSlow"}
"""Burn-rate alerts look back hours: failures every two seconds keep them firing long after
healing, by design. They are proven by the rule unit tests instead."""

SHIPPED_TIMINGS = os.environ.get("MAILBOX_SHIPPED_TIMINGS") == "1"
PATIENCE = 400 if SHIPPED_TIMINGS else 60

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Receiver:
    """Collects what Alertmanager sends to the example's receivers."""

    notifications: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                **alert["labels"],
                "status": alert["status"],
                "receiver": n["receiver"],
                "received": n["received"],
            }
            for n in self.notifications
            for alert in n["alerts"]
            if status is None or alert["status"] == status
        ]

    async def until(self, predicate: Callable[[], bool], seconds: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if predicate():
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise AssertionError(f"{what} not received within {seconds}s: {self.alerts()}")


def _process(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


async def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for _ in range(150):
            if process.poll() is not None:
                raise AssertionError(log.read_text())
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never became ready:\n{log.read_text()[-2000:]}")


@dataclass
class Pipeline:
    receiver: Receiver
    single: Running
    many: Running
    prometheus: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(
    mailstack: MailStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    work = tmp_path_factory.mktemp("alerting")
    receiver = Receiver()

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        body["received"] = time.monotonic()
        receiver.notifications.append(body)
        return web.Response()

    app = web.Application()
    app.router.add_post("/pager", receive)
    app.router.add_post("/tickets", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    am_config = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    if not SHIPPED_TIMINGS:
        am_config["route"].update(group_wait="5s", group_interval="1s", repeat_interval="1h")
        for route in am_config["route"]["routes"]:
            route.pop("repeat_interval", None)
            route.pop("group_wait", None)
    for receiver_config in am_config["receivers"]:
        for hook in receiver_config["webhook_configs"]:
            hook["url"] = hook["url"].replace("127.0.0.1:9099", f"127.0.0.1:{hook_port}")
    (work / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    am_port = free_port()
    am_log = work / "alertmanager.log"
    alertmanager = _process(
        [
            shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        am_log,
    )

    single_cfg, many_cfg = work / "single.yml", work / "many.yml"
    fast: dict[str, str | None] = (
        {"interval": None, "timeout": None}
        if SHIPPED_TIMINGS
        else {"interval": "2s", "timeout": "2s"}
    )
    # The lock-out guard would hold back logins after the scenario breaks them, delaying the
    # recovery this test times: it is tested on its own (test_lockout.py).
    unguarded = "global: {login_backoff: {after: 1000}}\n"
    single_cfg.write_text(
        unguarded
        + "targets:\n"
        + target_yaml(mailstack, mailstack.add_user("solo", "pw-solo-1"), name="local", **fast)
    )
    many_cfg.write_text(
        unguarded
        + "targets:\n"
        + "".join(
            target_yaml(
                mailstack, mailstack.add_user(f"many{i}", f"pw-many-{i}"), name=f"box{i}", **fast
            )
            for i in range(3)
        )
    )
    exporters: list[AsyncIterator[Running]] = [
        start(single_cfg, work / "single-log", "--log.level", "info"),
        start(many_cfg, work / "many-log"),
    ]
    single = await anext(exporters[0])
    many = await anext(exporters[1])

    rules = work / "mailbox.rules.yml"
    shipped_rules = (ROOT / "deploy/prometheus/rules/mailbox.rules.yml").read_text()
    assert "keep_firing_for: 2m" in shipped_rules
    rules.write_text(
        shipped_rules
        if SHIPPED_TIMINGS
        else shipped_rules.replace("keep_firing_for: 2m", "keep_firing_for: 8s")
    )
    prom_port = free_port()
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "15s", "evaluation_interval": "15s"}
                if SHIPPED_TIMINGS
                else {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "mailbox-exporter",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{single.port}", f"127.0.0.1:{many.port}"]}
                        ],
                    }
                ],
            }
        )
    )
    prom_log = work / "prometheus.log"
    prometheus = _process(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--rules.alert.resend-delay=1s",
        ],
        prom_log,
    )
    try:
        await _wait_http(f"http://127.0.0.1:{am_port}/-/ready", alertmanager, am_log)
        await _wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prometheus, prom_log)
        yield Pipeline(receiver, single, many, f"http://127.0.0.1:{prom_port}")
    finally:
        for process in (prometheus, alertmanager):
            process.terminate()
            process.wait(10)
        for exporter in exporters:
            await exporter.aclose()
        await runner.cleanup()


async def _firing_in_prometheus(url: str) -> set[tuple[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/alerts") as response:
        data = await response.json()
    return {
        (a["labels"]["alertname"], a["labels"].get("instance", ""))
        for a in data["data"]["alerts"]
        if a["state"] == "firing"
    }


async def _healthy(pipeline: Pipeline) -> None:
    """Wait until every alert fired so far has been resolved and Prometheus shows none."""
    receiver = pipeline.receiver

    def all_resolved() -> bool:
        last: dict[tuple[str, ...], str] = {}
        for alert in receiver.alerts():
            if alert["alertname"] in WINDOWED:
                continue
            key = (
                alert["alertname"],
                alert.get("instance", ""),
                alert.get("target", ""),
                alert.get("check", ""),
            )
            last[key] = alert["status"]
        return all(status == "resolved" for status in last.values())

    await receiver.until(all_resolved, PATIENCE, "resolution of every page")
    deadline = time.monotonic() + PATIENCE
    while await _firing_in_prometheus(pipeline.prometheus) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


SCENARIOS = [
    (
        "logins broken",
        "break_passwd_file",
        "restore_passwd_file",
        [
            {
                "alertname": "MailboxLoginFailing",
                "check": "imap_login",
                "phase": "imap_auth",
                "reason": "auth_temporary",
            },
            {
                "alertname": "MailboxLoginFailing",
                "check": "smtp_login",
                "phase": "smtp_auth",
                "reason": "auth_rejected",
            },
        ],
    ),
    (
        "delivery deferred",
        "defer_delivery",
        "resume_delivery",
        [
            {
                "alertname": "MailboxDeliveryStalled",
                "check": "roundtrip",
                "phase": "delivery",
                "reason": "not_delivered",
            },
        ],
    ),
    (
        "IMAP stopped",
        "stop_dovecot",
        "start_dovecot",
        [
            {
                "alertname": "MailboxServerUnreachable",
                "check": "imap_login",
                "phase": "imap_connect",
                "reason": "connect_refused",
            },
        ],
    ),
]


@pytest.mark.parametrize(
    ("fault", "breaks", "heals", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_a_fault_pages_with_its_reason_and_resolves(
    pipeline: Pipeline,
    mailstack: MailStack,
    fault: str,
    breaks: str,
    heals: str,
    expected: list[dict[str, str]],
) -> None:
    receiver = pipeline.receiver
    await _healthy(pipeline)
    seen_before = len(receiver.notifications)
    single = f"127.0.0.1:{pipeline.single.port}"
    many = f"127.0.0.1:{pipeline.many.port}"

    def new() -> list[dict[str, Any]]:
        return [
            a
            for n in receiver.notifications[seen_before:]
            for a in (
                {**x["labels"], "status": x["status"], "receiver": n["receiver"]}
                for x in n["alerts"]
            )
        ]

    def paged(want: dict[str, str]) -> bool:
        return any(
            a["status"] == "firing"
            and a["instance"] == single
            and a["receiver"] == "pager"
            and a["target"] == "local"
            and a["alertname"] not in WINDOWED
            and all(a.get(k) == v for k, v in want.items())
            for a in new()
        )

    getattr(mailstack, breaks)()
    try:
        took = await receiver.until(lambda: paged({}), PATIENCE, f"{fault}: any page")
        print(f"{fault}: first page after {took:.1f}s")
        for want in expected:
            took = await receiver.until(lambda want=want: paged(want), PATIENCE, f"{fault}: {want}")
            print(f"{fault}: {want['alertname']} {want['check']} paged after {took:.1f}s")
        await receiver.until(
            lambda: any(
                a["alertname"] == "MailboxWidespreadOutage"
                and a["instance"] == many
                and a["status"] == "firing"
                for a in new()
            ),
            60,
            f"{fault}: widespread page",
        )
        firing = await _firing_in_prometheus(pipeline.prometheus)
        assert ("MailboxRoundTripFailing", single) not in firing, (
            "a login alert owns a round trip failing to log in or connect"
        )
        assert {("MailboxWidespreadOutage", many)} <= firing, firing
    finally:
        getattr(mailstack, heals)()

    await _healthy(pipeline)
    delivered = new()
    inhibited = [
        a
        for a in delivered
        if a["status"] == "firing"
        and (
            a["alertname"] == "MailboxRoundTripFailing"
            or (a["instance"] == many and a["alertname"] in PER_TARGET)
        )
    ]
    assert inhibited == [], f"inhibited alerts reached the receiver: {inhibited}"
    for want in expected:
        assert any(
            a["status"] == "resolved"
            and a["instance"] == single
            and all(a.get(k) == v for k, v in want.items())
            for a in delivered
        ), want

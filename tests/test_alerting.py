"""Pages, end to end: real mail servers broken on purpose, the exporter, real Prometheus with
the shipped rules, real Alertmanager with the example routing, and a webhook receiver here.

With ``MAILBOX_SHIPPED_TIMINGS=1`` in the environment the test keeps the shipped probe
intervals, a 15s scrape and evaluation interval and the example's Alertmanager timings, and
prints the time from fault to page: that is how docs/alerting.md's table was checked.

Two exporters watch the same mail stack: ``single`` has one target, so its per-target pages
must arrive; ``many`` has three, so a fault raises one widespread page that must inhibit its
per-target ones. Two more, ``office`` and ``dc``, watch target ``shared`` from two locations
(a ``location`` label at scrape time), each through TCP proxies of its own
(testing/proxy.py): cutting office's proxies is that location's path lost. Only the timings
are shortened (probe intervals, scrape and evaluation intervals, Alertmanager's group waits,
the span of failures a page needs, the path alert's ``for`` and the outage alerts'
keep_firing_for, which spans a round-trip interval); rules and routing are otherwise the
shipped ones, but for the weekly maintenance window (pages would be muted during it).
"""

from __future__ import annotations

import asyncio
import os
import re
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
from testing.proxy import Proxy
from testing.service import stop, until_ready
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
LOCATIONS = ("office", "dc")
PAGES_FOR_SINGLE = {"MailboxLoginFailing", "MailboxServerUnreachable", "MailboxDeliveryStalled"}
PER_TARGET = {"MailboxRoundTripFailing", *PAGES_FOR_SINGLE}
WINDOWED = {"MailboxErrorBudgetBurn", "MailboxErrorBudgetBurnSlow"}
"""Burn-rate alerts look back hours: failures every two seconds keep them firing long after
healing, by design. They are proven by the rule unit tests instead."""

SHIPPED_TIMINGS = os.environ.get("MAILBOX_SHIPPED_TIMINGS") == "1"
PATIENCE = 400 if SHIPPED_TIMINGS else 60
RECOVERY = 2 * PATIENCE
"""How long every page may take to resolve after an outage across all of a test's exporters:
each target's checks must succeed again, and on a loaded machine the last of them comes late."""
SPAN = 6
"""Seconds of failed probes a page needs, for probes every 2 seconds (shipped: 150)."""
HOLD = "8s"
"""The outage alerts' keep_firing_for and the path alert's for (shipped: 2m)."""


def shortened_rules(shipped: str) -> str:
    """The shipped rules with the test's timings: the span a page needs, and the 2-minute
    holds (``keep_firing_for``, and the path alert's ``for``)."""
    short, spans = re.subn(
        r"(mailbox_probe_failing_since_timestamp_seconds(?:\{[^}]*\})? >= )150\b",
        rf"\g<1>{SPAN}",
        shipped,
    )
    assert spans >= 5, "every probe page reads the span"
    short, holds = re.subn(
        r"^(\s*(?:keep_firing_for|for): )2m$", rf"\g<1>{HOLD}", short, flags=re.M
    )
    assert holds >= 3, "widespread, provider, network down and path alerts hold for 2m"
    return short


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
                "description": alert["annotations"].get("description", ""),
                "group": n["groupKey"],
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


@dataclass
class Pipeline:
    receiver: Receiver
    single: Running
    many: Running
    prometheus: str
    alertmanager: str
    proxies: dict[str, list[Proxy]]
    """The TCP proxies (SMTP, IMAP) each location's exporter reaches the mail stack through."""


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
    for route in am_config["route"]["routes"]:
        assert route.pop("mute_time_intervals", None) in (None, ["planned-maintenance"])
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
    proxies: dict[str, list[Proxy]] = {}
    shared = mailstack.add_user("shared", "pw-shared-1")
    for location in LOCATIONS:
        proxies[location] = [Proxy(mailstack.smtp_port), Proxy(mailstack.imap_port)]
        for proxy in proxies[location]:
            await proxy.start()
        smtp, imap = proxies[location]
        (work / f"{location}.yml").write_text(
            unguarded
            + "targets:\n"
            + target_yaml(mailstack, shared, name="shared", **fast)
            .replace(f"port: {mailstack.smtp_port},", f"port: {smtp.port},")
            .replace(f"port: {mailstack.imap_port},", f"port: {imap.port},")
        )
    exporters: list[AsyncIterator[Running]] = [
        start(single_cfg, work / "single-log", "--log.level", "info"),
        start(many_cfg, work / "many-log"),
        *(start(work / f"{location}.yml", work / f"{location}-log") for location in LOCATIONS),
    ]
    single = await anext(exporters[0])
    many = await anext(exporters[1])
    located = [await anext(exporter) for exporter in exporters[2:]]

    rules = work / "mailbox.rules.yml"
    shipped_rules = (ROOT / "deploy/prometheus/rules/mailbox.rules.yml").read_text()
    assert "keep_firing_for: 2m" in shipped_rules
    rules.write_text(shipped_rules if SHIPPED_TIMINGS else shortened_rules(shipped_rules))
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
                            {"targets": [f"127.0.0.1:{single.port}", f"127.0.0.1:{many.port}"]},
                            *(
                                {
                                    "targets": [f"127.0.0.1:{exporter.port}"],
                                    "labels": {"location": location},
                                }
                                for location, exporter in zip(LOCATIONS, located, strict=True)
                            ),
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
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            await until_ready(
                "alertmanager", alertmanager, session, f"http://127.0.0.1:{am_port}/-/ready", am_log
            )
            await until_ready(
                "prometheus", prometheus, session, f"http://127.0.0.1:{prom_port}/-/ready", prom_log
            )
        yield Pipeline(
            receiver,
            single,
            many,
            f"http://127.0.0.1:{prom_port}",
            f"http://127.0.0.1:{am_port}",
            proxies,
        )
    finally:
        for process in (prometheus, alertmanager):
            stop(process)
        for exporter in exporters:
            await exporter.aclose()
        for pair in proxies.values():
            for proxy in pair:
                await proxy.close()
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

    try:
        await receiver.until(all_resolved, RECOVERY, "resolution of every page")
    except AssertionError as unresolved:
        raise AssertionError(f"{unresolved}\n{await _what_fails(pipeline)}") from None
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and any(
        name not in WINDOWED for name, _ in await _firing_in_prometheus(pipeline.prometheus)
    ):
        await asyncio.sleep(0.5)


async def _what_fails(pipeline: Pipeline) -> str:
    """What Prometheus still fires, with each exporter's failing checks and last log lines:
    the evidence a failed recovery needs."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{pipeline.prometheus}/api/v1/alerts") as response,
    ):
        alerts = (await response.json())["data"]["alerts"]
    lines = [
        f"firing: {a['labels']} {a['annotations'].get('description', '')}"
        for a in alerts
        if a["state"] == "firing" and a["labels"]["alertname"] not in WINDOWED
    ]
    for name, exporter in (("single", pipeline.single), ("many", pipeline.many)):
        _, text = await exporter.get("/metrics")
        lines += [
            f"{name}: {line}"
            for line in text.splitlines()
            if line.startswith(("mailbox_probe_failed_info", "mailbox_probe_consecutive_failures"))
            and not line.endswith(" 0.0")
        ]
        lines += [f"{name} log: {line}" for line in exporter.log.read_text().splitlines()[-30:]]
    return "\n".join(lines)


def _is(alert: dict[str, Any], want: dict[str, str]) -> bool:
    """The alert is the wanted one: its labels, and the latest phase and reason in its text
    (they are not labels, so that a changing reason keeps the alert and its page)."""
    labels = {k: v for k, v in want.items() if k not in ("phase", "reason")}
    said = f"in phase {want['phase']} with reason {want['reason']}" if "phase" in want else ""
    text = alert["description"]
    told = said in text or "in phase" not in text  # DeliveryStalled says it in words
    return all(alert.get(k) == v for k, v in labels.items()) and told


def _pages(notifications: list[dict[str, Any]], target: str) -> dict[str, list[str]]:
    """The pager's groups with an alert of ``target``, each with its status as notified, a
    repeat of the same status left out: one page is ``["firing", "resolved"]``."""
    groups: dict[str, list[str]] = {}
    for n in notifications:
        if n["receiver"] != "pager" or not any(
            a["labels"].get("target") == target and a["labels"]["alertname"] not in WINDOWED
            for a in n["alerts"]
        ):
            continue
        statuses = groups.setdefault(n["groupKey"], [])
        if not statuses or statuses[-1] != n["status"]:
            statuses.append(n["status"])
    return groups


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
                {
                    **x["labels"],
                    "status": x["status"],
                    "receiver": n["receiver"],
                    "group": n["groupKey"],
                    "description": x["annotations"].get("description", ""),
                }
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
            and _is(a, want)
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
            and all(a.get(k) == want[k] for k in ("alertname", "check"))
            for a in delivered
        ), want
    # One outage, one page: the local target's pages are one Alertmanager group, notified
    # firing, then resolved once every alert of it has resolved.
    pages = _pages(receiver.notifications[seen_before:], target="local")
    assert list(pages.values()) == [["firing", "resolved"]], pages


def _since(receiver: Receiver, before: int) -> list[dict[str, Any]]:
    return [
        {
            **x["labels"],
            "status": x["status"],
            "receiver": n["receiver"],
            "description": x["annotations"].get("description", ""),
        }
        for n in receiver.notifications[before:]
        for x in n["alerts"]
    ]


async def _firing_for(url: str, target: str) -> set[tuple[str, str]]:
    """(alertname, location) of the alerts of ``target`` firing in Prometheus."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/alerts") as response:
        data = await response.json()
    return {
        (a["labels"]["alertname"], a["labels"].get("location", ""))
        for a in data["data"]["alerts"]
        if a["state"] == "firing" and a["labels"].get("target") == target
    }


async def _until_firing(url: str, target: str, want: set[tuple[str, str]], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if want <= await _firing_for(url, target):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: {want} not firing: {await _firing_for(url, target)}")


async def test_one_locations_path_cut_warns_for_it_and_pages_nobody(pipeline: Pipeline) -> None:
    receiver = pipeline.receiver
    await _healthy(pipeline)
    before = len(receiver.notifications)
    for proxy in pipeline.proxies["office"]:
        await proxy.cut()
    try:
        took = await receiver.until(
            lambda: any(
                a["alertname"] == "MailboxLocationPathFailing"
                and a["status"] == "firing"
                and a["receiver"] == "tickets"
                and a.get("location") == "office"
                and a["target"] == "shared"
                and "see it working: dc" in a["description"]
                for a in _since(receiver, before)
            ),
            PATIENCE,
            "the path warning for office",
        )
        print(f"path cut: MailboxLocationPathFailing for office after {took:.1f}s")
        firing = {
            (name, where)
            for name, where in await _firing_for(pipeline.prometheus, "shared")
            if name not in WINDOWED
        }
        assert firing == {("MailboxLocationPathFailing", "office")}, firing
    finally:
        for proxy in pipeline.proxies["office"]:
            await proxy.start()
    await _healthy(pipeline)
    pages = [a for a in _since(receiver, before) if a["receiver"] == "pager"]
    assert pages == [], f"a location's path paged: {pages}"


async def test_servers_broken_page_once_naming_both_locations(
    pipeline: Pipeline, mailstack: MailStack
) -> None:
    receiver = pipeline.receiver
    await _healthy(pipeline)
    before = len(receiver.notifications)
    broke = time.monotonic()
    mailstack.stop_dovecot()
    try:
        await receiver.until(
            lambda: any(
                a["status"] == "firing"
                and a["receiver"] == "pager"
                and a.get("target") == "shared"
                and "Failing from dc, office." in a["description"]
                for a in _since(receiver, before)
            ),
            PATIENCE,
            "the outage page naming both locations",
        )
        print(f"servers broken: paged after {time.monotonic() - broke:.1f}s")
        await _until_firing(
            pipeline.prometheus,
            "shared",
            {("MailboxServerUnreachable", "office"), ("MailboxServerUnreachable", "dc")},
            "both locations",
        )
        firing = await _firing_for(pipeline.prometheus, "shared")
        assert not {name for name, _ in firing} & {"MailboxLocationPathFailing"}, firing
    finally:
        mailstack.start_dovecot()
    await _healthy(pipeline)
    pages = _pages(receiver.notifications[before:], target="shared")
    assert list(pages.values()) == [["firing", "resolved"]], pages
    located = {
        a["location"]
        for a in _since(receiver, before)
        if a["receiver"] == "pager" and a.get("target") == "shared"
    }
    assert located == {"office", "dc"}, located


async def test_a_silence_keeps_planned_work_from_paging(
    pipeline: Pipeline, mailstack: MailStack
) -> None:
    """One-off maintenance as docs/alerting.md says: a silence on the target, the work (here
    IMAP stopped), and nothing pages while Prometheus shows the outage."""
    receiver = pipeline.receiver
    await _healthy(pipeline)
    now = time.time()
    silence = {
        "matchers": [{"name": "target", "value": "shared", "isRegex": False, "isEqual": True}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 600)),
        "createdBy": "test",
        "comment": "mailbox migration",
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(f"{pipeline.alertmanager}/api/v2/silences", json=silence) as answer:
            assert answer.status == 200, await answer.text()
            silence_id = (await answer.json())["silenceID"]
        before = len(receiver.notifications)
        mailstack.stop_dovecot()
        try:
            await _until_firing(
                pipeline.prometheus,
                "shared",
                {("MailboxServerUnreachable", "office"), ("MailboxServerUnreachable", "dc")},
                "the outage under maintenance",
            )
            await receiver.until(
                lambda: any(
                    a["receiver"] == "pager" and a.get("target") == "local"
                    for a in _since(receiver, before)
                ),
                PATIENCE,
                "the page of the target that is not silenced",
            )
            await asyncio.sleep(3)
        finally:
            mailstack.start_dovecot()
        await _healthy(pipeline)
        async with session.delete(f"{pipeline.alertmanager}/api/v2/silence/{silence_id}") as gone:
            assert gone.status == 200, await gone.text()
    silenced = [a for a in _since(receiver, before) if a.get("target") == "shared"]
    assert silenced == [], f"a silenced target paged: {silenced}"

"""Provider status: Microsoft 365 Service Health over Graph and the Google Workspace status feed,
read by their own tasks into the store, against simulators written from the public references;
the rules and dashboard that use them; a status source that hangs delays no scrape or probe.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as configuration
from exporter.app import Exporter
from exporter.config import ConfigError
from exporter.config.model import ProviderStatus, TlsConfig
from exporter.incidents import sources
from exporter.incidents.collector import ProviderStatusCollector, next_wait
from exporter.incidents.sources import (
    FetchFailure,
    StatusClient,
    google_incidents,
    graph_issue,
    timestamp,
)
from exporter.outcome import Reason
from exporter.probes.context import ProbeContext
from exporter.serve import metrics, status
from exporter.serve.web import create_app
from exporter.shard import ALL
from exporter.state import Store
from exporter.transports.oauth import TokenCache
from testing.simulators.status_feeds import (
    SERVICE_HEALTH_PERMISSION,
    GoogleStatusSimulator,
    ServiceHealthSimulator,
)

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 1.0
"""The collector's interval in these tests (the file allows no less than 1m)."""
TARGETS = """
targets:
  - name: m365
    smtp: {host: 127.0.0.1, port: PORT, tls: none, username: u@contoso.example, password: p}
    checks: [smtp_login]
    interval: 1s
    timeout: 1s
    labels: {provider: microsoft}
  - name: workspace
    smtp: {host: 127.0.0.1, port: PORT, tls: none, username: u@example.org, password: p}
    checks: [smtp_login]
    interval: 1s
    timeout: 1s
    labels: {provider: google}
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(
    health: ServiceHealthSimulator | None = None,
    feed: GoogleStatusSimulator | None = None,
    client_id: str = "status-app",
) -> ProviderStatus:
    """The provider_status section as a file would say it, pointed at the simulators, with
    a test interval."""
    section: dict[str, object] = {}
    if health is not None:
        section["microsoft"] = {
            "tenant": health.tenant,
            "client_id": client_id,
            "client_secret": "s3cret",
            "login_url": health.url,
            "graph_url": health.graph_url,
        }
    if feed is not None:
        section["google"] = {"feed_url": feed.feed_url}
    text = yaml.safe_dump({"provider_status": section}) + TARGETS.replace(
        "PORT", str(_closed_port())
    )
    parsed = configuration.parse(text).provider_status
    assert parsed is not None
    return replace(parsed, interval=INTERVAL, timeout=INTERVAL * 0.8)


def _samples(store: Store) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render(store))
        for s in family.samples
    }


def _incidents(store: Store) -> set[tuple[tuple[str, str], ...]]:
    return {
        tuple(sorted(labels))
        for (name, labels), _ in _samples(store).items()
        if name == "mailbox_provider_incident_info"
    }


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition`` held; fails after ``within``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def health() -> AsyncIterator[ServiceHealthSimulator]:
    async with ServiceHealthSimulator() as sim:
        sim.add_app("status-app", secret="s3cret", permissions=[SERVICE_HEALTH_PERMISSION])
        sim.add_app("mail-app", secret="s3cret", permissions=["Mail.Send", "Mail.ReadWrite"])
        yield sim


@pytest.fixture
async def feed() -> AsyncIterator[GoogleStatusSimulator]:
    async with GoogleStatusSimulator() as sim:
        yield sim


@pytest.fixture
async def collector() -> AsyncIterator[ProviderStatusCollector]:
    tokens = TokenCache()
    running = ProviderStatusCollector(Store(), tokens)
    try:
        yield running
    finally:
        await running.stop()
        await tokens.close()


# --- configuration ----------------------------------------------------------------------------


def test_the_section_is_off_unless_configured_and_names_its_mistakes() -> None:
    base = TARGETS.replace("PORT", "2525")
    assert configuration.parse(base).provider_status is None
    parsed = configuration.parse(
        "provider_status:\n  microsoft: {tenant: t, client_id: c, client_secret: s}\n"
        "  google: {}\n" + base
    ).provider_status
    assert parsed is not None and parsed.microsoft and parsed.google
    assert (parsed.interval, parsed.timeout, parsed.max_incidents) == (300, 30, 20)
    assert parsed.microsoft.services == ("Exchange Online", "Microsoft 365 suite")
    assert parsed.microsoft.oauth2.scope == "https://graph.microsoft.com/.default"
    assert parsed.google.services == ("Gmail",)
    assert parsed.google.feed_url == "https://www.google.com/appsstatus/dashboard/incidents.json"
    for section, message in (
        ("provider_status: {}\n", "provider_status: configure microsoft, google or both"),
        (
            "provider_status: {interval: 30s, google: {}}\n",
            "provider_status.interval: must be at least 1m",
        ),
        (
            "provider_status: {interval: 1m, timeout: 2m, google: {}}\n",
            "provider_status.timeout: must not be longer than the interval",
        ),
        (
            "provider_status: {google: {services: []}}\n",
            "provider_status.google.services: expected a non-empty list",
        ),
        (
            "provider_status: {microsoft: {tenant: t, client_id: c}}\n",
            "provider_status.microsoft: set exactly one of client_secret",
        ),
        ("provider_status: {google: {feed: x}}\n", "provider_status.google.feed: unknown key"),
    ):
        with pytest.raises(ConfigError) as raised:
            configuration.parse(section + base)
        assert message in str(raised.value), str(raised.value)


# --- reading the sources ------------------------------------------------------------------------


def test_graph_issues_and_feed_entries_are_read_whatever_their_case() -> None:
    # The list-issues reference's own example spells values in PascalCase.
    issue = graph_issue(
        {
            "id": "EX226792",
            "service": "Exchange Online",
            "classification": "Incident",
            "status": "ServiceDegradation",
            "startDateTime": "2020-11-13T21:00:00Z",
            "lastModifiedDateTime": "2020-11-14T18:20:24.7670000Z",
            "isResolved": False,
        },
        ["exchange online"],
    )
    assert issue is not None
    assert (issue.classification, issue.status, issue.service) == (
        "incident",
        "serviceDegradation",
        "exchange online",
    )
    assert issue.start == timestamp("2020-11-13T21:00:00+00:00") == 1605301200.0
    assert issue.modified is not None
    assert graph_issue({"id": "SP1", "service": "SharePoint Online"}, ["Exchange Online"]) is None
    resolved = {"id": "EX2", "service": "Exchange Online", "isResolved": True}
    assert graph_issue(resolved, ["Exchange Online"]) is None
    entries = [
        {"id": "a", "begin": "2026-11-30T10:00:00+00:00", "status_impact": "SERVICE_OUTAGE",
         "service_name": "Multiple Products",
         "affected_products": [{"title": "Gmail"}, {"title": "Google Chat"}]},
        {"id": "b", "begin": "2026-11-30T10:00:00+00:00", "end": "2026-11-30T11:00:00+00:00",
         "service_name": "Gmail"},
        {"id": "c", "status_impact": "SERVICE_INFORMATION", "service_name": "Gmail", "end": None},
        {"id": "d", "service_name": "Google Drive"},
    ]  # fmt: skip
    found = {
        (i.id, i.service, i.classification, i.status) for i in google_incidents(entries, ["Gmail"])
    }
    assert found == {
        ("a", "Gmail", "incident", "SERVICE_OUTAGE"),
        ("c", "Gmail", "advisory", "SERVICE_INFORMATION"),
    }
    with pytest.raises(FetchFailure):
        google_incidents({"not": "a list"}, ["Gmail"])


async def test_an_open_exchange_incident_appears_within_one_interval_and_goes_when_resolved(
    health: ServiceHealthSimulator, collector: ProviderStatusCollector
) -> None:
    started_at = time.time() - 1800
    health.add_issue("EX123456", status="serviceDegradation", start=started_at)
    health.add_issue("SP777", service="SharePoint Online")  # not watched
    health.add_issue("EX1", status="serviceRestored", resolved=True)  # resolved already
    settings = _settings(health)
    collector.apply(settings)
    store = collector.store
    ex = (
        ("classification", "incident"),
        ("incident", "EX123456"),
        ("provider", "microsoft"),
        ("service", "Exchange Online"),
    )
    took = await _until(lambda: bool(_incidents(store)), INTERVAL)
    assert took < INTERVAL
    assert _incidents(store) == {(*ex[:3], ex[3], ("status", "serviceDegradation"))}
    samples = _samples(store)
    start_key = frozenset(
        {"provider": "microsoft", "service": "Exchange Online", "incident": "EX123456"}.items()
    )
    assert samples[("mailbox_provider_incident_start_timestamp_seconds", start_key)] == int(
        started_at
    )
    assert samples[("mailbox_provider_incidents_open", frozenset({("provider", "microsoft")}))] == 1
    microsoft = frozenset({("provider", "microsoft")})
    assert ("mailbox_provider_status_last_success_timestamp_seconds", microsoft) in samples
    # The request asked Graph for open issues only, with the app's token.
    request = next(r for r in health.requests if r.path.endswith("/serviceAnnouncement/issues"))
    assert request.query == {"$filter": "isResolved eq false"}
    assert request.headers["authorization"].startswith("Bearer ")

    health.update_issue("EX123456", status="restoringService")
    await _until(
        lambda: ("status", "restoringService") in next(iter(_incidents(store)), ()), 1.5 * INTERVAL
    )
    health.resolve_issue("EX123456")
    took = await _until(lambda: not _incidents(store), 1.5 * INTERVAL)
    samples = _samples(store)
    assert ("mailbox_provider_incident_start_timestamp_seconds", start_key) not in samples
    assert samples[("mailbox_provider_incidents_open", frozenset({("provider", "microsoft")}))] == 0


async def test_the_google_feed_likewise_and_an_unchanged_feed_is_not_read_again(
    feed: GoogleStatusSimulator, collector: ProviderStatusCollector
) -> None:
    feed.add_incident("gmail1", ["Gmail"], impact="SERVICE_DISRUPTION", begin=time.time() - 60)
    feed.add_incident("chat1", ["Google Chat"], impact="SERVICE_OUTAGE")
    collector.apply(_settings(feed=feed))
    store = collector.store
    took = await _until(lambda: bool(_incidents(store)), INTERVAL)
    assert took < INTERVAL
    assert _incidents(store) == {
        (
            ("classification", "incident"),
            ("incident", "gmail1"),
            ("provider", "google"),
            ("service", "Gmail"),
            ("status", "SERVICE_DISRUPTION"),
        )
    }
    await _until(lambda: feed.count_requests() >= 2, 1.5 * INTERVAL)
    second = feed.requests[1]
    assert second.headers.get("if-none-match"), "the second request is conditional"
    assert _incidents(store), "a 304 keeps what the feed said"
    feed.resolve_incident("gmail1")
    await _until(lambda: not _incidents(store), 1.5 * INTERVAL)


async def test_refusals_are_counted_by_reason_and_a_429_waits_its_retry_after(
    health: ServiceHealthSimulator, collector: ProviderStatusCollector
) -> None:
    # An app without ServiceHealth.Read.All: 403, auth_rejected.
    collector.apply(_settings(health, client_id="mail-app"))
    store = collector.store
    failures = store.providers["microsoft"].failures
    await _until(lambda: failures[Reason.AUTH_REJECTED] >= 1, INTERVAL)
    assert store.providers["microsoft"].last_success is None
    assert "403 Forbidden" in store.providers["microsoft"].last_error
    key = frozenset({("provider", "microsoft"), ("reason", "auth_rejected")})
    assert _samples(store)[("mailbox_provider_status_fetch_failures_total", key)] >= 1
    await collector.stop()

    # Throttled: the next request waits the 3 s Retry-After, not the 1 s interval.
    health.clear_requests()
    health.fail(
        "/v1.0/admin/*",
        429,
        {"error": {"code": "TooManyRequests", "message": "Too many requests."}},
        headers={"Retry-After": "3"},
        times=1,
    )
    collector.apply(_settings(health))
    await _until(lambda: failures_of(collector, Reason.THROTTLED) >= 1, INTERVAL)
    refused_at = time.monotonic()
    path = "/v1.0/admin/serviceAnnouncement/issues"
    await _until(lambda: health.count_requests("GET", path) >= 2, 4.0)
    assert time.monotonic() - refused_at >= 2.5
    await _until(lambda: collector.store.providers["microsoft"].last_success is not None, 1.0)


def failures_of(collector: ProviderStatusCollector, reason: Reason) -> int:
    return collector.store.providers["microsoft"].failures[reason]


def test_back_off_after_refusals_in_a_row() -> None:
    settings = ProviderStatus(interval=60.0)
    assert next_wait(settings, None, 0) == 60
    assert next_wait(settings, FetchFailure(Reason.TIMEOUT, "x"), 3) == 60
    assert next_wait(settings, FetchFailure(Reason.THROTTLED, "x", wait=600), 0) == 600
    assert next_wait(settings, FetchFailure(Reason.THROTTLED, "x", wait=5), 0) == 60
    assert next_wait(settings, FetchFailure(Reason.THROTTLED, "x"), 0) == 120
    assert next_wait(settings, FetchFailure(Reason.THROTTLED, "x"), 2) == 480
    assert next_wait(settings, FetchFailure(Reason.UNAVAILABLE, "x", wait=7200), 0) == 3600


async def test_a_hanging_status_source_delays_no_scrape_and_no_probe(
    health: ServiceHealthSimulator, feed: GoogleStatusSimulator, context: ProbeContext
) -> None:
    health.hang("/v1.0/admin/*")
    feed.hang("/appsstatus/*")
    settings = _settings(health, feed)
    text = TARGETS.replace("PORT", str(_closed_port()))
    loaded = replace(configuration.parse(text), provider_status=settings)
    exporter = Exporter("unused.yml", ALL, context, random.Random(0), key_persistent=False)
    app = create_app(
        exporter.exposition,
        exporter.reload,
        exporter.probe_now,
        lambda: status.snapshot(exporter.store),
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        exporter.start(loaded)
        try:
            slowest = 0.0
            deadline = time.monotonic() + 3 * INTERVAL
            while time.monotonic() < deadline:
                began = time.monotonic()
                answer = await client.get("/metrics")
                body = await answer.text()
                slowest = max(slowest, time.monotonic() - began)
                assert answer.status == 200
                await asyncio.sleep(0.05)
            assert slowest < 0.1, slowest
            store = exporter.store
            for provider in ("microsoft", "google"):
                assert store.providers[provider].failures[Reason.TIMEOUT] >= 2, provider  # type: ignore[index]
            probes = {name: t.checks for name, t in store.targets.items()}
            assert all(c.probes >= 2 for checks in probes.values() for c in checks.values())
            assert (
                'mailbox_provider_status_fetch_failures_total{provider="google",reason="timeout"}'
                in body
            )
            # The status page says the status pages could not be read, and shows no incident.
            page = status.snapshot(store)
            assert page["providers"]["microsoft"]["last_error"].startswith("timeout")
        finally:
            await exporter.stop()


async def test_the_status_page_shows_open_incidents_beside_the_targets_of_their_provider(
    health: ServiceHealthSimulator, feed: GoogleStatusSimulator, context: ProbeContext
) -> None:
    health.add_issue("EX123456", status="serviceInterruption", title="Users can't send mail")
    text = TARGETS.replace("PORT", str(_closed_port()))
    loaded = replace(configuration.parse(text), provider_status=_settings(health, feed))
    exporter = Exporter("unused.yml", ALL, context, random.Random(0), key_persistent=False)
    exporter.start(loaded)
    try:
        store = exporter.store
        await _until(lambda: all(p.last_success for p in store.providers.values()), 2 * INTERVAL)
        data = status.snapshot(store)
        by_name = {t["name"]: t for t in data["targets"]}
        [incident] = by_name["m365"]["provider_status"]["incidents"]
        assert (incident["incident"], incident["status"]) == ("EX123456", "serviceInterruption")
        assert by_name["workspace"]["provider_status"]["incidents"] == []
        page = status.render(data)
        m365 = page[page.index('data-target="m365"') : page.index('data-target="workspace"')]
        assert 'data-incident="EX123456"' in m365 and "serviceInterruption" in m365
        assert "Users can&#x27;t send mail" in m365
        workspace = page[page.index('data-target="workspace"') :]
        assert "No open incident on google" in workspace and "data-incident" not in workspace
        json.dumps(data)  # the JSON API can carry it
    finally:
        await exporter.stop()


def test_the_incident_series_stay_bounded() -> None:
    store = Store()
    store.configure_providers(["microsoft"])
    from exporter.incidents.model import Incident

    many = [
        Incident("microsoft", "Exchange Online", f"EX{n}", "advisory" if n % 2 else "incident",
                 "investigating", float(n))
        for n in range(50)
    ]  # fmt: skip
    store.providers["microsoft"].fetched(many, 20, time.time())
    kept = store.providers["microsoft"].incidents
    assert len(kept) == 20 and all(i.classification == "incident" for i in kept)
    assert kept[0].id == "EX48", "the most recent first"
    text = metrics.render(store)
    assert text.count("mailbox_provider_incident_info{") == 20
    assert 'mailbox_provider_incidents_open{provider="microsoft"} 50' in text
    assert "mailbox_provider_" not in metrics.render(Store()), "nothing while not configured"


def test_the_overview_dashboard_marks_provider_incidents_on_its_time_axis(tmp_path: Path) -> None:
    """The annotation query is valid PromQL and returns one series per open incident, whatever
    number of exporters read the same status page."""
    board = json.loads((ROOT / "deploy/grafana/dashboards/mailbox-overview.json").read_text())
    [note] = [a for a in board["annotations"]["list"] if a.get("name") == "Provider incidents"]
    assert note["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert note["enable"] and "{{incident}}" in note["titleFormat"]
    expr = note["expr"].replace("$job", "mailbox-exporter").replace("$instance", ".*")
    info = (
        'mailbox_provider_incident_info{{job="mailbox-exporter",instance="{}",provider="microsoft",'
        'service="Exchange Online",incident="EX123456",classification="incident",'
        'status="serviceDegradation"}}'
    )
    tests = {
        "rule_files": [str(ROOT / "deploy/prometheus/rules/mailbox.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": info.format("a:10025"), "values": "_ 1 1"},
                    {"series": info.format("b:10025"), "values": "_ 1 1"},
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "0m", "exp_samples": []},
                    {
                        "expr": expr,
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": '{provider="microsoft",service="Exchange Online",'
                                'incident="EX123456",classification="incident",'
                                'status="serviceDegradation"}',
                                "value": 1,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "annotation.test.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "annotation.test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_feed_arriving_in_pieces_is_read_whole_and_a_huge_one_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body is read to its end however the network cuts it (a single read returns only
    what has arrived), and refused once past the limit rather than parsed cut short."""
    piece = b"x" * 16_384

    async def pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(int(request.query["n"])):
            await response.write(piece)
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/feed", pieces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/feed"
    monkeypatch.setattr(sources, "MAX_FEED_BYTES", 40 * len(piece))
    client = StatusClient(TlsConfig(), https=False)
    try:
        answer = await client.get(url, {"n": "30"}, {})
        assert answer.body == piece * 30
        with pytest.raises(FetchFailure, match="larger than"):
            await client.get(url, {"n": "41"}, {})
    finally:
        await client.close()
        await runner.cleanup()

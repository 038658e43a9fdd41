"""What ``GET /probe`` reads from its callers: the scrape timeout header and the names of the
target and check. Anything else than a usable value is a 400, and nothing runs."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from random import Random

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as configuration
from exporter.app import Exporter
from exporter.outcome import Check
from exporter.serve import status
from exporter.serve.web import (
    MIN_TIME_LIMIT,
    SCRAPE_TIMEOUT_HEADER,
    SCRAPE_TIMEOUT_MARGIN,
    create_app,
    time_limit,
)
from exporter.shard import ALL
from testing.exporter_process import free_port, start
from testing.targets import probe_context

BAD_TIMEOUTS = ("nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0.0", "ten")


async def test_a_scrape_timeout_that_is_no_usable_limit_is_refused_and_runs_nothing(
    tmp_path: Path,
) -> None:
    """A NaN or infinite limit never fires: the probe would run for ever against a server
    that never answers, and every later request for the target would join it."""
    connections = 0

    async def never_answer(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n  - name: local\n    interval: 24h\n    timeout: 3s\n"
        f"    imap: {{host: 127.0.0.1, port: {port}, tls: none, username: u@example.org, "
        "password: pw-1}\n"
    )
    try:
        async for running in start(config, tmp_path):
            for value in BAD_TIMEOUTS:
                async with running.session.get(
                    running.url + "/probe?target=local&check=imap_login",
                    headers={SCRAPE_TIMEOUT_HEADER: value},
                    timeout=aiohttp.ClientTimeout(total=8),
                ) as response:
                    text = await response.text()
                assert response.status == 400, (value, text)
                assert SCRAPE_TIMEOUT_HEADER in text, text
            await asyncio.sleep(0.3)
            assert connections == 0, "no probe ran"
            assert "probe finished" not in running.log.read_text()

            # A huge limit is capped at the check's timeout (3s).
            started = time.monotonic()
            async with running.session.get(
                running.url + "/probe?target=local&check=imap_login",
                headers={SCRAPE_TIMEOUT_HEADER: "1e300"},
                timeout=aiohttp.ClientTimeout(total=8),
            ) as response:
                text = await response.text()
            assert response.status == 200, text
            assert time.monotonic() - started < 3 + 1.5
            reasons = {
                sample.labels.get("reason")
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "probe_failed_info"
            }
            assert reasons == {"timeout"}, text
            assert connections == 1
    finally:
        server.close()
        await server.wait_closed()


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=50) | st.floats().map(repr) | st.integers().map(str))
def test_the_scrape_timeout_header_is_a_usable_limit_or_a_value_error(header: str) -> None:
    try:
        limit = time_limit(header)
    except ValueError as exc:
        assert SCRAPE_TIMEOUT_HEADER in str(exc)
        assert len(str(exc)) < 200, "the value is quoted shortened"
        return
    assert limit is not None
    assert math.isfinite(limit) and limit >= MIN_TIME_LIMIT
    assert limit == max(float(header) - SCRAPE_TIMEOUT_MARGIN, MIN_TIME_LIMIT)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[Client]:
    """The exporter's HTTP app in this process, with one target whose servers refuse
    connections at once, so that a probe that does run ends quickly."""
    closed = free_port()
    file = tmp_path / "c.yml"
    file.write_text(
        "global: {on_demand: {roundtrip_every: 1s, login_every: 1s}}\n"
        "targets:\n  - name: local\n    interval: 24h\n    timeout: 2s\n"
        f"    smtp: {{host: 127.0.0.1, port: {closed}, tls: none, username: u@example.org, "
        "password: pw-1}\n"
        f"    imap: {{host: 127.0.0.1, port: {closed}, tls: none, username: u@example.org, "
        "password: pw-1}\n"
    )
    exporter = Exporter(file, ALL, probe_context(), Random(1), key_persistent=False)
    loaded = configuration.load(file)
    exporter.config = loaded
    exporter.rations.policy = loaded.on_demand
    app = create_app(
        exporter.exposition,
        exporter.reload,
        exporter.probe_now,
        lambda: status.snapshot(exporter.store),
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await exporter.stop()


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
"""What a query parameter can carry: any text but lone surrogates, which no URL encodes."""
NAMES = st.sampled_from(["local", "Local", "local\n", " local", "", "imap_login"]) | TEXT
CHECKS = st.sampled_from([c.value for c in Check]) | TEXT
HEADERS = st.sampled_from(BAD_TIMEOUTS) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12
)
"""Header values as a client can send them: printable ASCII."""


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    target=st.none() | st.just("local") | NAMES,
    check=st.none() | CHECKS,
    header=st.none() | HEADERS | st.floats().map(repr),
)
@example(target="local", check="imap_login", header="nan")
async def test_any_probe_request_is_answered_or_refused_with_a_400(
    app_client: Client,
    target: str | None,
    check: str | None,
    header: str | None,
) -> None:
    params = {k: v for k, v in (("target", target), ("check", check)) if v is not None}
    headers = {} if header is None else {SCRAPE_TIMEOUT_HEADER: header}
    response = await app_client.get(
        "/probe", params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    )
    text = await response.text()
    runs = check in (None, "", "roundtrip", "imap_login", "smtp_login")
    if _usable(header) and target == "local" and runs:
        assert response.status in (200, 429), (params, header, text)
    else:
        assert response.status == 400, (params, header, text)


def _usable(header: str | None) -> bool:
    """Whether a header value is a number of seconds a probe can be given."""
    if header is None:
        return True
    try:
        seconds = float(header)
    except ValueError:
        return False
    return math.isfinite(seconds) and seconds > 0

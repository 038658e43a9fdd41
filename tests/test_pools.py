"""HTTP connections kept across probes: the Graph simulator counts the TCP connections the
mail API transports open; round trips in a row reuse them, targets with another TLS
configuration never share them, and a failed or cut-short request leaves the pool usable."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest
import trustme
from aiohttp import web

from exporter import probes
from exporter.app import Exporter
from exporter.config import Target, load, parse
from exporter.outcome import Check, Reason
from exporter.probes.context import ProbeContext
from exporter.shard import ALL
from testing.simulators.graph import GraphSimulator
from testing.targets import probe_context

DOMAIN = "contoso.example"
ROUNDS = 4
_numbers = itertools.count(1)


@pytest.fixture
def graph() -> Iterator[GraphSimulator]:
    sim = GraphSimulator(domains=(DOMAIN,), delivery_delay=0.05)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


def graph_target(sim: GraphSimulator, tls: str = "") -> Target:
    """A target of its own (mailbox and app) on ``sim``, with ``tls`` as its tls_config."""
    number = next(_numbers)
    address = f"probe{number}@{DOMAIN}"
    sim.add_mailbox(address)
    sim.add_app(f"app-{number}", secret=f"secret-{number}-7a1c", mailboxes=[address])
    text = (
        f"targets:\n  - name: t{number}\n    graph:\n      mailbox: {address}\n"
        f"      tenant: {sim.tenant}\n      client_id: app-{number}\n"
        f"      client_secret: secret-{number}-7a1c\n      graph_url: {sim.graph_url}\n"
        f"      login_url: {sim.url}\n      poll_interval: 100ms\n"
    )
    if tls:
        text += f"      tls_config: {tls}\n"
    return parse(text).targets[0]


def connections_of(sim: GraphSimulator, address: str) -> set[int]:
    """The connections that carried requests for ``address``'s mailbox."""
    return {r.connection for r in sim.requests if f"/users/{address}/" in r.path}


async def test_round_trips_in_a_row_reuse_their_connections(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    target = graph_target(graph)
    for _ in range(ROUNDS):
        result = await probes.run(target, Check.ROUNDTRIP, context)
        assert result.success, result
    # token endpoint and API are one host here: one connection, a second at most when a
    # request starts while another is in flight
    assert graph.connections <= 2
    assert len(graph.requests) >= 5 * ROUNDS


async def test_targets_share_connections_only_with_the_same_tls_config(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    first, second = graph_target(graph), graph_target(graph)
    other = graph_target(graph, "{min_version: TLS13}")
    for target in (first, second, other, first, other, second):
        result = await probes.run(target, Check.GRAPH_LOGIN, context)
        assert result.success, result
    first_box, second_box, other_box = (t.section("graph").username for t in (first, second, other))
    shared = connections_of(graph, first_box) | connections_of(graph, second_box)
    assert len(shared) == 1, "targets with the same tls_config reuse one connection"
    assert connections_of(graph, other_box), "the other target made requests"
    assert not connections_of(graph, other_box) & shared


async def test_the_pool_survives_an_error_answer_and_a_request_cut_short(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    target = graph_target(graph)
    mailbox = target.section("graph").username
    assert (await probes.run(target, Check.GRAPH_LOGIN, context)).success
    before = connections_of(graph, mailbox)

    graph.fail("*/mailFolders/*", 503, {"error": {"code": "ServiceUnavailable", "message": "x"}})
    failed = await probes.run(target, Check.GRAPH_LOGIN, context)
    graph.clear_faults()
    assert failed.reason is Reason.UNAVAILABLE
    assert (await probes.run(target, Check.GRAPH_LOGIN, context)).success
    assert connections_of(graph, mailbox) == before, "an error answer keeps the connection"

    graph.hang("*/mailFolders/*")
    started = time.monotonic()
    cut = await probes.run(target, Check.GRAPH_LOGIN, context, time_limit=1.0)
    assert time.monotonic() - started < 2.0, "a pooled request keeps the probe's deadline"
    graph.clear_faults()
    assert cut.reason is Reason.TIMEOUT
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    # the cut connection is gone; one new connection serves everything after it
    assert len(connections_of(graph, mailbox) - before) == 1


async def test_a_reload_renews_the_pools_and_closes_the_old_ones_after_a_grace(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    """A reload may keep a ``tls_config`` whose CA file now holds another CA: connections
    opened after it use a TLS context read afresh; those before it close once their probes
    could be over."""
    target = graph_target(graph)
    mailbox = target.section("graph").username
    assert (await probes.run(target, Check.GRAPH_LOGIN, context)).success
    before = connections_of(graph, mailbox)
    old = context.pools.session(target.section("graph").tls_config)

    context.pools.renew(grace=0.2)
    assert not old.closed, "a probe still holding an old connection keeps it"
    assert (await probes.run(target, Check.GRAPH_LOGIN, context)).success
    assert connections_of(graph, mailbox) - before, "the renewed pool opened a connection"
    assert context.pools.session(target.section("graph").tls_config) is not old
    await asyncio.sleep(0.4)
    assert old.closed


async def test_a_reload_reads_a_rotated_ca_file_afresh(tmp_path: Path) -> None:
    """The server's certificate moves to a new CA and the CA file at the same path is
    rewritten: after a reload the Graph login verifies the server again. Before, the TLS
    context read at start (shared by every transport, SMTP and IMAP too) still trusted the old
    CA only, and every new connection failed until a restart."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    old_ca.issue_cert("127.0.0.1").configure_cert(server_tls)

    async def refuse(request: web.Request) -> web.Response:
        body = {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"}
        return web.json_response(body, status=401, headers={"Connection": "close"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    ca_file = tmp_path / "ca.pem"
    old_ca.cert_pem.write_to_path(str(ca_file))
    config_file = tmp_path / "config.yml"
    url = f"https://127.0.0.1:{port}"
    config_file.write_text(
        f"targets:\n  - name: t\n    checks: [graph_login]\n    graph:\n"
        f"      mailbox: probe@{DOMAIN}\n      tenant: {DOMAIN}\n      client_id: app\n"
        f"      client_secret: secret-5f2e\n      graph_url: {url}\n      login_url: {url}\n"
        f"      tls_config: {{ca_file: {ca_file}}}\n"
    )
    exporter = Exporter(config_file, ALL, probe_context(), Random(1), key_persistent=False)
    exporter.start(load(config_file))
    try:
        target = exporter.config.targets[0]  # type: ignore[union-attr]
        first = await probes.run(target, Check.GRAPH_LOGIN, exporter.context)
        assert first.reason is Reason.AUTH_REJECTED, first

        new_ca.issue_cert("127.0.0.1").configure_cert(server_tls)
        new_ca.cert_pem.write_to_path(str(ca_file))
        assert await exporter.reload() is None
        target = exporter.config.targets[0]  # type: ignore[union-attr]
        second = await probes.run(target, Check.GRAPH_LOGIN, exporter.context)
        assert second.reason is Reason.AUTH_REJECTED, second.detail
    finally:
        await exporter.stop()
        await runner.cleanup()

"""HTTP connections kept across probes: the Graph simulator counts the TCP connections the
mail API transports open; round trips in a row reuse them, targets with another TLS
configuration never share them, and a failed or cut-short request leaves the pool usable."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from exporter import probes
from exporter.config import Target, parse
from exporter.outcome import Check, Reason
from exporter.probes.context import ProbeContext
from testing.simulators.graph import GraphSimulator

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

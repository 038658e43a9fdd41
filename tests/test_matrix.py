"""Every sender with every receiver: a round trip for each pair of the transport registry,
against the real Postfix and Dovecot (IMAP, POP3), Cyrus (JMAP), dnsmasq (the MX lookups of
the ``mx`` sender) and the Graph, Gmail and EWS simulators, which hand outside mail to
Postfix and take their domain's mail from it. Each round trip succeeds, records its delivery
time and leaves no probe in the receiving mailbox."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from exporter import probes
from exporter.config import parse
from exporter.message import PROBE_HEADER
from exporter.outcome import Check
from exporter.probes.context import ProbeContext
from exporter.transports.registry import TRANSPORTS
from testing.cyrus import CyrusServer
from testing.dns import DnsServer
from testing.mailstack import HOST, MailStack
from testing.simulators.ews import EwsSimulator
from testing.simulators.gmail import GmailSimulator
from testing.simulators.graph import GraphSimulator
from testing.targets import (
    cyrus_behind,
    ews_account,
    ews_lines,
    ews_probe_items,
    gmail_mailbox,
    gmail_refresh_token,
    gmail_section,
    graph_mailbox,
    graph_probe_copies,
    graph_secret_app,
    graph_section,
    imap_section,
    jmap_probe_messages,
    jmap_section,
    probe_files,
    smtp_section,
)

pytestmark = pytest.mark.services  # a stack of its own, Cyrus, DNS and three simulators

GRAPH_DOMAIN: Final = "graph.test"
GMAIL_DOMAIN: Final = "gmail.test"
EWS_DOMAIN: Final = "ews.test"
MX_SENDER: Final = "sender.test"
"""The domain the ``mx`` sender writes from: nothing checks it here (no milters)."""
DELIVERY_DELAY: Final = 0.05
"""Seconds each simulator takes to deliver: short, the matrix has many pairs."""
TIMEOUT: Final = "15s"
_numbers = itertools.count(1)


@dataclass
class World:
    """The servers every pair shares: one of each, made once for the module."""

    stack: MailStack
    cyrus: CyrusServer
    dns: DnsServer
    graph: GraphSimulator
    gmail: GmailSimulator
    ews: EwsSimulator


@dataclass(frozen=True)
class End:
    """One end of a pair: its address, its section's lines in a target, the port of its
    domain's MX (where the ``mx`` sender delivers to it; None at a sending end), and what of
    the probe is left in its mailbox (receivers only)."""

    address: str
    lines: str
    mx_port: int | None
    left: Callable[[], list[object]]


def _nothing() -> list[object]:
    """What a sending end is asked: it is not the mailbox looked at."""
    return []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("matrix")
    with MailStack(root / "stack", mx=True) as stack:
        relay = (HOST, _mx_port(stack))
        graph = GraphSimulator(domains=(GRAPH_DOMAIN,), delivery_delay=DELIVERY_DELAY, relay=relay)
        gmail = GmailSimulator(domains=(GMAIL_DOMAIN,), delivery_delay=DELIVERY_DELAY, relay=relay)
        ews = EwsSimulator(domains=(EWS_DOMAIN,), delivery_delay=DELIVERY_DELAY, relay=relay)
        sims = (graph, gmail, ews)
        for sim in sims:
            sim.start_in_thread()
        try:
            for domain, sim in ((GRAPH_DOMAIN, graph), (GMAIL_DOMAIN, gmail), (EWS_DOMAIN, ews)):
                stack.route(domain, sim.smtp_port)
            with (
                cyrus_behind(stack, root / "cyrus") as cyrus,
                DnsServer(root / "dns") as dns,
            ):
                for domain in (stack.domain, cyrus.domain, GRAPH_DOMAIN, GMAIL_DOMAIN, EWS_DOMAIN):
                    dns.mx[domain] = [(10, f"mx.{domain}")]
                    dns.a[f"mx.{domain}"] = HOST
                dns.apply()
                yield World(stack, cyrus, dns, graph, gmail, ews)
        finally:
            for sim in sims:
                sim.stop()


# --- the ends: one builder per transport, for what it sends and what it receives -------------


def _smtp(world: World) -> End:
    user = world.stack.add_user(f"smtp{next(_numbers)}", f"pw-matrix-{next(_numbers)}")
    return End(user.address, f"    smtp: {smtp_section(world.stack, user)}\n", None, _nothing)


def _imap(world: World) -> End:
    stack = world.stack
    user = stack.add_user(f"imap{next(_numbers)}", f"pw-matrix-{next(_numbers)}")
    lines = f"    imap: {imap_section(stack, user)}\n"
    return End(user.address, lines, _mx_port(stack), lambda: list(probe_files(stack, user)))


def _pop3(world: World) -> End:
    stack = world.stack
    user = stack.add_user(f"pop{next(_numbers)}", f"pw-matrix-{next(_numbers)}")
    lines = (
        f"    pop3: {{host: {HOST}, port: {stack.pop3_port}, tls: none, "
        f"username: {user.address}, password: '{user.password}', poll_interval: 200ms}}\n"
    )
    return End(user.address, lines, _mx_port(stack), lambda: list(probe_files(stack, user)))


def _graph(world: World) -> End:
    sim = world.graph
    address = graph_mailbox(sim)
    lines = graph_section(sim, address, graph_secret_app(sim, address))
    return End(address, lines, sim.smtp_port, lambda: list(graph_probe_copies(sim, address)))


def _gmail(world: World) -> End:
    sim = world.gmail
    address = gmail_mailbox(sim)
    lines = gmail_section(sim, address, gmail_refresh_token(sim, address))

    def left() -> list[object]:
        return [m.subject for m in sim.messages(address) if m.header(PROBE_HEADER)]

    return End(address, lines, sim.smtp_port, left)


def _ews(world: World) -> End:
    sim = world.ews
    login, password, address = ews_account(sim)
    lines = ews_lines(sim, address, "ntlm", login, password)
    return End(address, lines, sim.smtp_port, lambda: list(ews_probe_items(sim, address)))


def _jmap(world: World) -> End:
    cyrus = world.cyrus
    account = cyrus.add_user(f"jm{next(_numbers)}", f"pw-matrix-{next(_numbers)}")
    lines = f"    jmap: {jmap_section(cyrus, account)}\n"
    return End(
        account.address,
        lines,
        _mx_port(world.stack),
        lambda: list(jmap_probe_messages(cyrus, account)),
    )


def _mx(world: World, to: End) -> End:
    """Straight to the MX of the receiver's domain, found through DNS: the simulators take
    their own domain's mail, Postfix that of Dovecot and Cyrus."""
    assert to.mx_port is not None, "a receiving end has an MX"
    lines = f"    mx: {{resolver: '{world.dns.address}', port: {to.mx_port}, tls: opportunistic}}\n"
    return End(f"probe{next(_numbers)}@{MX_SENDER}", lines, None, _nothing)


def _mx_port(stack: MailStack) -> int:
    port = stack.mx_port
    assert port is not None, "the stack has an MX port"
    return port


def _sending(make: Callable[[World], End]) -> Callable[[World, End], End]:
    """A sender whose end does not depend on where it sends."""
    return lambda world, _to: make(world)


SENDERS: Final[dict[str, Callable[[World, End], End]]] = {
    "smtp": _sending(_smtp),
    "graph": _sending(_graph),
    "gmail": _sending(_gmail),
    "mx": _mx,
    "ews": _sending(_ews),
    "jmap": _sending(_jmap),
}
"""How each sending transport gets an account of its own (given the receiving end)."""
RECEIVERS: Final[dict[str, Callable[[World], End]]] = {
    "imap": _imap,
    "pop3": _pop3,
    "graph": _graph,
    "gmail": _gmail,
    "ews": _ews,
    "jmap": _jmap,
}
"""How each receiving transport gets a mailbox of its own."""

SENDING: Final = tuple(name for name, transport in TRANSPORTS.items() if transport.sender)
RECEIVING: Final = tuple(name for name, transport in TRANSPORTS.items() if transport.receiver)
PAIRS: Final = [
    pytest.param(sender, receiver, id=f"{sender}-to-{receiver}")
    for sender in SENDING
    for receiver in RECEIVING
]


def _relayed(world: World) -> list[object]:
    """What the simulators handed to Postfix and how that went, for a failure's message."""
    return [
        (attempt.recipients, attempt.error)
        for sim in (world.graph, world.gmail, world.ews)
        for attempt in sim.relayed
    ]


def test_every_transport_has_a_builder() -> None:
    assert set(SENDERS) == set(SENDING), "a sending transport without a builder, or a stale one"
    assert set(RECEIVERS) == set(RECEIVING), "a receiving transport without a builder"


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
async def test_round_trip(
    world: World,
    context: ProbeContext,
    record_property: Callable[[str, object], None],
    sender: str,
    receiver: str,
) -> None:
    to = RECEIVERS[receiver](world)
    # One transport at both ends: one section, its mailbox sending to itself.
    sent_by = to if sender == receiver else SENDERS[sender](world, to)
    sections = to.lines if sender == receiver else sent_by.lines + to.lines
    target = parse(
        f"targets:\n  - name: {sender}-{receiver}\n"
        f"    interval: {TIMEOUT}\n    timeout: {TIMEOUT}\n"
        f"    sender: {sender}\n    receiver: {receiver}\n"
        f"    from: {sent_by.address}\n    to: {to.address}\n" + sections
    ).targets[0]
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, (result.reason, result.detail, _relayed(world), world.stack.log_tail())
    delivery = result.found.delivery_seconds
    assert delivery is not None and delivery >= 0, "the delivery time is recorded"
    record_property("delivery_seconds", delivery)
    assert result.found.cleanup_deleted >= 1 and not result.found.cleanup_failed, result.found
    assert to.left() == [], "the probe is deleted from the receiving mailbox"

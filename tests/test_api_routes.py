"""Any sender with any receiver, through real servers on one side: SMTP submission to real
Postfix, which relays to a simulated provider's inbound SMTP, watched over its API; and an
API send whose mail the simulator relays into real Postfix, delivered by real Dovecot and
watched over IMAP. When the real side holds the mail back, the round trip says
``not_delivered``. Mail the API account itself submits over SMTP leaves a copy in its Sent
folder (as Exchange Online and Gmail keep one), which the round trip deletes too."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import probes
from exporter.config import Target, parse
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing.mailstack import HOST, MailStack, MailUser
from testing.simulators.gmail import FULL_SCOPE, GmailSimulator
from testing.simulators.graph import GraphSimulator

TENANT = "00000000-0000-0000-0000-0000000000bb"
GRAPH_DOMAIN = "contoso.example"
GMAIL_DOMAIN = "gmail.example"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    with MailStack(tmp_path_factory.mktemp("routes"), mx=True) as mail:
        yield mail


@pytest.fixture(scope="module")
def graph(stack: MailStack) -> Iterator[GraphSimulator]:
    assert stack.mx_port is not None
    sim = GraphSimulator(
        tenant=TENANT,
        domains=(GRAPH_DOMAIN,),
        relay=(HOST, stack.mx_port),
        smtp_sent_copies=True,
    )
    sim.start_in_thread()
    stack.route(GRAPH_DOMAIN, sim.smtp_port)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def gmail(stack: MailStack) -> Iterator[GmailSimulator]:
    assert stack.mx_port is not None
    sim = GmailSimulator(
        domains=(GMAIL_DOMAIN,), relay=(HOST, stack.mx_port), smtp_sent_copies=True
    )
    sim.start_in_thread()
    stack.route(GMAIL_DOMAIN, sim.smtp_port)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def user(stack: MailStack) -> MailUser:
    return stack.add_user(f"routed{secrets.token_hex(3)}", "pw-" + secrets.token_hex(8))


def mail_sections(stack: MailStack, user: MailUser) -> str:
    login = f"host: 127.0.0.1, tls: none, username: {user.address}, password: '{user.password}'"
    return (
        f"    smtp: {{port: {stack.smtp_port}, {login}}}\n"
        f"    imap: {{port: {stack.imap_port}, {login}}}\n"
    )


def graph_section(sim: GraphSimulator) -> tuple[str, str]:
    address = f"graph{secrets.token_hex(3)}@{GRAPH_DOMAIN}"
    sim.add_mailbox(address)
    secret = "gs-" + secrets.token_hex(8)
    sim.add_app(f"app-{address}", secret=secret, mailboxes=[address])
    return address, (
        f"    graph:\n      mailbox: {address}\n      tenant: {TENANT}\n"
        f"      client_id: app-{address}\n      client_secret: {secret}\n"
        f"      graph_url: {sim.graph_url}\n      login_url: {sim.url}\n"
        "      poll_interval: 250ms\n"
    )


def gmail_section(sim: GmailSimulator, directory: Path) -> tuple[str, str]:
    address = f"gmail{secrets.token_hex(3)}@{GMAIL_DOMAIN}"
    sim.add_mailbox(address)
    key = sim.create_service_account(f"sa-{address}", f"9{secrets.randbelow(10**8):08d}")
    sim.delegate(key["client_id"], GMAIL_DOMAIN, [FULL_SCOPE])
    path = directory / f"{address}.json"
    path.write_text(json.dumps(key))
    return address, (
        f"    gmail:\n      mailbox: {address}\n      service_account_file: {path}\n"
        f"      api_url: {sim.url}\n      poll_interval: 250ms\n"
    )


def routed(sections: str, sender: str, receiver: str, mail_from: str, mail_to: str) -> Target:
    text = (
        f"targets:\n  - name: routed\n    sender: {sender}\n    receiver: {receiver}\n"
        f"    from: {mail_from}\n    to: {mail_to}\n    timeout: 20s\n{sections}"
    )
    return parse(text).targets[0]


async def test_smtp_to_graph(
    stack: MailStack, graph: GraphSimulator, user: MailUser, context: ProbeContext
) -> None:
    address, section = graph_section(graph)
    target = routed(mail_sections(stack, user) + section, "smtp", "graph", user.address, address)
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert {Phase.SMTP_SEND, Phase.GRAPH_SELECT, Phase.GRAPH_CLEANUP} <= set(result.phases)
    assert graph.messages(address) == []


async def test_graph_to_imap(
    stack: MailStack, graph: GraphSimulator, user: MailUser, context: ProbeContext
) -> None:
    address, section = graph_section(graph)
    target = routed(mail_sections(stack, user) + section, "graph", "imap", address, user.address)
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert {Phase.GRAPH_SEND, Phase.IMAP_SELECT, Phase.IMAP_CLEANUP} <= set(result.phases)
    assert graph.messages(address) == []  # no copy in Sent Items
    assert [r.error for r in graph.relayed] == [None] * len(graph.relayed)


async def test_smtp_to_gmail_and_gmail_to_imap(
    stack: MailStack,
    gmail: GmailSimulator,
    user: MailUser,
    context: ProbeContext,
    tmp_path: Path,
) -> None:
    address, section = gmail_section(gmail, tmp_path)
    sections = mail_sections(stack, user) + section
    inbound = await probes.run(
        routed(sections, "smtp", "gmail", user.address, address), Check.ROUNDTRIP, context
    )
    assert inbound.success, inbound
    outbound = await probes.run(
        routed(sections, "gmail", "imap", address, user.address), Check.ROUNDTRIP, context
    )
    assert outbound.success, outbound
    assert gmail.messages(address) == []  # neither the received nor the sent copy is left


def submitting_as(stack: MailStack, address: str) -> str:
    """The API mailbox's own SMTP login at the submission server (Postfix standing in for the
    provider's, relaying to the simulator): its ``smtp`` section."""
    user = MailUser(address.split("@")[0], "pw-" + secrets.token_hex(8), address)
    stack._write_passwd(user)  # a login of another domain: add_user makes the stack's own
    return (
        f"    smtp: {{port: {stack.smtp_port}, host: 127.0.0.1, tls: none, "
        f"username: {address}, password: '{user.password}'}}\n"
    )


async def test_smtp_to_graph_on_the_same_account_leaves_no_sent_copy(
    stack: MailStack, graph: GraphSimulator, context: ProbeContext
) -> None:
    """The mailbox submits over SMTP to itself: Exchange keeps a Sent Items copy (without
    internet headers, named by its Message-ID); the round trip finds and deletes it."""
    address, section = graph_section(graph)
    target = routed(submitting_as(stack, address) + section, "smtp", "graph", address, address)
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.cleanup_deleted == 2 and not result.found.cleanup_failed
    assert graph.messages(address) == []


async def test_smtp_to_gmail_on_the_same_account_leaves_no_sent_copy(
    stack: MailStack, gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    address, section = gmail_section(gmail, tmp_path)
    target = routed(submitting_as(stack, address) + section, "smtp", "gmail", address, address)
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.cleanup_deleted == 2 and not result.found.cleanup_failed
    assert gmail.messages(address) == []


async def test_postfix_holding_mail_for_graph_is_not_delivered(
    stack: MailStack, graph: GraphSimulator, user: MailUser, context: ProbeContext
) -> None:
    address, section = graph_section(graph)
    target = routed(mail_sections(stack, user) + section, "smtp", "graph", user.address, address)
    stack.defer_delivery("smtp")
    try:
        result = await probes.run(target, Check.ROUNDTRIP, context, time_limit=4)
    finally:
        stack.resume_delivery()
    assert (result.reason, result.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY)


async def test_dovecot_delivery_held_back_is_not_delivered(
    stack: MailStack, graph: GraphSimulator, user: MailUser, context: ProbeContext
) -> None:
    address, section = graph_section(graph)
    target = routed(mail_sections(stack, user) + section, "graph", "imap", address, user.address)
    stack.defer_delivery()
    try:
        result = await probes.run(target, Check.ROUNDTRIP, context, time_limit=4)
    finally:
        stack.resume_delivery()
    assert (result.reason, result.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY)

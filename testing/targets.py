"""Targets for the real mail stack, written as configuration and read by the real parser."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exporter import config
from exporter.config import Target
from exporter.config.model import LoginBackoff
from exporter.message import PROBE_HEADER, ProbeIds
from exporter.probes.context import ProbeContext
from exporter.probes.guard import LoginGuard
from exporter.transports import graph
from exporter.transports.oauth import TokenCache
from testing.cyrus import DOMAIN as CYRUS_DOMAIN
from testing.cyrus import CyrusServer, CyrusUser
from testing.mailstack import MailStack, MailUser
from testing.simulators.ews import EwsSimulator
from testing.simulators.gmail import GmailSimulator
from testing.simulators.graph import GraphSimulator

_numbers = itertools.count(1)
"""Numbers for accounts and apps made on the simulators, unique in a test process."""


def target_yaml(
    stack: MailStack,
    user: MailUser,
    *,
    name: str = "local",
    password: str | None = None,
    timeout: str | None = "10s",
    interval: str | None = "10s",
    extra: str = "",
) -> str:
    """One target's YAML entry for ``user`` on ``stack``; None keeps a built-in default."""
    secret = password if password is not None else user.password
    return (
        f"  - name: {name}\n"
        + (f"    interval: {interval}\n" if interval else "")
        + (f"    timeout: {timeout}\n" if timeout else "")
        + f"    smtp: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, "
        f"username: {user.address}, password: '{secret}'}}\n"
        f"    imap: {{host: 127.0.0.1, port: {stack.imap_port}, tls: none, "
        f"username: {user.address}, password: '{secret}'}}\n"
        f"{extra}"
    )


def make_target(stack: MailStack, user: MailUser, **kwargs: str) -> Target:
    """A target for ``user``, read through the real configuration parser."""
    return config.parse("targets:\n" + target_yaml(stack, user, **kwargs)).targets[0]


def probe_files(stack: MailStack, user: MailUser) -> list[Path]:
    """Message files in the mailbox that carry a probe id header."""
    return [
        path for path in stack.message_files(user) if b"X-Mailbox-Probe-Id:" in path.read_bytes()
    ]


def fixed_ids(context: ProbeContext) -> ProbeIds:
    """The one probe-id key of a test's context."""
    return context.ids


def probe_context(ids: ProbeIds | None = None) -> ProbeContext:
    """A probe context as the exporter builds one, with one fixed key for every target (a new
    random one unless given) and the default lock-out policy."""
    return ProbeContext(
        ids=ids or ProbeIds(),
        tokens=TokenCache(),
        guard=LoginGuard(LoginBackoff()),
    )


# --- sections of the real stack and of Cyrus, as flow mappings -------------------------------


def smtp_section(stack: MailStack, user: MailUser) -> str:
    """``user`` submitting to the stack's Postfix."""
    return (
        f"{{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, username: {user.address}, "
        f"password: '{user.password}'}}"
    )


def imap_section(stack: MailStack, user: MailUser) -> str:
    """``user``'s mailbox in the stack's Dovecot, over IMAP."""
    return (
        f"{{host: 127.0.0.1, port: {stack.imap_port}, tls: none, username: {user.address}, "
        f"password: '{user.password}'}}"
    )


def jmap_section(
    cyrus: CyrusServer, user: CyrusUser, password: str | None = None, url: str = ""
) -> str:
    """``user``'s account on Cyrus's JMAP service."""
    secret = user.password if password is None else password
    return (
        f"{{url: '{url or cyrus.url}', username: {user.login}, password: '{secret}', "
        "poll_interval: 500ms}"
    )


@contextmanager
def cyrus_behind(stack: MailStack, root: Path) -> Iterator[CyrusServer]:
    """Cyrus with JMAP, submitting through ``stack``'s MX port; Postfix delivers mail for its
    domain to its lmtpd."""
    server = CyrusServer(root, smtp_relay=stack.mx_port)
    server.start()
    try:
        stack.route(CYRUS_DOMAIN, server.lmtp_port, protocol="lmtp")
        yield server
    finally:
        server.cleanup()


def jmap_probe_messages(cyrus: CyrusServer, user: CyrusUser) -> list[dict[str, Any]]:
    """Messages of ``user`` that carry a probe id header."""
    return [item for item in cyrus.all_messages(user) if item.get(f"header:{PROBE_HEADER}:asText")]


# --- accounts and sections on the simulators (block lines of a target) ------------------------


def graph_mailbox(sim: GraphSimulator) -> str:
    """A new mailbox on ``sim``, in its first domain."""
    address = f"probe{next(_numbers)}@{sim.domains[0]}"
    sim.add_mailbox(address)
    return address


def graph_secret_app(sim: GraphSimulator, mailbox: str, **app: Any) -> str:
    """Register an app with a client secret for ``mailbox``; its configuration lines."""
    number = next(_numbers)
    secret = f"gs-Secret-{number:04d}-d81f"
    sim.add_app(f"app-{number}", secret=secret, mailboxes=[mailbox], **app)
    return f"      client_id: app-{number}\n      client_secret: {secret}\n"


def graph_section(sim: GraphSimulator, mailbox: str, credentials: str) -> str:
    return (
        f"    graph:\n      mailbox: {mailbox}\n      tenant: {sim.tenant}\n{credentials}"
        f"      graph_url: {sim.graph_url}\n      login_url: {sim.url}\n"
        "      poll_interval: 200ms\n"
    )


def graph_probe_copies(sim: GraphSimulator, address: str) -> list[tuple[str, str]]:
    """Messages that carry a probe id, in any folder (Deleted Items too), by header or by
    Message-ID."""
    return [
        (sim.folder_name(address, m), m.subject)
        for m in sim.messages(address)
        if m.header(PROBE_HEADER) or graph.from_message_id(m.internet_message_id)
    ]


def gmail_mailbox(sim: GmailSimulator) -> str:
    """A new mailbox on ``sim``, in its first domain."""
    address = f"probe{next(_numbers)}@{sim.domains[0]}"
    sim.add_mailbox(address)
    return address


def gmail_refresh_token(sim: GmailSimulator, address: str) -> str:
    """An OAuth client and a refresh token for ``address``; their configuration lines."""
    number = next(_numbers)
    sim.add_oauth_client(f"client-{number}", f"cs-Gmail-{number:04d}-77ab")
    sim.add_refresh_token(f"rt-Gmail-{number:04d}-c3d9", f"client-{number}", address)
    return (
        f"      oauth2:\n        token_url: {sim.token_url}\n        client_id: client-{number}\n"
        f"        client_secret: cs-Gmail-{number:04d}-77ab\n"
        f"        refresh_token: rt-Gmail-{number:04d}-c3d9\n"
    )


def gmail_section(sim: GmailSimulator, address: str, credentials: str) -> str:
    return (
        f"    gmail:\n      mailbox: {address}\n{credentials}"
        f"      api_url: {sim.url}\n      poll_interval: 200ms\n"
    )


def ews_account(sim: EwsSimulator) -> tuple[str, str, str]:
    """A new account and its mailbox: (login, password, address)."""
    number = next(_numbers)
    login, password = f"CORP\\probe{number}", f"Pw-{number:04d}-e1f7"
    address = f"probe{number}@{sim.domains[0]}"
    sim.add_account(login, password, address)
    return login, password, address


def ews_lines(
    sim: EwsSimulator,
    address: str,
    auth: str = "ntlm",
    login: str = "",
    password: str = "",
    extra: str = "",
) -> str:
    """The ``ews`` section for ``address``, signing in with ``auth``."""
    lines = (
        f"    ews:\n      url: {sim.ews_url}\n      mailbox: {address}\n      auth: {auth}\n"
        "      poll_interval: 200ms\n"
    )
    if auth == "oauth2":
        number = next(_numbers)
        secret = f"ews-Secret-{number:04d}-a9c1"
        sim.add_app(f"app-{number}", secret, [address])
        lines += (
            f"      oauth2:\n        tenant: {sim.tenant}\n        client_id: app-{number}\n"
            f"        client_secret: {secret}\n        login_url: {sim.url}\n"
        )
    else:
        lines += f"      username: '{login}'\n      password: '{password}'\n"
    return lines + extra


def ews_probe_items(sim: EwsSimulator, address: str) -> list[tuple[str, str]]:
    """Items that carry a probe id, by header or Message-ID, in any folder."""
    return [
        (item.folder, item.subject)
        for item in sim.items(address)
        if any(n.lower() == PROBE_HEADER.lower() for n, _ in item.headers)
        or graph.from_message_id(item.message_id)
    ]


LARGE_CONFIG_SERVERS = (
    "    smtp: {{host: 127.0.0.1, port: 25, tls: none, username: u{i}@x.test, password: p}}\n"
    "    imap: {{host: 127.0.0.1, port: 143, tls: none, username: u{i}@x.test, password: p}}\n"
)
"""The servers of target number ``{i}`` of a large configuration."""


def full_config(targets: int) -> str:
    """Every target written out in full, as a generated configuration would be."""
    return "targets:\n" + "".join(
        f"  - name: t{i}\n    checks: [roundtrip, smtp_login, imap_login]\n"
        + LARGE_CONFIG_SERVERS.format(i=i)
        for i in range(targets)
    )


def short_config(targets: int) -> str:
    """Servers in ``defaults``, one short line per target."""
    return (
        "defaults:\n"
        "  smtp: {host: 127.0.0.1, port: 25, tls: none, password: p}\n"
        "  imap: {host: 127.0.0.1, port: 143, tls: none, password: p}\n"
        "targets:\n"
        + "".join(
            f"  - {{name: t{i}, smtp: {{username: u{i}@x.test}}, "
            f"imap: {{username: u{i}@x.test}}}}\n"
            for i in range(targets)
        )
    )

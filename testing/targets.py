"""Targets for the real mail stack, written as configuration and read by the real parser."""

from __future__ import annotations

from pathlib import Path

from exporter import config
from exporter.config import Target
from exporter.config.model import LoginBackoff
from exporter.message import ProbeIds
from exporter.probes.context import ProbeContext
from exporter.probes.guard import LoginGuard
from exporter.transports.oauth import TokenCache
from testing.mailstack import MailStack, MailUser


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

"""Shared fixtures: one real Postfix + Dovecot for the session, a fresh mailbox per test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import config
from exporter.config import Target
from tests.identity import IdentityProvider
from tests.mailstack import MailStack, MailUser

_users = itertools.count(1)


@pytest.fixture(scope="session")
def mailstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    stack = MailStack(tmp_path_factory.mktemp("mailstack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def idp() -> Iterator[IdentityProvider]:
    """A token endpoint and introspection endpoint for OAuth2 tests."""
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture(scope="session")
def oauth_mailstack(
    idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailStack]:
    """A mail stack whose Dovecot checks OAuth2 tokens with ``idp`` (passwords work too)."""
    with MailStack(
        tmp_path_factory.mktemp("oauthstack"), oauth2_introspection_url=idp.introspection_url
    ) as mail:
        yield mail


@pytest.fixture
def user(mailstack: MailStack) -> MailUser:
    """A mailbox of its own for each test, so tests never see each other's mail."""
    return mailstack.add_user(f"probe{next(_users)}", "pw-" + secrets.token_hex(8))


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

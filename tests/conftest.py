"""Shared fixtures: one real Postfix + Dovecot for the session, a fresh mailbox per test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from exporter.config.model import LoginBackoff
from exporter.message import ProbeIds
from exporter.probes.context import ProbeContext
from exporter.probes.guard import LoginGuard
from exporter.transports.oauth import TokenCache
from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailUser

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


@pytest.fixture
async def context() -> AsyncIterator[ProbeContext]:
    """What probes share, built once per test as the exporter builds it once per process."""
    shared = ProbeContext(
        ids=ProbeIds(), tokens=TokenCache(), guard=LoginGuard(LoginBackoff())
    )
    try:
        yield shared
    finally:
        await shared.close()

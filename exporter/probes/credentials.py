"""Getting the access token a login step needs, and noting what happened to it."""

from __future__ import annotations

from typing import Protocol

from exporter.config import ServerConfig
from exporter.oauth import TokenCache
from exporter.outcome import ProbeFailure, Reason
from exporter.probes.trace import Trace


class Session(Protocol):
    async def login(self, token: str | None = None) -> None: ...


async def access_token(
    server: ServerConfig, protocol: str, trace: Trace, tokens: TokenCache
) -> str | None:
    """The token for ``server`` if it logs in with OAuth2, else None (it uses a password).

    A token request may take half the time the probe has left, at most 10 s, so that a
    token endpoint that hangs is reported as ``oauth_token`` rather than a probe timeout.
    """
    if server.oauth2 is None:
        return None
    limit = max(0.1, min(10.0, trace.remaining() / 2))
    trace.say(f"requesting an access token ({server.oauth2.grant}) from {server.oauth2.token_url}")
    try:
        token = await tokens.token(server.oauth2, limit)
    except ProbeFailure as failure:
        trace.token_failed.add(protocol)
        trace.say(f"failed: {failure.detail}")
        raise
    trace.token_expiry[protocol] = token.expires_at
    trace.tokens.append(token.value)
    return token.value


def refused(server: ServerConfig, failure: ProbeFailure, tokens: TokenCache) -> None:
    """A token the server refuses is dropped, so that the next probe asks for a new one."""
    if server.oauth2 is not None and failure.reason is Reason.AUTH_REJECTED:
        tokens.forget(server.oauth2)


async def log_in(
    session: Session, server: ServerConfig, protocol: str, trace: Trace, tokens: TokenCache
) -> None:
    """Authenticate ``session`` with a password or a token (fetched first)."""
    token = await access_token(server, protocol, trace, tokens)
    try:
        await session.login(token)
    except ProbeFailure as failure:
        refused(server, failure, tokens)
        raise

"""Logging in to a mail protocol's server, phase by phase, with a password or a token."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from exporter.config import ServerConfig
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.result import TlsSession
from exporter.trace import Trace
from exporter.transports.oauth import TokenCache

TOKEN_SHARE = 0.5
"""A token request may take this share of the time the probe has left..."""
TOKEN_LIMIT = 10.0
"""...and at most this many seconds, so that a token endpoint that hangs is reported as
``oauth_token`` rather than as a probe timeout."""
MIN_SCRUBBED = 3
"""Credentials shorter than this are not scrubbed: replacing every "a" would garble the text."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``<redacted>``, longest first.

    For what a server says after a login, before it is shortened for a detail: a server that
    echoes a command shows the credential, and a secret cut in two is no longer found whole.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED:
            text = text.replace(secret, "<redacted>")
    return text


class Session(Protocol):
    tls: TlsSession | None

    async def open(self) -> None: ...
    async def greet(self) -> None: ...
    async def starttls(self) -> None: ...
    async def login(self, token: str | None = None) -> None: ...
    def secret_forms(self, token: str | None) -> tuple[str, ...]:
        """The credential as ``login`` puts it on the wire (quoted, base64), where that is not
        the credential itself: redacted like it from anything the probe reports."""
        ...


@dataclass(frozen=True)
class LoginPhases:
    """The phases of one protocol's login, and the name its findings are kept under."""

    transport: str
    connect: Phase
    tls: Phase
    auth: Phase


async def access_token(
    server: ServerConfig, transport: str, trace: Trace, tokens: TokenCache
) -> str | None:
    """The token for ``server`` if it logs in with OAuth2, else None (it uses a password)."""
    if server.oauth2 is None:
        return None
    limit = max(0.1, min(TOKEN_LIMIT, trace.remaining() * TOKEN_SHARE))
    trace.say(f"requesting an access token ({server.oauth2.grant}) from {server.oauth2.token_url}")
    try:
        token = await tokens.token(server.oauth2, limit)
    except ProbeFailure as failure:
        trace.found.token_failed.add(transport)
        if failure.retry_after is not None:
            trace.found.retry_after = failure.retry_after
        trace.say(f"failed: {failure.detail}")
        raise
    trace.found.token_expiry[transport] = token.expires_at
    trace.tokens.append(token.value)
    return token.value


async def log_in(
    session: Session,
    server: ServerConfig,
    phases: LoginPhases,
    trace: Trace,
    tokens: TokenCache,
) -> None:
    """Connect, greet, secure and authenticate, each step in its phase.

    A token the server refuses is dropped, so that the next probe asks for a new one. The
    forms the credential takes on the wire are redacted along with it: a server may echo a
    command, and no library text reaches a detail, but the credential must not show even so.
    """
    with trace.phase(phases.connect):
        await session.open()
        if server.tls != "implicit":
            await session.greet()
    if server.tls != "none":
        with trace.phase(phases.tls):
            await (session.greet() if server.tls == "implicit" else session.starttls())
    if session.tls is not None:
        trace.found.tls[phases.transport] = session.tls
    with trace.phase(phases.auth):
        token = await access_token(server, phases.transport, trace, tokens)
        trace.tokens.extend(session.secret_forms(token))
        try:
            await session.login(token)
        except ProbeFailure as failure:
            if failure.reason is Reason.AUTH_REJECTED:
                trace.found.login_refused = phases.transport
                if server.oauth2 is not None:
                    tokens.forget(server.oauth2)
            raise
        trace.found.logged_in.add(phases.transport)

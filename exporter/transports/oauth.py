"""OAuth2 access tokens for SASL XOAUTH2, fetched once and shared.

Every check of every target that uses the same credentials (token endpoint, grant, client,
secret, scope) shares one cached token, so the token endpoint is called once per token
lifetime however many probes need it. A token is refreshed shortly before it expires. Concurrent
probes that need a fresh token wait for a single request. Tokens and secrets never leave this
module but as the value handed to the login step.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from exporter.config import OAuth2Config
from exporter.outcome import ProbeFailure, Reason

REFRESH_BEFORE: Final = 300.0
"""Refresh a token this long before it expires (or at 90% of a shorter lifetime)."""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float
    """Wall-clock expiry, seconds since the epoch."""
    refresh_at: float
    """Monotonic time after which the token is fetched anew."""


_Key = tuple[str, str, str, str, str, str]


class TokenCache:
    """Access tokens by credentials; owns one HTTP client session for all token requests."""

    def __init__(self) -> None:
        self._tokens: dict[_Key, Token] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def token(self, config: OAuth2Config, limit: float) -> Token:
        """A valid token for ``config``; a request takes at most ``limit`` seconds.

        Raises :class:`ProbeFailure` with reason ``oauth_token`` if none can be had.
        """
        key = _key(config)
        cached = self._tokens.get(key)
        if cached is not None and time.monotonic() < cached.refresh_at:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with asyncio.timeout(limit), lock:
                cached = self._tokens.get(key)
                if cached is not None and time.monotonic() < cached.refresh_at:
                    return cached
                token = await self._fetch(config)
        except TimeoutError:
            raise ProbeFailure(
                Reason.OAUTH_TOKEN, f"the token endpoint did not answer within {limit:.1f}s"
            ) from None
        self._tokens[key] = token
        return token

    def forget(self, config: OAuth2Config) -> None:
        """Drop a cached token, for instance one the mail server refused."""
        self._tokens.pop(_key(config), None)

    async def _fetch(self, config: OAuth2Config) -> Token:
        form = {"grant_type": config.grant, "client_id": config.client_id}
        if config.scope:
            form["scope"] = config.scope
        if config.client_secret is not None:
            form["client_secret"] = config.client_secret.reveal()
        if config.refresh_token is not None:
            form["refresh_token"] = config.refresh_token.reveal()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.requests += 1
        started = time.monotonic()
        try:
            async with self._session.post(config.token_url, data=form) as response:
                body = await _json(response)
                status = response.status
        except aiohttp.ClientError as exc:
            raise ProbeFailure(
                Reason.OAUTH_TOKEN, f"cannot reach the token endpoint: {type(exc).__name__}"
            ) from None
        if status != 200 or not isinstance(body.get("access_token"), str):
            error = body.get("error") or "no access_token in the answer"
            description = body.get("error_description") or ""
            detail = f"token endpoint answered {status}: {error} {description}".strip()
            raise ProbeFailure(Reason.OAUTH_TOKEN, _secretless(detail, config)[:300])
        lifetime = _lifetime(body.get("expires_in"))
        margin = min(REFRESH_BEFORE, lifetime * 0.1)
        return Token(
            value=body["access_token"],
            expires_at=time.time() + lifetime,
            refresh_at=started + lifetime - margin,
        )


def _key(config: OAuth2Config) -> _Key:
    def reveal(secret: object) -> str:
        return secret.reveal() if hasattr(secret, "reveal") else ""

    return (
        config.token_url,
        config.grant,
        config.client_id,
        reveal(config.client_secret),
        reveal(config.refresh_token),
        config.scope,
    )


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _lifetime(expires_in: object) -> float:
    try:
        lifetime = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 3600.0
    return max(lifetime, 1.0)


def _secretless(text: str, config: OAuth2Config) -> str:
    for secret in (config.client_secret, config.refresh_token):
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), "<redacted>")
    return text

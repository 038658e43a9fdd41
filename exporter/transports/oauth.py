"""OAuth2 access tokens for SASL XOAUTH2 and the mail APIs, fetched once and shared.

Every check of every target that uses the same credentials (token endpoint, grant, client,
secret or key, subject, scope) shares one cached token, so the token endpoint is called once
per token lifetime however many probes need it. A token is refreshed shortly before it
expires. Concurrent probes that need a fresh token wait for a single request. Tokens and
secrets never leave this module but as the value handed to the login step.

Besides a client secret and a refresh token, a token can be had with a signed JWT (RFC 7523):
as the client's credentials in a client credentials grant (Microsoft's certificate
credentials), or as the grant itself (Google's service accounts). JWTs are signed by PyJWT
with the ``cryptography`` backend.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt

from exporter.config import OAuth2Config
from exporter.outcome import ProbeFailure, Reason
from exporter.transports import net

UNAUTHORIZED_CLIENT: Final = "unauthorized_client"
"""The identity provider's refusal of a valid client for this mailbox or scope (RFC 6749
5.2; Google answers it when domain-wide delegation is not granted): the credentials are
refused, not the token service broken."""
REFRESH_BEFORE: Final = 300.0
"""Refresh a token this long before it expires (or at 90% of a shorter lifetime)."""
ASSERTION_LIFETIME: Final = 600
"""Seconds a signed assertion is valid: one token request, with room for clock skew."""
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float
    """Wall-clock expiry, seconds since the epoch."""
    refresh_at: float
    """Monotonic time after which the token is fetched anew."""


_Key = OAuth2Config
"""Tokens are kept by everything that identifies the credentials: the whole configuration
(token endpoint, grant, client, secret, refresh token, signing key, subject, scope)."""


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
        form = request_form(config)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.requests += 1
        started = time.monotonic()
        tls: ssl.SSLContext | bool = True
        if config.tls_config is not None and config.token_url.startswith("https:"):
            tls = net.tls_context(config.tls_config)
        try:
            async with self._session.post(config.token_url, data=form, ssl=tls) as response:
                body = await _json(response)
                status = response.status
        except aiohttp.ClientError as exc:
            raise ProbeFailure(
                Reason.OAUTH_TOKEN, f"cannot reach the token endpoint: {type(exc).__name__}"
            ) from None
        if status != 200 or not isinstance(body.get("access_token"), str):
            error = body.get("error") or "no access_token in the answer"
            description = body.get("error_description") or ""
            detail = " ".join(f"token endpoint answered {status}: {error} {description}".split())
            reason = Reason.AUTH_REJECTED if error == UNAUTHORIZED_CLIENT else Reason.OAUTH_TOKEN
            raise ProbeFailure(reason, _secretless(detail, config))
        lifetime = _lifetime(body.get("expires_in"))
        margin = min(REFRESH_BEFORE, lifetime * 0.1)
        return Token(
            value=body["access_token"],
            expires_at=time.time() + lifetime,
            refresh_at=started + lifetime - margin,
        )


def _key(config: OAuth2Config) -> _Key:
    return config


def request_form(config: OAuth2Config, now: float | None = None) -> dict[str, str]:
    """The form posted to the token endpoint for ``config``.

    A ``jwt_bearer`` grant sends an assertion with ``iss`` = the client (a service account's
    address), ``sub`` = the user it acts for, ``scope`` and ``aud`` = the token endpoint. A
    client credentials grant with a signing key authenticates the client with an assertion
    whose ``iss`` and ``sub`` are the client id, named by the certificate's thumbprints.
    """
    moment = int(time.time() if now is None else now)
    if config.grant == "jwt_bearer":
        claims: dict[str, Any] = {
            "iss": config.client_id,
            "scope": config.scope,
            "aud": config.token_url,
            "iat": moment,
            "exp": moment + ASSERTION_LIFETIME,
        }
        if config.subject:
            claims["sub"] = config.subject
        return {"grant_type": JWT_BEARER_GRANT, "assertion": _sign(config, claims)}
    form = {"grant_type": config.grant, "client_id": config.client_id}
    if config.scope:
        form["scope"] = config.scope
    if config.signing_key is not None:
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = _sign(
            config,
            {
                "iss": config.client_id,
                "sub": config.client_id,
                "aud": config.token_url,
                "jti": str(uuid.uuid4()),
                "iat": moment,
                "nbf": moment,
                "exp": moment + ASSERTION_LIFETIME,
            },
        )
    if config.client_secret is not None:
        form["client_secret"] = config.client_secret.reveal()
    if config.refresh_token is not None:
        form["refresh_token"] = config.refresh_token.reveal()
    return form


def _sign(config: OAuth2Config, claims: dict[str, Any]) -> str:
    assert config.signing_key is not None
    key = config.signing_key
    try:
        return jwt.encode(
            claims, key.private_key.reveal(), algorithm="RS256", headers=dict(key.headers)
        )
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ProbeFailure(
            Reason.OAUTH_TOKEN, f"cannot sign the assertion: {type(exc).__name__}"
        ) from None


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
    for secret in sorted(config.secrets(), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text

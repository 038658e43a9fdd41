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
import json
import math
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt

from exporter import classify
from exporter.config import OAuth2Config, TlsConfig
from exporter.outcome import ProbeFailure, Reason
from exporter.trace import recorder
from exporter.transports import net
from exporter.transports.retry import retry_after

"""The identity provider's refusal of a valid client for this mailbox or scope (RFC 6749
5.2; Google answers it when domain-wide delegation is not granted): the credentials are
refused, not the token service broken."""
REFRESH_BEFORE: Final = 300.0
"""Refresh a token this long before it expires (or at 90% of a shorter lifetime)."""
MAX_LIFETIME: Final = 24 * 3600.0
"""The longest a token is kept, whatever the endpoint says: providers issue tokens for an hour
or so, and a token that is revoked is dropped when a server refuses it."""
UNSTATED_LIFETIME: Final = 300.0
"""The lifetime of a token whose ``expires_in`` is missing or not a number: short, so that a
token that in fact expires sooner is soon replaced, and the endpoint is still asked rarely."""
MAX_TOKEN_ANSWER: Final = 1024 * 1024
"""Bytes of a token endpoint's answer read: a token is a few kilobytes, a proxy's error page
tens; more is a broken or hostile endpoint, and is not read to the end."""
READ_CHUNK: Final = 64 * 1024
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


KEEPALIVE: Final = 15.0
"""Seconds an idle connection is kept for the next request: well under the idle timeouts of
the providers' front ends (a minute and more), so that a connection is not reused just as the
server drops it, and long enough for the requests of one probe and of probes in a row."""


class ConnectionPools:
    """The HTTP connections kept across probes: one pool per TLS configuration, in which
    aiohttp keeps the connections of each host apart.

    Only connections are shared: no cookies are kept (a ``DummyCookieJar``), no header is set
    but per request, so no target's state reaches another's requests; targets with different
    ``tls_config`` never share a connection, since each has its own pool. A request that fails
    or is cancelled closes its own connection and leaves the pool as it was.
    """

    def __init__(self) -> None:
        self._sessions: dict[TlsConfig | None, aiohttp.ClientSession] = {}
        self._retiring: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def session(self, tls_config: TlsConfig | None) -> aiohttp.ClientSession:
        """The client session for servers verified by ``tls_config`` (None: the system's
        trust store). Plain HTTP is kept apart by TLS configuration too, as a proxy in front
        of the API would be."""
        session = self._sessions.get(tls_config)
        if session is None or session.closed:
            tls: ssl.SSLContext | bool = True if tls_config is None else net.tls_context(tls_config)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, keepalive_timeout=KEEPALIVE),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[tls_config] = session
        return session

    def renew(self, grace: float) -> None:
        """Open new connections from now on, with TLS contexts read afresh (a reloaded
        configuration may name the same CA file with new contents); the old pools are closed
        after ``grace`` seconds, once the probes that hold their connections are over."""
        old, self._sessions = list(self._sessions.values()), {}
        self._retiring.update(old)
        loop = asyncio.get_running_loop()
        for session in old:
            loop.call_later(grace, self._retire, session)

    def _retire(self, session: aiohttp.ClientSession) -> None:
        if session in self._retiring:
            self._retiring.discard(session)
            task = asyncio.create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        sessions, self._sessions = [*self._sessions.values(), *self._retiring], {}
        self._retiring.clear()
        for session in sessions:
            await session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class TokenCache:
    """Access tokens by credentials, and the connection pools that token requests and the
    mail APIs' requests share (handed to the transports with the tokens)."""

    def __init__(self) -> None:
        self._tokens: dict[_Key, Token] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        self.pools = ConnectionPools()
        self.requests = 0

    async def close(self) -> None:
        await self.pools.close()

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
        self.requests += 1
        started = time.monotonic()
        session = self.pools.session(config.tls_config)
        active, recorded = recorder(), 0
        if active is not None:
            active.keep_secret(*(form[name] for name in RECORD_SECRET_FIELDS if name in form))
            recorded = active.request(
                f"POST {urlsplit(config.token_url).path}\n\n{urlencode(form)}"
            )
        try:
            async with session.post(config.token_url, data=form) as response:
                status, headers = response.status, response.headers
                raw = await read_bounded(response, MAX_TOKEN_ANSWER)
        except aiohttp.ClientError as exc:
            raise ProbeFailure(
                Reason.OAUTH_TOKEN, f"cannot reach the token endpoint: {type(exc).__name__}"
            ) from None
        if raw is None:
            raise ProbeFailure(
                Reason.OAUTH_TOKEN,
                f"token endpoint answered {status} with more than {MAX_TOKEN_ANSWER:,} bytes",
            )
        if active is not None:
            body = raw.decode("utf-8", "replace")[:MAX_RECORDED_BODY]
            active.keep_secret(*_token_fields(raw))
            active.answer(recorded, f"{status}\n\n{body}")
        try:
            return token_answer(status, raw, config, started)
        except ProbeFailure as failure:
            if failure.reason in (Reason.THROTTLED, Reason.UNAVAILABLE):
                failure.retry_after = retry_after(headers, "")
            raise


RECORD_SECRET_FIELDS: Final = ("client_secret", "client_assertion", "assertion", "refresh_token")
"""Fields of the token request that carry a credential, kept from a ``probe --record`` file."""
MAX_RECORDED_BODY: Final = 64 * 1024
"""Characters of a token endpoint's answer a ``probe --record`` file keeps."""


def _token_fields(raw: bytes) -> tuple[str, ...]:
    """The credentials in a token endpoint's answer, whatever else it holds."""
    body = _json(raw)
    fields = (body.get(name) for name in ("access_token", "refresh_token", "id_token"))
    return tuple(value for value in fields if isinstance(value, str))


def token_answer(status: int, raw: bytes, config: OAuth2Config, started: float) -> Token:
    """The token in a token endpoint's answer (RFC 6749 5.1), fetched at monotonic time
    ``started``; :class:`ProbeFailure` for an error answer (5.2) or one without a usable token.

    The lifetime is ``expires_in`` clamped to [0, :data:`MAX_LIFETIME`] (a number, or a string
    of one, as Azure AD's v1 endpoint sends); when it is missing or not a number (NaN, text,
    a boolean) it is :data:`UNSTATED_LIFETIME`. No answer can keep a token for good.
    """
    body = _json(raw)
    token = body.get("access_token")
    if status != 200 or not isinstance(token, str) or not _TOKEN.fullmatch(token):
        error = body.get("error") or "no access_token in the answer"
        description = body.get("error_description") or ""
        detail = " ".join(f"token endpoint answered {status}: {error} {description}".split())
        reason = classify.token_reply(status, str(error), str(description))
        raise ProbeFailure(reason, _secretless(detail, config))
    lifetime = lifetime_of(body.get("expires_in"))
    margin = min(REFRESH_BEFORE, lifetime * 0.1)
    return Token(
        value=token,
        expires_at=time.time() + lifetime,
        refresh_at=started + lifetime - margin,
    )


_TOKEN = re.compile(r"[\x21-\x7e]+")
"""An access token: visible ASCII (RFC 6750's b64token is narrower). Anything else, a line
break above all, would corrupt the command or header that carries it."""


def lifetime_of(expires_in: object) -> float:
    """Seconds a token is kept, from ``expires_in``: see :func:`token_answer`."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return UNSTATED_LIFETIME
    try:
        lifetime = float(expires_in)
    except ValueError:  # text that is no number
        return UNSTATED_LIFETIME
    except OverflowError:  # an integer beyond any float
        lifetime = math.inf if isinstance(expires_in, int) and expires_in > 0 else -math.inf
    if math.isnan(lifetime):
        return UNSTATED_LIFETIME
    return min(max(lifetime, 0.0), MAX_LIFETIME)


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of an answer, or None once it passes ``limit`` bytes (the rest is not read).
    Token endpoints and the mail APIs both answer through this."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _key(config: OAuth2Config) -> _Key:
    return config


def request_form(config: OAuth2Config, now: float | None = None) -> dict[str, str]:
    """The form posted to the token endpoint for ``config``.

    A ``jwt_bearer`` grant sends an assertion with ``iss`` = the client (a service account's
    address), ``sub`` = the user it acts for, ``scope`` and ``aud`` = the token endpoint. A
    client credentials grant with a signing key authenticates the client with an assertion
    whose ``iss`` and ``sub`` are the client id, signed with the key's algorithm (PS256 by
    default for a certificate) and named by the certificate's thumbprint for it.
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
            claims, key.private_key.reveal(), algorithm=key.algorithm, headers=dict(key.headers)
        )
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ProbeFailure(
            Reason.OAUTH_TOKEN, f"cannot sign the assertion: {type(exc).__name__}"
        ) from None


def _json(raw: bytes) -> dict[str, Any]:
    """The JSON object of an answer; empty for anything else (not JSON, not UTF-8, nested
    beyond the parser's depth, a list)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _secretless(text: str, config: OAuth2Config) -> str:
    for secret in sorted(config.secrets(), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text

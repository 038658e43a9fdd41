"""What the mail APIs (Microsoft Graph, Gmail API) share: an HTTP session that gets its token,
counts its requests, classifies every error answer, and a polling back-off.

Built on aiohttp. Every request is bounded by the probe's deadline. An error answer becomes a
:class:`ProbeFailure` whose reason comes from :func:`exporter.classify.http_reply` (status and
the API's error code), and whose detail carries the status, the error code, the message and the
request id; never a header of the request, so never a token. A ``Retry-After`` (429, 503) is
kept in the findings, so the scheduler waits that long before the next probe of the target.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from exporter import classify
from exporter.classify import HttpStage
from exporter.config.model import OAuth2Config, TlsConfig
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.trace import Trace, recorder
from exporter.transports import net
from exporter.transports.oauth import MAX_RECORDED_BODY, TokenCache, read_bounded
from exporter.transports.retry import retry_after

TOKEN_SHARE = 0.5
"""A token request may take this share of the time the probe has left..."""
TOKEN_LIMIT = 10.0
"""...and at most this many seconds, so that a token endpoint that hangs is reported as
``oauth_token`` rather than as a probe timeout."""
FIRST_POLL: Final = 0.25
"""The first look for the probe is at once, the next this long after, each next one twice as
long up to ``poll_interval``: quick deliveries are seen quickly, slow ones cost few requests
(Graph allows 10,000 requests per 10 minutes per app and mailbox; Gmail 15,000 quota units a
minute per user)."""
MAX_PAGES: Final = 10
"""Pages of search results followed at most in one look, to keep a look's requests bounded."""
RETRY_STATUSES: Final = frozenset({429, 503})


MAX_ANSWER: Final = 4 * 1024 * 1024
"""Bytes of an API answer read: a page of message ids and headers is far smaller."""

Query = Mapping[str, str] | Sequence[tuple[str, str]]
"""Query parameters: a mapping, or pairs where a name repeats (Gmail's ``metadataHeaders``)."""


@dataclass(frozen=True)
class ApiPhases:
    """The phases of one API transport, and the name its findings are kept under."""

    transport: str
    auth: Phase
    select: Phase
    send: Phase
    fetch: Phase
    cleanup: Phase


@dataclass(frozen=True)
class ApiError:
    """What an error answer says: its code (Graph ``error.code``, Gmail ``errors[].reason``),
    its message, and the request id to quote to the provider's support."""

    code: str
    message: str
    request_id: str


def api_error(body: Mapping[str, Any], headers: Mapping[str, str]) -> ApiError:
    """Read Graph's ``{"error": {"code", "message", "innerError": {"request-id"}}}`` and
    Google's ``{"error": {"code": 403, "message", "errors": [{"reason"}], "status"}}``."""
    error = body.get("error")
    request_id = headers.get("request-id", "")
    if isinstance(error, str):  # OAuth-style {"error": "invalid_token"}
        return ApiError(error, str(body.get("error_description", "")), request_id)
    if not isinstance(error, dict):
        return ApiError("", "", request_id)
    code = error.get("code")
    if not isinstance(code, str):
        errors = error.get("errors")
        listed = errors if isinstance(errors, list) else []
        reasons = [e.get("reason") for e in listed if isinstance(e, dict)]
        code = next((r for r in reasons if isinstance(r, str)), None) or str(
            error.get("status") or ""
        )
    inner = error.get("innerError")
    if not request_id and isinstance(inner, dict):
        request_id = str(inner.get("request-id") or "")
    return ApiError(code, str(error.get("message") or ""), request_id)


def quote_odata(text: str) -> str:
    """An OData string literal."""
    return "'" + text.replace("'", "''") + "'"


class ApiSession:
    """One probe's HTTP session with a mail API, and its access token.

    Its requests go over the connections the token cache's :class:`ConnectionPools` keep
    across probes (the pool of its ``tls_config``); the token is this probe's, sent with each
    request and never kept in the pool. Use as ``async with``.
    """

    def __init__(
        self,
        phases: ApiPhases,
        base_url: str,
        oauth2: OAuth2Config,
        tls_config: TlsConfig,
        trace: Trace,
        tokens: TokenCache,
    ) -> None:
        self.phases = phases
        self.base_url = base_url
        self.oauth2 = oauth2
        self.tls_config = tls_config
        self.trace = trace
        self.tokens = tokens
        self._origin = _origin(base_url)
        self._token: str | None = None

    async def __aenter__(self) -> ApiSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def authenticate(self) -> None:
        """Get an access token (cached across probes), in the transport's auth phase."""
        trace, transport = self.trace, self.phases.transport
        with trace.phase(self.phases.auth):
            limit = max(0.1, min(TOKEN_LIMIT, trace.remaining() * TOKEN_SHARE))
            trace.say(
                f"requesting an access token ({self.oauth2.grant}) from {self.oauth2.token_url}"
            )
            try:
                token = await self.tokens.token(self.oauth2, limit)
            except ProbeFailure as failure:
                trace.found.token_failed.add(transport)
                if failure.retry_after is not None:
                    trace.found.retry_after = failure.retry_after
                trace.say(f"failed: {failure.detail}")
                raise
            trace.found.token_expiry[transport] = token.expires_at
            trace.tokens.append(token.value)
            self._token = token.value

    async def call(
        self,
        method: str,
        url: str,
        stage: HttpStage,
        *,
        params: Query | None = None,
        json: Any = None,
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        """One request to the API; the JSON object it answers (empty for no content).

        ``url`` is relative to the base URL, or absolute (a next page link) on the same
        origin: the token is never sent anywhere else. With ``missing_ok`` a 404 answers
        an empty object (a message already gone).
        """
        if self._token is None:
            await self.authenticate()
        if url.startswith(("https://", "http://")):
            if _origin(url) != self._origin:
                raise ProbeFailure(
                    Reason.PROTOCOL_ERROR, f"the API pointed to another origin: {_origin(url)}"
                )
        else:
            url = self.base_url + url
        trace = self.trace
        trace.found.requests += 1
        trace.say(f"C: {method} {_shown(url, params)}")
        active, recorded = recorder(), 0
        if active is not None:
            sent = "" if json is None else f"\n\n{jsonlib.dumps(json)}"
            recorded = active.request(f"{method} {_shown(url, params)}{sent}")
        try:
            async with self._client().request(
                method,
                url,
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=max(0.1, trace.remaining())),
            ) as response:
                self._note_tls(response)
                status = response.status
                text = await _bounded_text(response)
                headers = response.headers
        except aiohttp.ClientError as exc:
            raise client_failure(exc) from None
        except TimeoutError:
            raise ProbeFailure(Reason.TIMEOUT, "no answer from the API in time") from None
        body = json_object(text)
        trace.say(f"S: {status}")
        if active is not None:
            answer = f"{status}\n\n{text[:MAX_RECORDED_BODY]}" if text else str(status)
            active.answer(recorded, answer)
        if 200 <= status < 300:
            if body is None and text.strip():
                raise ProbeFailure(Reason.PROTOCOL_ERROR, f"the API answered {status} without JSON")
            return body or {}
        if status == 404 and missing_ok:
            return {}
        raise self._failure(status, body or {}, headers, stage)

    def _failure(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str], stage: HttpStage
    ) -> ProbeFailure:
        error = api_error(body, headers)
        reason = classify.http_reply(status, error.code, error.message, stage)
        wait = retry_after(headers, error.message)
        if wait is not None and (status in RETRY_STATUSES or reason is Reason.THROTTLED):
            self.trace.found.retry_after = wait
        if reason is Reason.AUTH_REJECTED:
            # A token refused (401) or lacking a permission (403) is dropped either way: once
            # an administrator restores the app's role, only a new token carries it.
            self.trace.found.login_refused = self.phases.transport
            self.tokens.forget(self.oauth2)
        words = " ".join(f"{status} {error.code}: {error.message}".split()).replace(" :", ":")
        if error.request_id:
            words += f" (request-id {error.request_id})"
        self.trace.say(f"failed: {words}")
        return ProbeFailure(reason, words)

    def _client(self) -> aiohttp.ClientSession:
        return self.tokens.pools.session(self.tls_config)

    def _note_tls(self, response: aiohttp.ClientResponse) -> None:
        transport = self.phases.transport
        if transport in self.trace.found.tls or response.connection is None:
            return
        sock = response.connection.transport
        session = net.tls_session(sock.get_extra_info("ssl_object") if sock else None)
        if session is not None:
            self.trace.found.tls[transport] = session

    async def close(self) -> None:
        """Forget the token; the connections stay in the pool for the next probe."""
        self._token = None

    def abort(self) -> None:
        """Forget the token. A request cut short by the probe's deadline has closed its own
        connection already; the pool's other connections are sound."""
        self._token = None


@asynccontextmanager
async def signed_in(api: ApiSession, phase: Phase) -> AsyncIterator[ApiSession]:
    """The session with its token, for one step timed as ``phase``."""
    await api.authenticate()
    with api.trace.phase(phase):
        yield api


class ApiReceiver:
    """What the mail API receivers share: their session, polling, one request to delete each
    message for good, and closing."""

    cleanup: Phase

    def __init__(self, api: ApiSession, trace: Trace, poll_interval: float) -> None:
        self.api = api
        self.trace = trace
        self.poller = Poller(poll_interval)

    def deletion(self, ref: str) -> tuple[str, str]:
        """The method and path that delete a message for good."""
        raise NotImplementedError

    async def wait(self, deadline: float) -> float | None:
        return await self.poller.wait(deadline)

    async def delete(self, refs: Sequence[str]) -> bool:
        """Delete each message for good; gone already is fine."""
        with self.trace.phase(self.cleanup):
            for ref in refs:
                method, path = self.deletion(ref)
                await self.api.call(method, path, "mailbox", missing_ok=True)
        return True

    async def close(self) -> None:
        await self.api.close()

    def abort(self) -> None:
        self.api.abort()


class Poller:
    """When to look again: at once, then after ``first``, doubling to ``interval``."""

    def __init__(self, interval: float, first: float = FIRST_POLL) -> None:
        self.interval = interval
        self.first = first
        self._pause = 0.0
        self.deadline: float | None = None

    async def wait(self, deadline: float) -> float:
        """Sleep until the next look (never past ``deadline``); the time of the look."""
        self.deadline = deadline
        await asyncio.sleep(max(0.0, min(self._pause, deadline - time.monotonic())))
        self._pause = min(max(self._pause * 2, self.first), self.interval)
        return time.monotonic()

    def last_look(self) -> bool:
        """Whether the round trip gives up after this look."""
        return self.deadline is not None and time.monotonic() >= self.deadline


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _shown(url: str, params: Query | None) -> str:
    path = urlsplit(url).path
    pairs = params.items() if isinstance(params, Mapping) else params or ()
    query = "&".join(f"{key}={value}" for key, value in pairs)
    return f"{path}?{query}" if query else path


async def _bounded_text(response: aiohttp.ClientResponse) -> str:
    """The answer's text; :data:`MAX_ANSWER` bytes at most, else the API is broken."""
    raw = await read_bounded(response, MAX_ANSWER)
    if raw is None:
        raise ProbeFailure(
            Reason.PROTOCOL_ERROR, f"the API answered more than {MAX_ANSWER:,} bytes"
        )
    try:
        return raw.decode(response.charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object of an answer; None for anything else, nesting beyond the parser's
    depth included."""
    try:
        value = jsonlib.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def client_failure(exc: aiohttp.ClientError, server: str = "the API") -> ProbeFailure:
    """What a failed HTTP request means, naming ``server`` in the detail."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return net.tls_failure(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return ProbeFailure(Reason.TLS, f"TLS handshake failed: {exc}"[:300])
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProbeFailure(
            classify.os_error(exc.os_error),
            f"cannot connect to {exc.host} port {exc.port}: {exc.os_error.strerror or exc}",
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ProbeFailure(Reason.TIMEOUT, f"no answer from {server} in time")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return ProbeFailure(Reason.NETWORK, f"{server} closed the connection")
    return ProbeFailure(Reason.PROTOCOL_ERROR, f"{type(exc).__name__}: {exc}"[:300])

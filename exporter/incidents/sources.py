"""Reading the providers' status pages: Microsoft 365 Service Health over Microsoft Graph, and
the Google Workspace Status Dashboard's public JSON feed.

Microsoft: ``GET {graph}/admin/serviceAnnouncement/issues?$filter=isResolved eq false`` with an
app-only token (application permission ``ServiceHealth.Read.All``), pages followed through
``@odata.nextLink`` on the same origin, at most :data:`MAX_PAGES`. Each item is a
``serviceHealthIssue``: ``id`` (``EX123456``), ``service``, ``classification`` (``incident``,
``advisory``), ``status`` (``serviceDegradation``, ``investigating``, ``restoringService``...),
``startDateTime``, ``isResolved``. Graph's reference shows both ``serviceRestored`` and
``ServiceRestored``; values are read whatever their case.

Google: ``GET incidents.json`` answers every incident of the dashboard's history as a list of
``{id, begin, end, modified, external_desc, service_name, affected_products[{title, id}],
status_impact, severity, most_recent_update{status, text}}``; one is open while ``end`` is
missing, null or empty. The feed is fetched with ``If-None-Match``: an unchanged feed answers
304 and costs nothing to read. It is parsed in a worker thread, being large.

Every failure is a :class:`FetchFailure` with a :class:`~exporter.outcome.Reason` and, for a
429 or 503, the ``Retry-After`` the collector honours.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from exporter import classify
from exporter.config.model import GoogleStatus, MicrosoftStatus, TlsConfig
from exporter.incidents.model import Incident, label_value
from exporter.outcome import ProbeFailure, Reason
from exporter.times import timestamp as timestamp
from exporter.transports import net
from exporter.transports.http import api_error
from exporter.transports.oauth import TokenCache, read_bounded
from exporter.transports.retry import retry_after

ISSUES_PATH: Final = "/admin/serviceAnnouncement/issues"
OPEN_FILTER: Final = "isResolved eq false"
MAX_PAGES: Final = 5
"""Pages of issues followed at most in one fetch (100 issues a page by default)."""
MAX_FEED_BYTES: Final = 32 * 1024 * 1024
"""Largest status feed read."""
ADVISORY_IMPACTS: Final = frozenset({"SERVICE_INFORMATION"})
"""Google feed impacts that make an entry an advisory rather than an incident."""


class FetchFailure(Exception):
    """A status source could not be read: why, in words, and how long it asked us to wait."""

    def __init__(self, reason: Reason, detail: str, wait: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:300]
        self.wait = wait


def _camel(value: object) -> str:
    text = label_value(str(value or ""))
    return text[:1].lower() + text[1:]


def graph_issue(item: Mapping[str, Any], services: Iterable[str]) -> Incident | None:
    """An open ``serviceHealthIssue`` of a watched service, else None."""
    watched = {s.casefold(): s for s in services}
    service = item.get("service")
    if not isinstance(service, str) or service.casefold() not in watched:
        return None
    if item.get("isResolved") is True or not isinstance(item.get("id"), str):
        return None
    return Incident(
        provider="microsoft",
        service=label_value(watched[service.casefold()]),
        id=label_value(item["id"]),
        classification=_camel(item.get("classification")) or "incident",
        status=_camel(item.get("status")) or "unknown",
        start=timestamp(item.get("startDateTime")),
        title=str(item.get("title") or "")[:300],
        modified=timestamp(item.get("lastModifiedDateTime")),
    )


def google_incidents(feed: object, services: Iterable[str]) -> list[Incident]:
    """The open entries of the feed about watched products, one per product."""
    if not isinstance(feed, list):
        raise FetchFailure(Reason.PROTOCOL_ERROR, "the feed is not a JSON list of incidents")
    watched = {s.casefold(): s for s in services}
    found: list[Incident] = []
    for item in feed:
        if not isinstance(item, dict) or item.get("end") or not isinstance(item.get("id"), str):
            continue
        names = [item.get("service_name")] + [
            p.get("title") for p in item.get("affected_products") or () if isinstance(p, dict)
        ]
        products = {
            watched[n.casefold()] for n in names if isinstance(n, str) and n.casefold() in watched
        }
        impact = str(item.get("status_impact") or "")
        latest = item.get("most_recent_update")
        status = latest.get("status") if isinstance(latest, dict) else None
        for product in sorted(products):
            found.append(
                Incident(
                    provider="google",
                    service=label_value(product),
                    id=label_value(item["id"]),
                    classification="advisory" if impact in ADVISORY_IMPACTS else "incident",
                    status=label_value(str(status or impact or "unknown")),
                    start=timestamp(item.get("begin")),
                    title=str(item.get("external_desc") or "")[:300],
                    modified=timestamp(item.get("modified")),
                    url=str(item.get("uri") or "")[:300],
                )
            )
    return found


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _client_failure(exc: aiohttp.ClientError) -> FetchFailure:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return FetchFailure(Reason.TLS, f"certificate not accepted: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return FetchFailure(Reason.TLS, f"TLS handshake failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FetchFailure(
            classify.os_error(exc.os_error), f"cannot connect to {exc.host} port {exc.port}"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return FetchFailure(Reason.TIMEOUT, "no answer in time")
    return FetchFailure(Reason.NETWORK, f"{type(exc).__name__}: the connection failed")


@dataclass
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class StatusClient:
    """One provider's HTTP connections, kept between fetches; close it when done."""

    def __init__(self, tls_config: TlsConfig, https: bool) -> None:
        self._tls: ssl.SSLContext | bool = net.tls_context(tls_config) if https else True
        self._session: aiohttp.ClientSession | None = None

    async def get(
        self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]
    ) -> _Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls))
        try:
            async with self._session.get(url, params=params, headers=headers) as response:
                body = await read_bounded(response, MAX_FEED_BYTES)
                if body is None:
                    raise FetchFailure(
                        Reason.PROTOCOL_ERROR, f"the answer is larger than {MAX_FEED_BYTES} bytes"
                    )
                return _Answer(response.status, response.headers.copy(), body)
        except aiohttp.ClientError as exc:
            raise _client_failure(exc) from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return None


def _refused(answer: _Answer) -> FetchFailure:
    """An error answer, classified as the mail APIs' are; Retry-After kept for 429 and 503."""
    body = _json(answer.body)
    error = api_error(body if isinstance(body, dict) else {}, answer.headers)
    reason = classify.http_reply(answer.status, error.code, error.message, "auth")
    words = " ".join(f"{answer.status} {error.code}: {error.message}".split()).replace(" :", ":")
    if error.request_id:
        words += f" (request-id {error.request_id})"
    wait = retry_after(answer.headers, error.message) if answer.status in (429, 503) else None
    return FetchFailure(reason, words, wait)


class MicrosoftSource:
    """Open Service Health issues of the watched services, read over Microsoft Graph."""

    provider: Final = "microsoft"

    def __init__(self, settings: MicrosoftStatus, tokens: TokenCache) -> None:
        self.settings = settings
        self.tokens = tokens
        self.client = StatusClient(settings.tls_config, settings.graph_url.startswith("https:"))
        self.requests = 0

    async def fetch(self, limit: float) -> list[Incident]:
        """Every open issue of a watched service; :class:`FetchFailure` if they cannot be had."""
        try:
            token = await self.tokens.token(self.settings.oauth2, limit)
        except ProbeFailure as failure:
            raise FetchFailure(failure.reason, failure.detail) from None
        url = self.settings.graph_url + ISSUES_PATH
        params: dict[str, str] | None = {"$filter": OPEN_FILTER}
        origin = _origin(url)
        found: list[Incident] = []
        for _ in range(MAX_PAGES):
            self.requests += 1
            headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
            answer = await self.client.get(url, params, headers)
            if answer.status != 200:
                if answer.status == classify.HTTP_UNAUTHORIZED:
                    self.tokens.forget(self.settings.oauth2)
                raise _refused(answer)
            body = _json(answer.body)
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise FetchFailure(Reason.PROTOCOL_ERROR, "the answer has no list of issues")
            for item in body["value"]:
                if isinstance(item, dict) and (issue := graph_issue(item, self.settings.services)):
                    found.append(issue)
            link = body.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                break
            if _origin(link) != origin:
                raise FetchFailure(Reason.PROTOCOL_ERROR, "the next page is on another origin")
            url, params = link, None
        return found

    async def close(self) -> None:
        await self.client.close()


class GoogleSource:
    """Open entries of the Google Workspace Status Dashboard about the watched products."""

    provider: Final = "google"

    def __init__(self, settings: GoogleStatus) -> None:
        self.settings = settings
        self.client = StatusClient(settings.tls_config, settings.feed_url.startswith("https:"))
        self.requests = 0
        self._etag = ""
        self._last: list[Incident] = []

    async def fetch(self, limit: float) -> list[Incident]:
        """The feed's open entries; an unchanged feed (304) answers the last ones again."""
        headers = {"Accept": "application/json"}
        if self._etag:
            headers["If-None-Match"] = self._etag
        self.requests += 1
        answer = await self.client.get(self.settings.feed_url, None, headers)
        if answer.status == 304 and self._etag:
            return list(self._last)
        if answer.status != 200:
            raise _refused(answer)
        feed = await asyncio.to_thread(_json, answer.body)
        found = google_incidents(feed, self.settings.services)
        self._etag = answer.headers.get("ETag", "")
        self._last = found
        return list(found)

    async def close(self) -> None:
        await self.client.close()


Source = MicrosoftSource | GoogleSource

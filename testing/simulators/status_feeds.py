"""Local stand-ins for the providers' status pages, for tests: Microsoft 365 Service Health
over Microsoft Graph, and the Google Workspace Status Dashboard's JSON feed.

Each behaviour names the public reference it was written from.

Service Health (``ServiceHealthSimulator``, a :class:`GraphSimulator` with its token endpoint,
apps and tokens):
  - ``GET /v1.0/admin/serviceAnnouncement/issues`` answers ``{"@odata.context", "value": [...],
    "@odata.nextLink"}`` (https://learn.microsoft.com/graph/api/serviceannouncement-list-issues):
    pages of 100 by default, ``Prefer: odata.maxpagesize=N`` up to 1000, next links absolute
    with ``$skip`` (as the reference's example).
  - Items are ``serviceHealthIssue`` resources
    (https://learn.microsoft.com/graph/api/resources/servicehealthissue): ``id`` (``EX123456``),
    ``title``, ``service``, ``feature``, ``featureGroup``, ``impactDescription``,
    ``classification`` (``incident`` | ``advisory``), ``origin``, ``status``
    (serviceHealthStatus values, e.g. ``investigating``, ``serviceDegradation``,
    ``serviceInterruption``, ``restoringService``, ``extendedRecovery``, ``serviceRestored``,
    ``postIncidentReviewPublished``, ``falsePositive``), ``startDateTime``, ``endDateTime``,
    ``lastModifiedDateTime``, ``isResolved``, ``details``, ``posts``.
  - Application permission ``ServiceHealth.Read.All`` is required (permissions table of the
    list-issues page): a token of an app without it gets 403. The error code and message
    (``Forbidden``, "Insufficient privileges to complete the operation.") are plausible, not
    quoted from the reference. A missing, unknown or expired token gets 401
    ``InvalidAuthenticationToken``, as the mail API does.
  - ``$filter``: ``isResolved eq true|false`` and ``service eq '...'``, joined by ``and``; any
    other filter or query option answers 501 ``NotImplemented`` (not simulated, fails loudly).
  - Throttling (https://learn.microsoft.com/graph/throttling-limits, Service Communications
    service limits): per app and tenant, 240 requests per 60 seconds and 800 per hour -> 429
    ``TooManyRequests`` with ``Retry-After`` in seconds.

Google Workspace Status Dashboard (``GoogleStatusSimulator``):
  - ``GET /appsstatus/dashboard/incidents.json`` answers the dashboard's whole history as a JSON
    list, newest first, without credentials. Entries follow the published feed
    (https://www.google.com/appsstatus/dashboard/incidents.json; the same shape as Google Cloud's
    https://status.cloud.google.com/incidents.json): ``id``, ``number``, ``begin``, ``created``,
    ``end`` (absent while open), ``modified``, ``external_desc``, ``updates``,
    ``most_recent_update`` ``{created, modified, when, text, status}``, ``status_impact``
    (``SERVICE_INFORMATION`` | ``SERVICE_DISRUPTION`` | ``SERVICE_OUTAGE``), ``severity``
    (``low`` | ``medium`` | ``high``), ``service_key``, ``service_name``,
    ``affected_products`` ``[{title, id}]``, ``uri``. The feed has no published schema: the
    shape is the feed's own, as served.
  - An ``ETag`` on every answer; ``If-None-Match`` with the current one answers 304.

NOT simulated: Service Health's health overviews, messages (Message center), posts' HTML,
the post-incident review report, national clouds, delegated tokens; the Google dashboard's
HTML and RSS, and its per-region fields. Both providers' real error bodies for throttling
or outages beyond what is named above.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ._base import SimulatorBase, SlidingWindow
from .graph import GraphSimulator

__all__ = [
    "SERVICE_HEALTH_PERMISSION",
    "GoogleStatusSimulator",
    "ServiceHealthSimulator",
]

SERVICE_HEALTH_PERMISSION = "ServiceHealth.Read.All"
DEFAULT_PAGE = 100  # list-issues: "If not specified, default page size is 100."
MAX_PAGE = 1000  # list-issues: "The maximum page size cannot be greater than 1000."
_CLAUSE = re.compile(r"^\s*(isResolved|service)\s+eq\s+(true|false|'(?:[^']|'')*')\s*$")


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class HealthIssue:
    """A service health issue of the simulated tenant."""

    id: str
    service: str
    title: str
    classification: str = "incident"
    status: str = "investigating"
    start: float = field(default_factory=time.time)
    end: float | None = None
    modified: float = field(default_factory=time.time)
    feature: str = ""
    feature_group: str = ""
    impact: str = ""
    resolved: bool = False

    def resource(self) -> dict[str, Any]:
        return {
            "startDateTime": _iso(self.start),
            "endDateTime": _iso(self.end),
            "lastModifiedDateTime": _iso(self.modified),
            "title": self.title,
            "id": self.id,
            "impactDescription": self.impact or self.title,
            "classification": self.classification,
            "origin": "microsoft",
            "status": self.status,
            "service": self.service,
            "feature": self.feature or None,
            "featureGroup": self.feature_group or None,
            "isResolved": self.resolved,
            "details": [],
            "posts": [],
        }


class ServiceHealthSimulator(GraphSimulator):
    """Graph's Service Health issues (and the Graph token endpoint); see the module docstring."""

    name = "service-health-simulator"

    def __init__(
        self,
        *,
        minute_limit: int = 240,
        hour_limit: int = 800,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.minute_limit = minute_limit
        self.hour_limit = hour_limit
        self._issues: dict[str, HealthIssue] = {}
        self._health_windows: dict[str, tuple[SlidingWindow, SlidingWindow]] = {}

    # ------------------------------------------------------------ test helpers

    def add_issue(
        self, issue_id: str, service: str = "Exchange Online", **fields: Any
    ) -> HealthIssue:
        """Open an issue (``classification``, ``status``, ``start`` ... as keywords)."""
        issue = HealthIssue(issue_id, service, fields.pop("title", f"{service} issue"), **fields)
        with self._lock:
            self._issues[issue_id] = issue
        return issue

    def update_issue(self, issue_id: str, **fields: Any) -> None:
        with self._lock:
            issue = self._issues[issue_id]
            for key, value in fields.items():
                setattr(issue, key, value)
            issue.modified = time.time()

    def resolve_issue(self, issue_id: str, status: str = "serviceRestored") -> None:
        """Resolve an issue: ``isResolved`` true, ``endDateTime`` now."""
        self.update_issue(issue_id, status=status, resolved=True, end=time.time())

    # ------------------------------------------------------------ HTTP

    def _routes(self, app: web.Application) -> None:
        super()._routes(app)
        app.router.add_get("/v1.0/admin/serviceAnnouncement/issues", self._list_issues)

    def _health_admit(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if issued is None or issued.expires_at <= time.time():
                return self._error(
                    request, 401, "InvalidAuthenticationToken", "Access token validation failure."
                )
            app = self._apps[issued.client_id]
            if SERVICE_HEALTH_PERMISSION not in app.permissions:
                return self._error(
                    request, 403, "Forbidden", "Insufficient privileges to complete the operation."
                )
            minute, hour = self._health_windows.setdefault(
                app.client_id, (SlidingWindow(60.0), SlidingWindow(3600.0))
            )
            now = time.monotonic()
            for window, limit in ((minute, self.minute_limit), (hour, self.hour_limit)):
                if window.used(now) >= limit:
                    return self._error(
                        request,
                        429,
                        "TooManyRequests",
                        "Too many requests.",
                        {"Retry-After": str(window.retry_after(now))},
                    )
            minute.events.append((now, 1))
            hour.events.append((now, 1))
        return None

    async def _list_issues(self, request: web.Request) -> web.Response:
        refused = self._health_admit(request)
        if refused is not None:
            return refused
        delay = self._latency_for(request.path)
        if delay:
            await asyncio.sleep(delay)
        unknown = set(request.query) - {"$filter", "$skip"}
        if unknown:
            return self._error(
                request, 501, "NotImplemented", f"{sorted(unknown)} is not simulated"
            )
        wanted: list[tuple[str, Any]] = []
        text = request.query.get("$filter", "")
        for clause in [c for c in re.split(r"\s+and\s+", text) if c.strip()] if text else []:
            match = _CLAUSE.match(clause)
            if match is None:
                return self._error(
                    request, 501, "NotImplemented", f"the filter {clause!r} is not simulated"
                )
            name, value = match.groups()
            wanted.append(
                (name, value == "true" if name == "isResolved" else value[1:-1].replace("''", "'"))
            )
        try:
            skip = int(request.query.get("$skip", "0"))
        except ValueError:
            return self._error(request, 400, "BadRequest", "Invalid $skip value.")
        page = DEFAULT_PAGE
        prefer = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("Prefer", ""))
        if prefer:
            page = max(1, min(MAX_PAGE, int(prefer.group(1))))
        with self._lock:
            issues = sorted(self._issues.values(), key=lambda i: i.start, reverse=True)
            chosen = [
                i.resource()
                for i in issues
                if all(
                    (i.resolved if name == "isResolved" else i.service) == value
                    for name, value in wanted
                )
            ]
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#admin/serviceAnnouncement/issues",
            "value": chosen[skip : skip + page],
        }
        if skip + page < len(chosen):
            query = {k: v for k, v in request.query.items() if k != "$skip"}
            query["$skip"] = str(skip + page)
            body["@odata.nextLink"] = (
                f"{self.graph_url}/admin/serviceAnnouncement/issues?{urlencode(query)}"
            )
        return web.json_response(body)


@dataclass
class FeedIncident:
    """An entry of the Google Workspace Status Dashboard's feed."""

    id: str
    products: list[str]
    description: str
    impact: str = "SERVICE_DISRUPTION"
    severity: str = "medium"
    begin: float = field(default_factory=time.time)
    end: float | None = None
    modified: float = field(default_factory=time.time)
    update: str = "We're investigating reports of an issue."
    number: str = field(default_factory=lambda: str(uuid.uuid4().int)[:19])

    def resource(self) -> dict[str, Any]:
        latest = {
            "created": _iso(self.modified),
            "modified": _iso(self.modified),
            "when": _iso(self.modified),
            "text": self.update,
            "status": "AVAILABLE" if self.end is not None else self.impact,
        }
        products = [
            {"title": p, "id": hashlib.sha1(p.encode()).hexdigest()[:20]} for p in self.products
        ]
        entry: dict[str, Any] = {
            "id": self.id,
            "number": self.number,
            "begin": _iso(self.begin),
            "created": _iso(self.begin),
            "modified": _iso(self.modified),
            "external_desc": self.description,
            "updates": [latest],
            "most_recent_update": latest,
            "status_impact": self.impact,
            "severity": self.severity,
            "service_key": products[0]["id"] if products else "",
            "service_name": self.products[0] if self.products else "Multiple Products",
            "affected_products": products,
            "uri": f"incidents/{self.id}",
        }
        if self.end is not None:
            entry["end"] = _iso(self.end)
        return entry


class GoogleStatusSimulator(SimulatorBase):
    """The Google Workspace Status Dashboard's JSON feed; see the module docstring."""

    name = "google-status-simulator"
    path = "/appsstatus/dashboard/incidents.json"

    def __init__(self) -> None:
        super().__init__(domains=(), delivery_delay=0.0, relay=None, junk_rule=None)
        self._incidents: dict[str, FeedIncident] = {}

    @property
    def feed_url(self) -> str:
        return self.url + self.path

    def add_incident(self, incident_id: str, products: list[str], **fields: Any) -> FeedIncident:
        incident = FeedIncident(
            incident_id, products, fields.pop("description", f"{products[0]} issue"), **fields
        )
        with self._lock:
            self._incidents[incident_id] = incident
        return incident

    def resolve_incident(self, incident_id: str) -> None:
        with self._lock:
            incident = self._incidents[incident_id]
            incident.end = incident.modified = time.time()
            incident.update = "The problem has been resolved."

    def _routes(self, app: web.Application) -> None:
        app.router.add_get(self.path, self._feed)

    def _smtp_accepts(self, address: str) -> bool:
        return False

    def _smtp_received(self, sender: str, recipients: list[str], raw: bytes) -> None:
        raise AssertionError("the status feed takes no mail")

    async def _feed(self, request: web.Request) -> web.Response:
        delay = self._latency_for(request.path)
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            entries = [
                i.resource()
                for i in sorted(self._incidents.values(), key=lambda i: i.begin, reverse=True)
            ]
        body = json.dumps(entries).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

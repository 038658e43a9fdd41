"""Microsoft Graph: send with ``sendMail``, watch the Inbox, delete probes permanently.

App-only access (client credentials with a client secret or a certificate) to one mailbox.
Written from the Graph v1.0 reference: ``POST /users/{id}/sendMail`` answers 202 with no
message id, so the probe is found again by its ``X-Mailbox-Probe-Id`` header, which Exchange
keeps as an extended property in the internet headers namespace (or, with ``search:
subject``, by its subject). Lists are paged with ``@odata.nextLink``; headers are only
returned when ``$select``-ed; ``DELETE`` would move a message to Deleted Items, so probes
are removed with ``permanentDelete``. Graph allows 10,000 requests per 10 minutes per app
and mailbox: the Inbox is polled with a back-off, and every request is counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from exporter.config.model import GraphConfig
from exporter.message import PROBE_HEADER, subject
from exporter.outcome import Phase
from exporter.trace import Trace
from exporter.transports import Envelope, ProbeMessage
from exporter.transports.http import (
    MAX_PAGES,
    ApiPhases,
    ApiReceiver,
    ApiSession,
    quote_odata,
    signed_in,
)
from exporter.transports.oauth import TokenCache

PHASES: Final = ApiPhases(
    "graph",
    Phase.GRAPH_AUTH,
    Phase.GRAPH_SELECT,
    Phase.GRAPH_SEND,
    Phase.GRAPH_FETCH,
    Phase.GRAPH_CLEANUP,
)
INTERNET_HEADERS: Final = "{00020386-0000-0000-C000-000000000046}"
"""The property set Exchange keeps internet message headers in (PS_INTERNET_HEADERS)."""
LOOKBACK: Final = timedelta(days=1)
"""Probes received this long before the round trip are still found (late arrivals)."""
SELECT: Final = "id,subject,internetMessageHeaders"


def _session(section: GraphConfig, trace: Trace, tokens: TokenCache) -> ApiSession:
    return ApiSession(PHASES, section.graph_url, section.oauth2, section.tls_config, trace, tokens)


def _user(section: GraphConfig) -> str:
    return "/users/" + quote(section.username, safe="@")


def probe_filter(section: GraphConfig, prefix: str, since: datetime) -> str:
    """The ``$filter`` that finds messages whose probe id starts with ``prefix``."""
    after = f"receivedDateTime ge {since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    if section.search == "subject":
        return f"{after} and startswith(subject,{quote_odata(subject(prefix))})"
    header = quote_odata(f"String {INTERNET_HEADERS} Name {PROBE_HEADER}")
    return (
        f"{after} and singleValueExtendedProperties/any(ep: ep/id eq {header} and "
        f"startswith(ep/value,{quote_odata(prefix)}))"
    )


def message(section: GraphConfig, probe: ProbeMessage) -> dict[str, Any]:
    """The ``sendMail`` request: the probe's ``x-`` headers go along (Graph takes no others);
    no copy is saved to Sent Items."""
    body: dict[str, Any] = {
        "subject": probe.subject,
        "body": {"contentType": "Text", "content": probe.text},
        "toRecipients": [{"emailAddress": {"address": probe.mail_to}}],
        "internetMessageHeaders": [
            {"name": name, "value": value}
            for name, value in probe.headers
            if name.lower().startswith("x-")
        ],
    }
    if probe.mail_from.lower() != section.username.lower():
        body["from"] = {"emailAddress": {"address": probe.mail_from}}
    return {"message": body, "saveToSentItems": False}


def _headers(item: dict[str, Any], name: str) -> list[str]:
    return [
        str(field.get("value", ""))
        for field in item.get("internetMessageHeaders") or ()
        if isinstance(field, dict) and str(field.get("name", "")).lower() == name.lower()
    ]


def _header(item: dict[str, Any], name: str) -> str:
    return next(iter(_headers(item, name)), "")


def _envelope(item: dict[str, Any]) -> Envelope:
    return Envelope(
        probe_id=_header(item, PROBE_HEADER),
        subject=str(item.get("subject") or ""),
        authentication_results=tuple(_headers(item, "Authentication-Results")),
    )


@dataclass
class GraphSender:
    """Sends the probe message with ``sendMail`` as the configured mailbox."""

    section: GraphConfig
    trace: Trace
    tokens: TokenCache

    async def send(self, probe: ProbeMessage) -> float:
        async with (
            _session(self.section, self.trace, self.tokens) as api,
            signed_in(api, Phase.GRAPH_SEND),
        ):
            await api.call(
                "POST", _user(self.section) + "/sendMail", "send", json=message(self.section, probe)
            )
        return time.monotonic()


class GraphReceiver(ApiReceiver):
    """The Inbox, polled with one filtered query per look; probes verified by their header,
    deleted permanently."""

    cleanup = Phase.GRAPH_CLEANUP

    def __init__(self, section: GraphConfig, trace: Trace, tokens: TokenCache) -> None:
        super().__init__(_session(section, trace, tokens), trace, section.poll_interval)
        self.section = section
        self._since = datetime.now(UTC) - LOOKBACK
        self._items: dict[str, dict[str, Any]] = {}

    async def open(self) -> None:
        await self.api.authenticate()
        with self.trace.phase(Phase.GRAPH_SELECT):
            inbox = await self.api.call(
                "GET",
                _user(self.section) + "/mailFolders/inbox",
                "mailbox",
                params={"$select": "id,totalItemCount"},
            )
        self.trace.say(f"Inbox holds {inbox.get('totalItemCount', '?')} messages")

    async def find(self, prefix: str) -> list[str]:
        return await self._search("inbox", prefix)

    async def junk(self, prefix: str) -> list[str]:
        return await self._search("junkemail", prefix)

    async def reports(self, prefix: str) -> list[str]:
        """None: Graph cannot filter on a message's text (only ``$search``, which is not
        offered for this)."""
        return []

    async def sent_copies(self, prefix: str) -> list[str]:
        """None: the probe is sent with ``saveToSentItems: false``."""
        return []

    async def raw(self, ref: str, limit: int) -> bytes:
        """Never needed: :meth:`reports` finds none."""
        return b""

    async def _search(self, folder: str, prefix: str) -> list[str]:
        params: dict[str, str] | None = {
            "$filter": probe_filter(self.section, prefix, self._since),
            "$select": SELECT,
        }
        url = f"{_user(self.section)}/mailFolders/{folder}/messages"
        found: list[str] = []
        for _ in range(MAX_PAGES):
            page = await self.api.call("GET", url, "mailbox", params=params)
            for item in page.get("value") or ():
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    found.append(item["id"])
                    self._items[item["id"]] = item
            next_link = page.get("@odata.nextLink")
            if not isinstance(next_link, str):
                break
            url, params = next_link, None
        return found

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        """Each message's header: read with the search, else one by one."""
        with self.trace.phase(Phase.GRAPH_FETCH):
            for ref in refs:
                if ref not in self._items:
                    self._items[ref] = await self.api.call(
                        "GET",
                        f"{_user(self.section)}/messages/{quote(ref, safe='')}",
                        "mailbox",
                        params={"$select": SELECT},
                        missing_ok=True,
                    )
        return {ref: _envelope(self._items.get(ref, {})) for ref in refs}

    def deletion(self, ref: str) -> tuple[str, str]:
        """For good (not into Deleted Items)."""
        return "POST", f"{_user(self.section)}/messages/{quote(ref, safe='')}/permanentDelete"


async def check_login(section: GraphConfig, trace: Trace, tokens: TokenCache) -> None:
    """graph_login: can the app get a token and read the mailbox's Inbox folder?"""
    async with _session(section, trace, tokens) as api:
        await api.authenticate()
        with trace.phase(Phase.GRAPH_SELECT):
            await api.call(
                "GET",
                _user(section) + "/mailFolders/inbox",
                "mailbox",
                params={"$select": "id"},
            )

"""Microsoft Graph: send with ``sendMail``, watch the Inbox, delete probes for good.

App-only access (client credentials with a client secret or a certificate) to one mailbox.
Written from the Graph v1.0 reference, read strictly where it is silent:

- ``POST /users/{id}/sendMail`` answers 202 with no message id, so the probe is found again
  by reading the newest messages of a folder (``$filter`` on ``receivedDateTime``, which every
  message has, newest first) with their ``internetMessageHeaders`` (only returned when
  ``$select``-ed), and recognised by its ``X-Mailbox-Probe-Id`` header. Not by an extended
  property: Exchange saves an x-header's value as a named property only from the second
  message that carries it ("Provision x-headers by using EWS in Exchange"), or not at all
  unless a client mapped it first (Exchange team blog, "Named Properties, Round 2"). Not by
  subject: transport rules prefix subjects (``[EXTERNAL]``).
- A copy in Sent Items (Exchange keeps one of mail submitted over SMTP AUTH) may carry no
  internet headers, which Graph describes for received mail: there the probe is named by its
  Message-ID (``internetMessageId``), which :func:`exporter.message.headers` sets.
- ``DELETE`` moves a message to Deleted Items; ``permanentDelete`` removes it, but exists in
  the global service only (its page's national-cloud table). In US Government L4, L5 and
  China a probe is moved to Deleted Items (``move``, which answers the moved copy's id) and
  deleted from there: both ways end in Recoverable Items.

Graph allows 10,000 requests per 10 minutes per app and mailbox: the Inbox is polled with a
back-off, a look reads at most :data:`PAGES` pages, and every request is counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from exporter.config.model import GRAPH_CLOUDS, GraphConfig
from exporter.message import PROBE_HEADER, headers
from exporter.outcome import Phase
from exporter.trace import Trace
from exporter.transports import Envelope, ProbeMessage
from exporter.transports.http import ApiPhases, ApiReceiver, ApiSession, signed_in
from exporter.transports.oauth import TokenCache

PHASES: Final = ApiPhases(
    "graph",
    Phase.GRAPH_AUTH,
    Phase.GRAPH_SELECT,
    Phase.GRAPH_SEND,
    Phase.GRAPH_FETCH,
    Phase.GRAPH_CLEANUP,
)
LOOKBACK: Final = timedelta(days=1)
"""A folder's first look in a round trip reads messages received this long before it: probes
that arrived after their round trip gave up (late arrivals) are found and deleted."""
CLOCK_SKEW: Final = timedelta(minutes=5)
"""Received times are the server's: every later look reads from this long before the round
trip began, so that a server clock behind ours loses no arrival."""
PAGE_SIZE: Final = 25
"""Messages per page (``$top``): headers included, a page stays small."""
PAGES: Final = 2
"""Pages read per look at most: a look sees the ``PAGE_SIZE * PAGES`` newest messages of its
window, and costs one request while the folder is quiet."""
SELECT: Final = "id,subject,receivedDateTime,internetMessageId,internetMessageHeaders"
_MESSAGE_ID: Final = dict(headers("{}"))["Message-ID"]
"""The probe's Message-ID with ``{}`` for its id."""


def _session(section: GraphConfig, trace: Trace, tokens: TokenCache) -> ApiSession:
    return ApiSession(PHASES, section.graph_url, section.oauth2, section.tls_config, trace, tokens)


def _user(section: GraphConfig) -> str:
    return "/users/" + quote(section.username, safe="@")


def _message(section: GraphConfig, ref: str) -> str:
    return f"{_user(section)}/messages/{quote(ref, safe='')}"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recent(since: datetime) -> dict[str, str]:
    """The query that lists a folder's messages received since ``since``, newest first, with
    what identifies a probe. ``$orderby`` names the filtered property first, as "List
    messages" requires of ``$filter`` with ``$orderby``."""
    return {
        "$filter": f"receivedDateTime ge {_instant(since)}",
        "$orderby": "receivedDateTime desc",
        "$select": SELECT,
        "$top": str(PAGE_SIZE),
    }


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
    fields = item.get("internetMessageHeaders")
    return [
        str(field.get("value", ""))
        for field in (fields if isinstance(fields, list) else ())
        if isinstance(field, dict) and str(field.get("name", "")).lower() == name.lower()
    ]


def from_message_id(value: str) -> str:
    """The probe id a probe's Message-ID carries; empty for any other Message-ID."""
    head, _, tail = _MESSAGE_ID.partition("{}")
    value = value.strip()
    if len(value) > len(head) + len(tail) and value.startswith(head) and value.endswith(tail):
        return value[len(head) : -len(tail)]
    return ""


def probe_id(item: dict[str, Any]) -> str:
    """The message's probe id: its header, else its Message-ID (a copy in Sent Items may have
    no internet headers). Either is only trusted once it verifies."""
    found = next(iter(_headers(item, PROBE_HEADER)), "")
    return found or from_message_id(str(item.get("internetMessageId") or ""))


def _envelope(item: dict[str, Any]) -> Envelope:
    return Envelope(
        probe_id=probe_id(item),
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
    """The Inbox, Junk Email and Sent Items, each read newest first; probes recognised by
    their header, deleted for good."""

    cleanup = Phase.GRAPH_CLEANUP

    def __init__(self, section: GraphConfig, trace: Trace, tokens: TokenCache) -> None:
        super().__init__(_session(section, trace, tokens), trace, section.poll_interval)
        self.section = section
        self._began = datetime.now(UTC)
        self._swept: set[str] = set()
        """Folders already read back over :data:`LOOKBACK` in this round trip."""
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
        return await self._look("inbox", prefix)

    async def junk(self, prefix: str) -> list[str]:
        return await self._look("junkemail", prefix)

    async def reports(self, prefix: str) -> list[str]:
        """None: Graph cannot filter on a message's text (only ``$search``, which is not
        offered for this)."""
        return []

    async def sent_copies(self, prefix: str) -> list[str]:
        """Probes in Sent Items: Exchange keeps a copy of mail the account submits over SMTP
        (``sendMail`` here saves none)."""
        return await self._look("sentitems", prefix)

    async def raw(self, ref: str, limit: int) -> bytes:
        """Never needed: :meth:`reports` finds none."""
        return b""

    def _since(self, folder: str) -> datetime:
        """A folder's first look reaches back :data:`LOOKBACK` (late arrivals), the next ones
        to the round trip's start."""
        if folder in self._swept:
            return self._began - CLOCK_SKEW
        return self._began - LOOKBACK

    async def _look(self, folder: str, prefix: str) -> list[str]:
        """The folder's newest messages whose probe id starts with ``prefix``."""
        params: dict[str, str] | None = recent(self._since(folder))
        url = f"{_user(self.section)}/mailFolders/{folder}/messages"
        found: list[str] = []
        for _ in range(PAGES):
            page = await self.api.call("GET", url, "mailbox", params=params)
            items = page.get("value")
            for item in items if isinstance(items, list) else ():
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    continue
                if probe_id(item).startswith(prefix):
                    found.append(item["id"])
                    self._items[item["id"]] = item
            next_link = page.get("@odata.nextLink")
            if not isinstance(next_link, str):
                break
            url, params = next_link, None
        self._swept.add(folder)
        return found

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        """Each message's header: read with the look, else one by one."""
        with self.trace.phase(Phase.GRAPH_FETCH):
            for ref in refs:
                if ref not in self._items:
                    self._items[ref] = await self.api.call(
                        "GET",
                        _message(self.section, ref),
                        "mailbox",
                        params={"$select": SELECT},
                        missing_ok=True,
                    )
        return {ref: _envelope(self._items.get(ref, {})) for ref in refs}

    def deletion(self, ref: str) -> tuple[str, str]:
        """For good (not into Deleted Items), where ``permanentDelete`` exists."""
        return "POST", _message(self.section, ref) + "/permanentDelete"

    async def delete(self, refs: Sequence[str]) -> bool:
        """For good: with ``permanentDelete`` in the global service; elsewhere moved to Deleted
        Items and deleted from there (both end in Recoverable Items)."""
        if GRAPH_CLOUDS[self.section.cloud].permanent_delete:
            return await super().delete(refs)
        with self.trace.phase(self.cleanup):
            for ref in refs:
                moved = await self.api.call(
                    "POST",
                    _message(self.section, ref) + "/move",
                    "mailbox",
                    json={"destinationId": "deleteditems"},
                    missing_ok=True,
                )
                if isinstance(moved.get("id"), str):
                    await self.api.call(
                        "DELETE", _message(self.section, moved["id"]), "mailbox", missing_ok=True
                    )
        return True


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

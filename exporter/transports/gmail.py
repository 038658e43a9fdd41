"""The Gmail API: send raw RFC 822, search the Inbox, delete probes permanently.

Tokens come from a service account with domain-wide delegation (a JWT bearer grant acting
for the mailbox) or from a refresh token. Written from the Gmail API reference, read strictly
where it is silent:

- Gmail has no search operator for ``X-`` headers, and ``users.messages.send`` may replace
  the Message-ID, so probes are found by the words of their subject (:data:`QUERY`) within a
  time bound and recognised by reading their ``X-Mailbox-Probe-Id`` (``format=metadata``).
  Gmail matches whole words; whether it splits the probe id (atoms joined by dots) at its
  dots is not documented, so the query holds only the subject's fixed words, never the id.
- ``users.messages.list`` leaves Spam and Trash out unless ``includeSpamTrash`` is true,
  its only documented way in; ``in:spam`` overriding it is not documented.
- ``users.messages.delete`` removes a message for good (it needs the
  ``https://mail.google.com/`` scope); ``trash`` would keep it for 30 days.
- A message the mailbox sends itself over the API is one message labelled SENT and INBOX;
  sent to another mailbox, the sender's copy is deleted right after sending. Mail the account
  submits over SMTP leaves a copy labelled SENT, which the Sent look finds.

The quota is 15,000 units a minute per user: the Inbox is polled with a back-off.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from exporter.config.model import GmailConfig
from exporter.message import PROBE_HEADER, subject
from exporter.outcome import Phase, ProbeFailure
from exporter.trace import Trace
from exporter.transports import READ_FIELDS, Envelope, ProbeMessage
from exporter.transports.http import ApiPhases, ApiReceiver, ApiSession, signed_in
from exporter.transports.oauth import TokenCache

PHASES: Final = ApiPhases(
    "gmail",
    Phase.GMAIL_AUTH,
    Phase.GMAIL_SELECT,
    Phase.GMAIL_SEND,
    Phase.GMAIL_FETCH,
    Phase.GMAIL_CLEANUP,
)
LOOKBACK: Final = "newer_than:1d"
"""Probes received this long before the round trip are still found (late arrivals)."""
WORDS: Final = subject("").strip()
"""The words every probe's subject begins with (``mailbox-exporter probe``)."""
QUERY: Final = f'subject:"{WORDS}" {LOOKBACK}'
"""What every look asks for: the subject's fixed words as a phrase, and the time bound."""
INBOX: Final = (("labelIds", "INBOX"),)
SPAM: Final = (("labelIds", "SPAM"), ("includeSpamTrash", "true"))
"""Spam is listed only with ``includeSpamTrash`` (users.messages.list)."""
SENT: Final = (("labelIds", "SENT"),)
PAGE_SIZE: Final = 50
PAGES: Final = 2
"""Pages of a look read at most (``PAGE_SIZE`` ids each), to keep a look's requests bounded."""
METADATA: Final = (PROBE_HEADER, *READ_FIELDS)


def _session(section: GmailConfig, trace: Trace, tokens: TokenCache) -> ApiSession:
    return ApiSession(PHASES, section.api_url, section.oauth2, section.tls_config, trace, tokens)


def _user(section: GmailConfig) -> str:
    return "/users/" + quote(section.username, safe="@")


def _headers(item: dict[str, Any], name: str) -> list[str]:
    payload = item.get("payload")
    fields = payload.get("headers") if isinstance(payload, dict) else None
    return [
        str(field.get("value", ""))
        for field in (fields if isinstance(fields, list) else ())
        if isinstance(field, dict) and str(field.get("name", "")).lower() == name.lower()
    ]


def _header(item: dict[str, Any], name: str) -> str:
    return next(iter(_headers(item, name)), "")


@dataclass
class GmailSender:
    """Sends the raw probe message with ``users.messages.send`` as the configured mailbox."""

    section: GmailConfig
    trace: Trace
    tokens: TokenCache

    async def send(self, probe: ProbeMessage) -> float:
        raw = base64.urlsafe_b64encode(probe.raw).decode("ascii")
        async with _session(self.section, self.trace, self.tokens) as api:
            async with signed_in(api, Phase.GMAIL_SEND):
                sent = await api.call(
                    "POST", _user(self.section) + "/messages/send", "send", json={"raw": raw}
                )
            accepted = time.monotonic()
            if probe.mail_to.lower() != self.section.username.lower() and sent.get("id"):
                await self._forget(api, str(sent["id"]))
            return accepted

    async def _forget(self, api: ApiSession, ref: str) -> None:
        """Delete the sender's copy; failing to is a cleanup failure, not a failed probe."""
        try:
            with self.trace.phase(Phase.GMAIL_CLEANUP):
                await api.call(
                    "DELETE",
                    f"{_user(self.section)}/messages/{quote(ref, safe='')}",
                    "mailbox",
                    missing_ok=True,
                )
        except ProbeFailure as failure:
            self.trace.say(f"the sent copy stays: {failure.detail}")
            self.trace.found.cleanup_failed = True


class GmailReceiver(ApiReceiver):
    """The Inbox, Spam and Sent, each searched by the probe subject's words; probes
    recognised by their header, deleted permanently."""

    cleanup = Phase.GMAIL_CLEANUP

    def __init__(self, section: GmailConfig, trace: Trace, tokens: TokenCache) -> None:
        super().__init__(_session(section, trace, tokens), trace, section.poll_interval)
        self.section = section
        self._items: dict[str, dict[str, Any]] = {}
        """Headers read in this round trip, by message id: each message is read once."""

    async def open(self) -> None:
        await self.api.authenticate()
        with self.trace.phase(Phase.GMAIL_SELECT):
            profile = await self.api.call("GET", _user(self.section) + "/profile", "mailbox")
        self.trace.say(f"the mailbox holds {profile.get('messagesTotal', '?')} messages")

    async def find(self, prefix: str) -> list[str]:
        return await self._look(INBOX, prefix)

    async def junk(self, prefix: str) -> list[str]:
        return await self._look(SPAM, prefix)

    async def reports(self, prefix: str) -> list[str]:
        """None: a report quotes the probe's header in its body, which the search reaches only
        by words, not by a header's value."""
        return []

    async def sent_copies(self, prefix: str) -> list[str]:
        """Probes labelled SENT only: Gmail's SMTP keeps a copy of what the account submits
        (the API's own copy is deleted when it is sent, or is the received message)."""
        return await self._look(SENT, prefix)

    async def raw(self, ref: str, limit: int) -> bytes:
        """Never needed: :meth:`reports` finds none."""
        return b""

    async def _look(self, labels: Sequence[tuple[str, str]], prefix: str) -> list[str]:
        """Messages with ``labels`` matching :data:`QUERY` whose probe id starts with
        ``prefix`` (each read once)."""
        found: list[str] = []
        token: str | None = None
        for _ in range(PAGES):
            params = [*labels, ("q", QUERY), ("maxResults", str(PAGE_SIZE))]
            if token is not None:
                params.append(("pageToken", token))
            page = await self.api.call(
                "GET", _user(self.section) + "/messages", "mailbox", params=params
            )
            items = page.get("messages")
            found += [
                str(item["id"])
                for item in (items if isinstance(items, list) else ())
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            ]
            next_token = page.get("nextPageToken")
            if not isinstance(next_token, str):
                break
            token = next_token
        await self._read_new(found)
        return [ref for ref in found if _header(self._items[ref], PROBE_HEADER).startswith(prefix)]

    async def _read_new(self, refs: Sequence[str]) -> None:
        unread = [ref for ref in dict.fromkeys(refs) if ref not in self._items]
        if not unread:
            return
        with self.trace.phase(Phase.GMAIL_FETCH):
            for ref in unread:
                self._items[ref] = await self.api.call(
                    "GET",
                    f"{_user(self.section)}/messages/{quote(ref, safe='')}",
                    "mailbox",
                    params=[("format", "metadata"), *(("metadataHeaders", n) for n in METADATA)],
                    missing_ok=True,
                )

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        """Each message's header: read with the look, else now."""
        await self._read_new(refs)
        return {
            ref: Envelope(
                probe_id=_header(self._items[ref], PROBE_HEADER),
                subject=_header(self._items[ref], "Subject"),
                authentication_results=tuple(_headers(self._items[ref], "Authentication-Results")),
            )
            for ref in refs
        }

    def deletion(self, ref: str) -> tuple[str, str]:
        """For good (not to Trash)."""
        return "DELETE", f"{_user(self.section)}/messages/{quote(ref, safe='')}"


async def check_login(section: GmailConfig, trace: Trace, tokens: TokenCache) -> None:
    """gmail_login: can a token be had for the mailbox, and does users.getProfile answer?"""
    async with _session(section, trace, tokens) as api:
        await api.authenticate()
        with trace.phase(Phase.GMAIL_SELECT):
            await api.call("GET", _user(section) + "/profile", "mailbox")

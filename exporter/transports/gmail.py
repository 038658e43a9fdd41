"""The Gmail API: send raw RFC 822, search the Inbox, delete probes permanently.

Tokens come from a service account with domain-wide delegation (a JWT bearer grant acting
for the mailbox) or from a refresh token. Written from the Gmail API reference:
``users.messages.send`` takes the message base64url-encoded and replaces its Message-ID, so
the probe is found again by its subject with ``q=`` (Gmail has no search operator for
``X-`` headers) and verified by reading its ``X-Mailbox-Probe-Id`` with
``format=metadata``. ``users.messages.delete`` removes a message for good (it needs the
``https://mail.google.com/`` scope); ``trash`` would keep it for 30 days. A message the
mailbox sends to itself is one message labelled SENT and INBOX; sent to another mailbox, the
sender's copy is deleted right after sending. The quota is 15,000 units a minute per user:
the Inbox is polled with a back-off.
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
from exporter.transports.http import MAX_PAGES, ApiPhases, ApiReceiver, ApiSession, signed_in
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


def _session(section: GmailConfig, trace: Trace, tokens: TokenCache) -> ApiSession:
    return ApiSession(PHASES, section.api_url, section.oauth2, section.tls_config, trace, tokens)


def _user(section: GmailConfig) -> str:
    return "/users/" + quote(section.username, safe="@")


def query(prefix: str, where: str = "inbox") -> str:
    """The ``q=`` that finds probes whose id starts with ``prefix`` in ``where``: by the
    subject's words, the id prefix without its final dot (Gmail searches words)."""
    return f'in:{where} subject:"{subject(prefix.rstrip("."))}" {LOOKBACK}'


def _headers(item: dict[str, Any], name: str) -> list[str]:
    payload = item.get("payload")
    return [
        str(field.get("value", ""))
        for field in ((payload.get("headers") or ()) if isinstance(payload, dict) else ())
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
    """The Inbox, searched with one query per look; probes verified by their header, deleted
    permanently."""

    cleanup = Phase.GMAIL_CLEANUP

    def __init__(self, section: GmailConfig, trace: Trace, tokens: TokenCache) -> None:
        super().__init__(_session(section, trace, tokens), trace, section.poll_interval)
        self.section = section

    async def open(self) -> None:
        await self.api.authenticate()
        with self.trace.phase(Phase.GMAIL_SELECT):
            profile = await self.api.call("GET", _user(self.section) + "/profile", "mailbox")
        self.trace.say(f"the mailbox holds {profile.get('messagesTotal', '?')} messages")

    async def find(self, prefix: str) -> list[str]:
        return await self._search(query(prefix))

    async def junk(self, prefix: str) -> list[str]:
        return await self._search(query(prefix, "spam"))

    async def reports(self, prefix: str) -> list[str]:
        """None: a report quotes the probe's header in its body, which the search reaches only
        by words, not by a header's value."""
        return []

    async def sent_copies(self, prefix: str) -> list[str]:
        """None: Gmail keeps one message, labelled SENT, which the sender deletes itself."""
        return []

    async def raw(self, ref: str, limit: int) -> bytes:
        """Never needed: :meth:`reports` finds none."""
        return b""

    async def _search(self, q: str) -> list[str]:
        params = {"q": q}
        found: list[str] = []
        for _ in range(MAX_PAGES):
            page = await self.api.call(
                "GET", _user(self.section) + "/messages", "mailbox", params=params
            )
            found += [
                str(item["id"])
                for item in page.get("messages") or ()
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            ]
            token = page.get("nextPageToken")
            if not isinstance(token, str):
                break
            params = {"q": q, "pageToken": token}
        return found

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        envelopes: dict[str, Envelope] = {}
        with self.trace.phase(Phase.GMAIL_FETCH):
            for ref in refs:
                item = await self.api.call(
                    "GET",
                    f"{_user(self.section)}/messages/{quote(ref, safe='')}",
                    "mailbox",
                    params=[
                        ("format", "metadata"),
                        *(("metadataHeaders", name) for name in (PROBE_HEADER, *READ_FIELDS)),
                    ],
                    missing_ok=True,
                )
                envelopes[ref] = Envelope(
                    probe_id=_header(item, PROBE_HEADER),
                    subject=_header(item, "Subject"),
                    authentication_results=tuple(_headers(item, "Authentication-Results")),
                )
        return envelopes

    def deletion(self, ref: str) -> tuple[str, str]:
        """For good (not to Trash)."""
        return "DELETE", f"{_user(self.section)}/messages/{quote(ref, safe='')}"


async def check_login(section: GmailConfig, trace: Trace, tokens: TokenCache) -> None:
    """gmail_login: can a token be had for the mailbox, and does users.getProfile answer?"""
    async with _session(section, trace, tokens) as api:
        await api.authenticate()
        with trace.phase(Phase.GMAIL_SELECT):
            await api.call("GET", _user(section) + "/profile", "mailbox")

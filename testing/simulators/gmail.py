"""A local Gmail API and Google OAuth 2.0 token endpoint, for tests.

Each behaviour below names the public reference page it was written from
(Google developers documentation unless said otherwise).

Token endpoint, ``POST /token`` (as ``https://oauth2.googleapis.com/token``)
  - ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with ``assertion`` = an
    RS256 JWT signed by a registered service account key: ``iss`` = service account
    email, ``scope`` (space-separated), ``aud`` = this token URL, ``iat``/``exp`` with
    ``exp`` at most an hour after ``iat``, optional ``sub`` = mailbox to impersonate
    ("Using OAuth 2.0 for Server to Server Applications",
    https://developers.google.com/identity/protocols/oauth2/service-account).
    Impersonation needs domain-wide delegation of every requested scope to the
    service account's client id for the mailbox's domain
    (https://support.google.com/a/answer/162106), else 401 ``unauthorized_client``
    "Client is unauthorized to retrieve access tokens using this method, or client not
    authorized for any of the scopes requested.".  Other refusals: 400 ``invalid_grant``
    "Invalid JWT Signature.", "Invalid JWT: Failed audience check.", "Invalid JWT: Token
    must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat
    and exp values in the JWT claim.", "Invalid grant: account not found", "Invalid email
    or User ID"; 400 ``invalid_scope``.  (Wordings as Google answers them, collected by
    practitioners; the service-account page lists the error codes.)
  - ``grant_type=refresh_token`` with ``client_id``, ``client_secret`` (form or HTTP
    Basic), ``refresh_token`` ("Using OAuth 2.0 for Web Server Applications",
    https://developers.google.com/identity/protocols/oauth2/web-server#offline):
    unknown client 401 ``invalid_client`` "The OAuth client was not found.", wrong secret
    401 ``invalid_client`` "Unauthorized", unknown or revoked token 400 ``invalid_grant``
    "Token has been expired or revoked.".
  - Success: ``access_token``, ``expires_in``, ``token_type`` Bearer (``scope`` too for
    refresh grants).

Gmail API under ``/gmail/v1/users/{userId}`` (``me`` or the token's own address)
  (REST reference, https://developers.google.com/gmail/api/reference/rest)
  - ``GET /profile`` -> emailAddress, messagesTotal, threadsTotal, historyId (users.getProfile).
  - ``POST /messages/send`` {"raw": base64url RFC 822}; also ``POST
    /upload/gmail/v1/users/{userId}/messages/send?uploadType=media`` with
    ``message/rfc822`` (users.messages.send) -> 200 {id, threadId, labelIds: ["SENT"]}.
    Missing raw: 400 "'raw' RFC822 payload message string or uploading message via
    /upload/* URL required"; no recipients: 400 "Recipient address required".  The From
    header is set to the sending mailbox, and the Message-ID is replaced by one of
    Gmail's own unless ``keep_client_message_id`` (practitioners report Gmail overwrites
    it; keep that in mind when searching by ``rfc822msgid:``).  A message a mailbox sends
    to itself is one message with SENT and INBOX labels, as in Gmail.  Hosted
    recipients get it with INBOX and UNREAD (or SPAM, by ``spam_rule``) after
    ``delivery_delay``; others are relayed over SMTP to ``relay``.
  - ``GET /messages`` (users.messages.list): ``q``, ``labelIds`` (repeatable; a message
    must carry all), ``maxResults`` (default 100, at most 500), ``pageToken`` ->
    ``messages`` [{id, threadId}] (absent when empty), ``nextPageToken``,
    ``resultSizeEstimate``; newest first.  SPAM and TRASH are left out unless
    ``includeSpamTrash=true`` (see the ``spam_trash`` mode).
  - ``q``: the subset of Gmail search operators
    (https://support.google.com/mail/answer/7190, and "Search for messages",
    https://developers.google.com/gmail/api/guides/filtering) implemented here:
    ``rfc822msgid:ID`` (angle brackets optional), ``subject:word`` / ``subject:"a
    phrase"`` / ``subject:(words)``, ``from:``, ``to:``, ``in:inbox|sent|spam|trash|anywhere``,
    ``label:NAME`` (system labels), ``is:unread|read``, ``newer_than:``/``older_than:``
    ``Nd|Nm|Ny``, ``after:``/``before:`` ``YYYY/MM/DD`` or epoch seconds, a bare
    ``"quoted phrase"``, ``(words)`` or word (matched in subject, body, From and To), and
    ``-`` negation.  Words and phrases match whole words (see the ``tokens`` mode), never
    parts of one.  Terms are ANDed; ``OR``, braces and other operators are NOT implemented:
    such a term is taken as plain text (as Gmail does with unknown operators) and noted
    in `GmailSimulator.query_warnings`.  Gmail has no operator for arbitrary (``X-``)
    headers.
  - ``GET /messages/{id}?format=full|metadata|minimal|raw&metadataHeaders=...``
    (users.messages.get): with ``metadata``, ``payload.headers`` holds only the
    requested headers (all when none is named).
  - ``DELETE /messages/{id}`` -> 204, permanent, needs scope ``https://mail.google.com/``
    (users.messages.delete; else 403 ``insufficientPermissions``); ``POST
    /messages/{id}/trash`` (users.messages.trash); ``POST /messages/batchDelete``
    {"ids": [...]} -> 204 (users.messages.batchDelete, full scope too).
  - Method scopes follow each method's "Authorization scopes" section.
  - Errors in Google's JSON format {"error": {"code", "message", "errors": [{"domain",
    "reason", "message"}], "status"}} ("Resolve errors",
    https://developers.google.com/gmail/api/guides/handle-errors): 401 ``authError``
    UNAUTHENTICATED; 403 ``insufficientPermissions``; 403 ``userRateLimitExceeded``
    (domain usageLimits) when the per-user quota is spent; 400 ``failedPrecondition``
    "Mail service not enabled"; 404 ``notFound``; 429 and 5xx ``backendError`` through
    fault injection (see `google_error`).
  - Quota ("Usage limits", https://developers.google.com/gmail/api/reference/quota):
    15,000 units per user per minute, with getProfile 1, messages.list/get/trash 5,
    messages.delete 10, messages.batchDelete 50, messages.send 100.  (A newer revision of
    that page gives 6,000 units per user per minute; ``quota_per_minute`` sets either.)

Inbound SMTP (``smtp_port``): mail for hosted addresses gets INBOX and UNREAD (or SPAM by
``spam_rule``); unknown hosted recipients get ``550 5.1.1``.

NOT simulated: threads (each message is its own thread), user labels and
labels.*, history.*, drafts.*, messages.modify/import/insert/attachments, multipart
uploads, batch HTTP requests, push notifications, send-as aliases, the per-project
quota, daily sending limits, the ``metadata`` scope's restrictions, stemming and
synonyms, ``OR``/``{}``/``AROUND`` and most operators.

Modes, for what the references leave open (each named, with its source, where it acts):

- ``tokens``: how text is split into the words a search matches.  Gmail matches whole
  words ("Search operators you can use with Gmail" gives no rule for splitting); whether
  ``a.b.c`` is one word or three is not documented.  ``"strict"`` (default): words are split
  at white space only (brackets, quotes and commas around a word are dropped), never at
  dots or hyphens.  ``"punctuation"``: split at every character that is not a letter or a
  digit.
- ``spam_trash``: ``"include-only"`` (default): SPAM and TRASH are listed only with
  ``includeSpamTrash=true``, the only way users.messages.list documents
  ("includeSpamTrash: Include messages from SPAM and TRASH in the results").
  ``"query-or-label"``: ``in:spam``, ``label:spam`` and ``labelIds=SPAM`` also reveal them,
  as the Gmail UI does (not documented for the API).
- ``smtp_sent_copies``: mail arriving over SMTP from a hosted mailbox's own address also
  leaves a copy labelled SENT in that mailbox, a message of its own: Gmail's SMTP
  submission server copies what an account submits to Sent Mail (WildDuck wiki, "Gmail
  sending"; Google documents no such rule).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from ._base import (
    RAW_BODY,
    ParsedMail,
    PendingDelivery,
    SimulatorBase,
    SlidingWindow,
    addresses,
    build_message,
    parse_rfc822,
    quick_parse,
)

__all__ = [
    "FULL_SCOPE",
    "MODIFY_SCOPE",
    "READONLY_SCOPE",
    "SEND_SCOPE",
    "UNIT_COSTS",
    "GmailMailbox",
    "GmailMessage",
    "GmailSimulator",
    "ServiceAccount",
    "google_error",
]

FULL_SCOPE = "https://mail.google.com/"
MODIFY_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
READONLY_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
COMPOSE_SCOPE = "https://www.googleapis.com/auth/gmail.compose"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SYSTEM_LABELS = {"INBOX", "SENT", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "DRAFT"}
DEFAULT_PAGE = 100  # users.messages.list: maxResults "defaults to 100"
MAX_PAGE = 500  # "The maximum allowed value for this field is 500."

#: quota units per method ("Usage limits", per-method quota usage)
UNIT_COSTS: dict[str, int] = {
    "getProfile": 1,
    "messages.list": 5,
    "messages.get": 5,
    "messages.send": 100,
    "messages.delete": 10,
    "messages.trash": 5,
    "messages.batchDelete": 50,
}

# Scopes each method accepts (the "Authorization scopes" section of each method page).
_READ = {FULL_SCOPE, MODIFY_SCOPE, READONLY_SCOPE}
_SCOPES: dict[str, set[str]] = {
    "getProfile": _READ | {COMPOSE_SCOPE, SEND_SCOPE},
    "messages.list": _READ,
    "messages.get": _READ,
    "messages.send": {FULL_SCOPE, MODIFY_SCOPE, COMPOSE_SCOPE, SEND_SCOPE},
    "messages.trash": {FULL_SCOPE, MODIFY_SCOPE},
    "messages.delete": {FULL_SCOPE},
    "messages.batchDelete": {FULL_SCOPE},
}

Tokens = Literal["strict", "punctuation"]
SpamTrash = Literal["include-only", "query-or-label"]

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def google_error(
    code: int,
    reason: str,
    message: str,
    *,
    status: str | None = None,
    domain: str = "global",
) -> dict[str, Any]:
    """A Google API error body, e.g. ``google_error(500, "backendError", "Backend Error")``."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": status or _STATUS.get(code, "UNKNOWN"),
        }
    }


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@dataclass
class GmailMessage:
    """A message in a simulated Gmail mailbox."""

    id: str
    thread_id: str
    labels: set[str]
    raw: bytes
    internal_date: int  # epoch milliseconds
    history_id: int

    @functools.cached_property
    def parsed(self) -> ParsedMail:
        return quick_parse(self.raw)

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive), decoded and unfolded."""
        return self.parsed.get(name)

    @property
    def subject(self) -> str:
        return self.header("Subject") or ""

    def text(self) -> str:
        return self.parsed.text or (self.parsed.html or "")


@dataclass
class GmailMailbox:
    """A hosted mailbox; `enabled` False models an account without the Gmail service."""

    address: str
    messages: dict[str, GmailMessage] = field(default_factory=dict)
    enabled: bool = True
    deferred: bool = False
    history_id: int = 1000


@dataclass
class ServiceAccount:
    """A service account: its email, OAuth client id and public key."""

    email: str
    client_id: str
    public_key: RSAPublicKey


@dataclass
class _Token:
    user: str
    scopes: set[str]
    expires_at: float


class _GmailError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        status: str | None = None,
        domain: str = "global",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.body = google_error(code, reason, message, status=status, domain=domain)
        self.code = code
        self.headers = dict(headers or {})


class _TokenError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


_NOT_FOUND = ("notFound", "Requested entity was not found.")


class GmailSimulator(SimulatorBase):
    """Gmail API + Google token endpoint on 127.0.0.1; see the module docstring."""

    name = "gmail-simulator"

    def __init__(
        self,
        *,
        domains: Iterable[str] = ("example.test",),
        delivery_delay: float = 0.2,
        relay: tuple[str, int] | None = None,
        spam_rule: Callable[[EmailMessage], bool] | None = None,
        token_lifetime: int = 3599,
        quota_per_minute: int = 15_000,
        quota_window: float = 60.0,
        unit_costs: Mapping[str, int] | None = None,
        keep_client_message_id: bool = False,
        tokens: Tokens = "strict",
        spam_trash: SpamTrash = "include-only",
        smtp_sent_copies: bool = False,
    ) -> None:
        super().__init__(
            domains=tuple(domains),
            delivery_delay=delivery_delay,
            relay=relay,
            junk_rule=spam_rule,
        )
        self.token_lifetime = token_lifetime
        self.quota_per_minute = quota_per_minute
        self.quota_window = quota_window
        self.unit_costs = {**UNIT_COSTS, **(unit_costs or {})}
        self.keep_client_message_id = keep_client_message_id
        self.tokens = tokens
        self.spam_trash = spam_trash
        self.smtp_sent_copies = smtp_sent_copies
        self.query_warnings: list[str] = []
        self._mailboxes: dict[str, GmailMailbox] = {}
        self._service_accounts: dict[str, ServiceAccount] = {}
        self._delegations: dict[tuple[str, str], set[str]] = {}
        self._clients: dict[str, str] = {}
        self._refresh_tokens: dict[str, tuple[str, str, set[str]]] = {}
        self._tokens: dict[str, _Token] = {}
        self._quota: dict[str, SlidingWindow] = {}

    @property
    def token_url(self) -> str:
        """``{url}/token`` -- also the ``aud`` a service-account assertion must carry."""
        return f"{self.url}/token"

    @property
    def api_url(self) -> str:
        """Base of the API, ``{url}/gmail/v1`` (as ``https://gmail.googleapis.com/gmail/v1``)."""
        return f"{self.url}/gmail/v1"

    # ------------------------------------------------------------ registry (test helpers)

    def add_mailbox(self, address: str, *, enabled: bool = True) -> GmailMailbox:
        address = address.lower()
        if not self.hosts(address):
            raise ValueError(f"{address} is not in {self.domains}")
        mailbox = GmailMailbox(address, enabled=enabled)
        with self._lock:
            self._mailboxes[address] = mailbox
        return mailbox

    def mailbox(self, address: str) -> GmailMailbox:
        with self._lock:
            return self._mailboxes[address.lower()]

    def add_service_account(
        self, email: str, client_id: str, key: bytes | RSAPublicKey | RSAPrivateKey
    ) -> ServiceAccount:
        """Register a service account by its public key (PEM, or a key object; a private key's
        public half is used)."""
        if isinstance(key, bytes):
            loaded = serialization.load_pem_public_key(key)
            if not isinstance(loaded, RSAPublicKey):
                raise TypeError("service account keys are RSA")
            key = loaded
        if isinstance(key, RSAPrivateKey):
            key = key.public_key()
        account = ServiceAccount(email, client_id, key)
        with self._lock:
            self._service_accounts[email] = account
        return account

    def create_service_account(self, email: str, client_id: str) -> dict[str, str]:
        """Generate a key, register the account, and return its JSON key file's content.

        The dict has the fields of a Google service-account key file (``type``,
        ``client_email``, ``client_id``, ``private_key_id``, ``private_key`` PEM,
        ``token_uri`` = this simulator's `token_url`), so a transport that posts to, and
        sets ``aud`` from, ``token_uri`` works unchanged against the simulator.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.add_service_account(email, client_id, key)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "type": "service_account",
            "project_id": "simulated-project",
            "private_key_id": secrets.token_hex(20),
            "private_key": pem.decode(),
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url,
        }

    def delegate(self, client_id: str, domain: str, scopes: Iterable[str]) -> None:
        """Domain-wide delegation: let `client_id` impersonate users of `domain` for `scopes`."""
        with self._lock:
            self._delegations[(client_id, domain.lower())] = set(scopes)

    def add_oauth_client(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._clients[client_id] = secret

    def add_refresh_token(
        self, refresh_token: str, client_id: str, user: str, scopes: Iterable[str] = (FULL_SCOPE,)
    ) -> None:
        with self._lock:
            self._refresh_tokens[refresh_token] = (client_id, user.lower(), set(scopes))

    def revoke_refresh_token(self, refresh_token: str) -> None:
        with self._lock:
            self._refresh_tokens.pop(refresh_token, None)

    def issue_token(
        self, user: str, scopes: Iterable[str] = (FULL_SCOPE,), lifetime: float | None = None
    ) -> str:
        """Mint an access token for `user` without calling the token endpoint."""
        token = "ya29.sim-" + secrets.token_urlsafe(40)
        expires = time.time() + (self.token_lifetime if lifetime is None else lifetime)
        with self._lock:
            self._tokens[token] = _Token(user.lower(), set(scopes), expires)
        return token

    def expire_tokens(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def set_mailbox_state(
        self, address: str, *, enabled: bool | None = None, deferred: bool | None = None
    ) -> None:
        """Disable the Gmail service for a mailbox, or hold its incoming mail (deferred)."""
        with self._lock:
            mailbox = self._mailboxes[address.lower()]
            if enabled is not None:
                mailbox.enabled = enabled
            if deferred is not None:
                mailbox.deferred = deferred

    def resume_delivery(self, address: str) -> None:
        self.set_mailbox_state(address, deferred=False)

    def put_message(
        self,
        address: str,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        *,
        subject: str,
        body: str = "",
        sender: str = "someone@elsewhere.example",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        message_id: str | None = None,
        received: datetime | None = None,
    ) -> GmailMessage:
        """Put a message straight into a mailbox (ordinary mail, or lookalikes)."""
        moment = received or datetime.now(UTC)
        raw = build_message(
            sender=sender,
            to=address,
            subject=subject,
            date=moment,
            message_id=message_id or make_msgid(domain="elsewhere.example"),
            headers=headers.items() if isinstance(headers, Mapping) else headers,
            body=body,
        )
        return self._store(address, raw, set(labels), received=moment)

    def put_raw(
        self, address: str, raw: bytes, labels: Iterable[str] = ("INBOX", "UNREAD")
    ) -> GmailMessage:
        return self._store(address, raw, set(labels))

    def messages(self, address: str, label: str | None = None) -> list[GmailMessage]:
        """Messages of a mailbox (with `label` if given), oldest first."""
        with self._lock:
            found = [
                m
                for m in self._mailboxes[address.lower()].messages.values()
                if label is None or label in m.labels
            ]
        return sorted(found, key=lambda m: m.internal_date)

    # ------------------------------------------------------------ storage

    def _store(
        self, address: str, raw: bytes, labels: set[str], *, received: datetime | None = None
    ) -> GmailMessage:
        moment = received or datetime.now(UTC)
        with self._lock:
            mailbox = self._mailboxes[address.lower()]
            mailbox.history_id += 1
            message_id = secrets.token_hex(8)
            message = GmailMessage(
                id=message_id,
                thread_id=message_id,
                labels=labels,
                raw=raw,
                internal_date=int(moment.timestamp() * 1000),
                history_id=mailbox.history_id,
            )
            mailbox.messages[message.id] = message
        return message

    def _deliver_local(self, address: str, raw: bytes, sent_copy: str | None = None) -> None:
        spam = self.junk_rule is not None and self.junk_rule(parse_rfc822(raw))
        with self._lock:
            mailbox = self._mailboxes[address]
            if sent_copy is not None and sent_copy in mailbox.messages:
                # a mailbox's mail to itself: the sent message also gets INBOX (as Gmail does)
                mailbox.history_id += 1
                mailbox.messages[sent_copy].labels |= {"SPAM" if spam else "INBOX", "UNREAD"}
                return
        self._store(address, raw, {"SPAM" if spam else "INBOX", "UNREAD"})

    def _mailbox_deferred(self, address: str) -> bool:
        mailbox = self._mailboxes.get(address.lower())
        return mailbox is not None and mailbox.deferred

    def _smtp_accepts(self, address: str) -> bool:
        with self._lock:
            return address.lower() in self._mailboxes

    def _smtp_received(self, sender: str, recipients: list[str], raw: bytes) -> None:
        if self.smtp_sent_copies and sender.lower() in self._mailboxes:
            # Gmail's SMTP submission copies what the account submits to Sent Mail (WildDuck
            # wiki, "Gmail sending"): a message of its own, labelled SENT.
            self._store(sender, raw, {"SENT"})
        stamped = self._received_line("inbound") + raw
        for rcpt in (r.lower() for r in recipients):
            self._enqueue(
                PendingDelivery(
                    0.0,
                    rcpt,
                    stamped,
                    sender,
                    [rcpt],
                    deliver=functools.partial(self._deliver_local, rcpt, stamped),
                )
            )

    def _received_line(self, via: str) -> bytes:
        stamp = format_datetime(datetime.now(UTC))
        return f"Received: from {via} by {self.name}.invalid; {stamp}\r\n".encode()

    # ------------------------------------------------------------ HTTP plumbing

    def _routes(self, app: web.Application) -> None:
        base = "/gmail/v1/users/{user}"
        app.router.add_post("/token", self._token)
        app.router.add_get(base + "/profile", self._api("getProfile", self._profile))
        app.router.add_post(base + "/messages/send", self._api("messages.send", self._send))
        app.router.add_post(
            "/upload" + base + "/messages/send", self._api("messages.send", self._send)
        )
        app.router.add_get(base + "/messages", self._api("messages.list", self._list))
        app.router.add_post(
            base + "/messages/batchDelete", self._api("messages.batchDelete", self._batch_delete)
        )
        app.router.add_get(base + "/messages/{id}", self._api("messages.get", self._get))
        app.router.add_delete(base + "/messages/{id}", self._api("messages.delete", self._delete))
        app.router.add_post(base + "/messages/{id}/trash", self._api("messages.trash", self._trash))

    def _api(
        self, method: str, handler: Callable[[web.Request, GmailMailbox], web.Response]
    ) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                mailbox = self._admit(request, method)
                delay = self._latency_for(request.path)
                if delay:
                    await asyncio.sleep(delay)
                with self._lock:
                    return handler(request, mailbox)
            except _GmailError as exc:
                return web.json_response(exc.body, status=exc.code, headers=exc.headers)

        return serve

    def _admit(self, request: web.Request, method: str) -> GmailMailbox:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if issued is None or issued.expires_at <= time.time():
                raise _GmailError(
                    401,
                    "authError",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    headers={
                        "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                        'error="invalid_token"'
                    },
                )
            if not issued.scopes & _SCOPES[method]:
                body = google_error(
                    403,
                    "insufficientPermissions",
                    "Request had insufficient authentication scopes.",
                )
                body["error"]["errors"][0]["message"] = "Insufficient Permission"
                error = _GmailError(403, "insufficientPermissions", "")
                error.body = body
                raise error
            user = request.match_info["user"].lower()
            if user not in {"me", issued.user}:
                raise _GmailError(403, "forbidden", f"Delegation denied for {issued.user}")
            mailbox = self._mailboxes.get(issued.user)
            if mailbox is None or not mailbox.enabled:
                raise _GmailError(
                    400,
                    "failedPrecondition",
                    "Mail service not enabled",
                    status="FAILED_PRECONDITION",
                )
            window = self._quota.setdefault(issued.user, SlidingWindow(self.quota_window))
            now = time.monotonic()
            cost = self.unit_costs[method]
            if window.used(now) + cost > self.quota_per_minute:
                retry = datetime.now(UTC) + timedelta(seconds=window.retry_after(now))
                raise _GmailError(
                    403,
                    "userRateLimitExceeded",
                    f"User-rate limit exceeded.  Retry after {retry.isoformat()}",
                    domain="usageLimits",
                )
            window.events.append((now, cost))
            return mailbox

    # ------------------------------------------------------------ token endpoint

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            body = self._grant(form, request.headers.get("Authorization", ""))
        except _TokenError as exc:
            return web.json_response(
                {"error": exc.error, "error_description": exc.description}, status=exc.status
            )
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _grant(self, form: dict[str, str], authorization: str) -> dict[str, Any]:
        grant = form.get("grant_type", "")
        if grant == JWT_GRANT:
            user, scopes = self._jwt_grant(form.get("assertion", ""))
            token = self.issue_token(user, scopes)
            return {
                "access_token": token,
                "expires_in": self.token_lifetime,
                "token_type": "Bearer",
            }
        if grant == "refresh_token":
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "basic":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                    client_id, _, secret = base64.b64decode(value).decode().partition(":")
            with self._lock:
                known = self._clients.get(client_id)
                stored = self._refresh_tokens.get(form.get("refresh_token", ""))
            if known is None:
                raise _TokenError(401, "invalid_client", "The OAuth client was not found.")
            if not secrets.compare_digest(known, secret):
                raise _TokenError(401, "invalid_client", "Unauthorized")
            if stored is None or stored[0] != client_id:
                raise _TokenError(400, "invalid_grant", "Token has been expired or revoked.")
            _client, user, scopes = stored
            token = self.issue_token(user, scopes)
            return {
                "access_token": token,
                "expires_in": self.token_lifetime,
                "scope": " ".join(sorted(scopes)),
                "token_type": "Bearer",
            }
        raise _TokenError(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")

    def _jwt_grant(self, assertion: str) -> tuple[str, set[str]]:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _TokenError(400, "invalid_grant", "Bad Request") from exc
        with self._lock:
            account = self._service_accounts.get(str(unverified.get("iss", "")))
        if account is None:
            raise _TokenError(400, "invalid_grant", "Invalid grant: account not found")
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=self.token_url,
                options={"require": ["iss", "aud", "exp", "iat"], "verify_exp": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise _TokenError(400, "invalid_grant", "Invalid JWT Signature.") from exc
        except jwt.InvalidAudienceError as exc:
            raise _TokenError(400, "invalid_grant", "Invalid JWT: Failed audience check.") from exc
        except jwt.PyJWTError as exc:
            raise _TokenError(400, "invalid_grant", f"Bad Request ({exc})") from exc
        now = time.time()
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if exp - iat > 3600 or exp <= now or iat > now + 300:
            raise _TokenError(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes:
            raise _TokenError(400, "invalid_scope", "Empty or missing scope not allowed.")
        subject = str(claims.get("sub") or "").lower()
        if not subject or subject == account.email.lower():
            return account.email.lower(), scopes
        with self._lock:
            granted = self._delegations.get((account.client_id, subject.rsplit("@", 1)[-1]))
            known = subject in self._mailboxes
        if granted is None or not scopes <= granted:
            raise _TokenError(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        if not known:
            raise _TokenError(400, "invalid_grant", "Invalid email or User ID")
        return subject, scopes

    # ------------------------------------------------------------ API handlers

    def _profile(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        return web.json_response(
            {
                "emailAddress": mailbox.address,
                "messagesTotal": len(mailbox.messages),
                "threadsTotal": len(mailbox.messages),
                "historyId": str(mailbox.history_id),
            }
        )

    def _send(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        raw_body: bytes = request[RAW_BODY]
        if request.path.startswith("/upload/"):
            if request.query.get("uploadType") != "media":
                raise _GmailError(400, "invalidArgument", "Only uploadType=media is simulated.")
            raw = raw_body
        else:
            try:
                payload = json.loads(raw_body or b"{}")
            except ValueError as exc:
                raise _GmailError(400, "parseError", "Parse Error") from exc
            encoded = payload.get("raw") if isinstance(payload, dict) else None
            if not encoded:
                raise _GmailError(
                    400,
                    "invalidArgument",
                    "'raw' RFC822 payload message string or uploading message via /upload/* "
                    "URL required",
                )
            try:
                raw = _b64url_decode(str(encoded))
            except (binascii.Error, ValueError) as exc:
                raise _GmailError(
                    400, "invalidArgument", "Invalid value for ByteString: " + str(encoded)[:40]
                ) from exc
        mail = parse_rfc822(raw)
        recipients = addresses(
            [str(v) for name in ("To", "Cc", "Bcc") for v in mail.get_all(name, [])]
        )
        if not recipients:
            raise _GmailError(400, "invalidArgument", "Recipient address required")
        del mail["From"]
        mail["From"] = mailbox.address
        if not self.keep_client_message_id or "Message-ID" not in mail:
            del mail["Message-ID"]
            mail["Message-ID"] = f"<CA+sim{secrets.token_hex(12)}@mail.gmail.com>"
        if "Date" not in mail:
            mail["Date"] = format_datetime(datetime.now(UTC))
        sent = self._store(mailbox.address, mail.as_bytes(), {"SENT"})
        del mail["Bcc"]
        outgoing = mail.as_bytes()
        stamped = self._received_line("gmail api") + outgoing
        due = time.monotonic() + self.delivery_delay
        outside = []
        for rcpt in recipients:
            if not self.hosts(rcpt):
                outside.append(rcpt)
            elif rcpt in self._mailboxes:
                copy = sent.id if rcpt == mailbox.address else None
                self._enqueue(
                    PendingDelivery(
                        due,
                        rcpt,
                        stamped,
                        mailbox.address,
                        [rcpt],
                        deliver=functools.partial(self._deliver_local, rcpt, stamped, copy),
                    )
                )
        if outside:
            self._enqueue(PendingDelivery(due, None, outgoing, mailbox.address, outside))
        return web.json_response({"id": sent.id, "threadId": sent.thread_id, "labelIds": ["SENT"]})

    def _list(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        query = request.query
        try:
            limit = min(int(query.get("maxResults", DEFAULT_PAGE)), MAX_PAGE)
            offset = int(query["pageToken"], 16) if "pageToken" in query else 0
        except ValueError as exc:
            raise _GmailError(
                400, "invalidArgument", "Invalid value for maxResults or pageToken"
            ) from exc
        if limit < 1:
            raise _GmailError(400, "invalidArgument", "Invalid maxResults")
        wanted_labels = set(query.getall("labelIds", []))
        terms = self._parse_query(query.get("q", ""))
        include = query.get("includeSpamTrash", "false").lower() == "true"
        asked = {t.label for t in terms if t.label and not t.negate} | wanted_labels
        if self.spam_trash == "include-only":
            # users.messages.list: includeSpamTrash is the documented way to SPAM and TRASH.
            asked = set()
        found = []
        for message in mailbox.messages.values():
            if not wanted_labels <= message.labels:
                continue
            hidden = message.labels & {"SPAM", "TRASH"}
            if hidden and not include and not hidden & asked and "ANYWHERE" not in asked:
                continue
            if all(term.matches(message, self.tokens) != term.negate for term in terms):
                found.append(message)
        found.sort(key=lambda m: m.internal_date, reverse=True)
        page = found[offset : offset + limit]
        body: dict[str, Any] = {}
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + limit < len(found):
            body["nextPageToken"] = f"{offset + limit:08x}"
        body["resultSizeEstimate"] = len(found)
        return web.json_response(body)

    def _message_or_404(self, mailbox: GmailMailbox, message_id: str) -> GmailMessage:
        if not re.fullmatch(r"[0-9a-fA-F]{1,32}", message_id):
            raise _GmailError(400, "invalidArgument", "Invalid id value")
        message = mailbox.messages.get(message_id)
        if message is None:
            raise _GmailError(404, *_NOT_FOUND)
        return message

    def _get(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        message = self._message_or_404(mailbox, request.match_info["id"])
        shape = request.query.get("format", "full")
        if shape not in {"full", "metadata", "minimal", "raw"}:
            raise _GmailError(400, "invalidArgument", f"Invalid value at 'format' ({shape})")
        body: dict[str, Any] = {
            "id": message.id,
            "threadId": message.thread_id,
            "labelIds": sorted(message.labels),
            "snippet": " ".join(message.text().split())[:200],
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(message.internal_date),
        }
        if shape == "raw":
            body["raw"] = _b64url(message.raw)
        elif shape in {"full", "metadata"}:
            headers = [{"name": k, "value": v} for k, v in message.parsed.headers]
            if shape == "metadata":
                named = {h.lower() for h in request.query.getall("metadataHeaders", [])}
                if named:
                    headers = [h for h in headers if h["name"].lower() in named]
            payload: dict[str, Any] = {
                "partId": "",
                "mimeType": message.parsed.content_type,
                "filename": "",
                "headers": headers,
                "body": {"size": len(message.text())},
            }
            if shape == "full":
                payload["body"]["data"] = _b64url(message.text().encode())
            body["payload"] = payload
        return web.json_response(body)

    def _delete(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        message = self._message_or_404(mailbox, request.match_info["id"])
        del mailbox.messages[message.id]
        mailbox.history_id += 1
        return web.Response(status=204)

    def _trash(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        message = self._message_or_404(mailbox, request.match_info["id"])
        message.labels = (message.labels - {"INBOX", "SPAM"}) | {"TRASH"}
        mailbox.history_id += 1
        message.history_id = mailbox.history_id
        return web.json_response(
            {"id": message.id, "threadId": message.thread_id, "labelIds": sorted(message.labels)}
        )

    def _batch_delete(self, request: web.Request, mailbox: GmailMailbox) -> web.Response:
        try:
            payload = json.loads(request[RAW_BODY] or b"{}")
        except ValueError as exc:
            raise _GmailError(400, "parseError", "Parse Error") from exc
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not ids:
            raise _GmailError(400, "invalidArgument", "ids must be provided")
        if len(ids) > 1000:
            raise _GmailError(400, "invalidArgument", "Too many ids (at most 1000)")
        for message_id in ids:
            mailbox.messages.pop(str(message_id), None)  # "no guarantees ... existed at all"
        mailbox.history_id += 1
        return web.Response(status=204)

    # ------------------------------------------------------------ search

    def _parse_query(self, text: str) -> list[_Term]:
        terms = []
        pos = 0
        while pos < len(text):
            found = None if text[pos].isspace() else _TERM.match(text, pos)
            if found is None or found.end() == pos:
                pos += 1  # white space, or a stray quote or bracket
                continue
            term = _Term.parse(found)
            if term.warning:
                with self._lock:
                    self.query_warnings.append(term.warning)
            terms.append(term)
            pos = found.end()
        return terms


_KNOWN_OPS = {
    "rfc822msgid", "subject", "from", "to", "in", "label", "is",
    "newer_than", "older_than", "after", "before",
}  # fmt: skip
_AGE = {"d": 86400, "m": 30 * 86400, "y": 365 * 86400}
_TERM = re.compile(
    r"""(?P<negate>-)?(?:(?P<op>[A-Za-z_][A-Za-z0-9_]*):)?"""
    r"""(?:"(?P<phrase>[^"]*)"?|\((?P<group>[^)]*)\)?|(?P<word>[^\s"()]+))"""
)
"""One search term: ``[-][op:]`` and a word, a ``"phrase"`` or a ``(group of words)``."""
_EDGES = "\"'()[]{}<>,;:!?"
"""Dropped around a word in the ``strict`` mode."""


def _words(text: str, tokens: Tokens) -> list[str]:
    """The words of a text, as a search matches them (the ``tokens`` mode)."""
    text = text.lower()
    if tokens == "punctuation":
        return re.findall(r"[^\W_]+", text)
    # "strict": whole words are matched ("Search operators you can use with Gmail"); nothing
    # documents a split at dots or hyphens, so none is made.
    return [word for word in (part.strip(_EDGES) for part in text.split()) if word]


def _contains(words: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` occurs in ``words`` as consecutive whole words."""
    size = len(wanted)
    return size > 0 and any(words[i : i + size] == wanted for i in range(len(words) - size + 1))


@dataclass
class _Term:
    op: str | None
    value: str
    kind: Literal["word", "phrase", "group"] = "word"
    negate: bool = False
    warning: str | None = None

    @property
    def label(self) -> str | None:
        if self.op in {"in", "label"}:
            return self.value.upper()
        return None

    @classmethod
    def parse(cls, found: re.Match[str]) -> _Term:
        negate = found["negate"] is not None
        op = found["op"]
        kind: Literal["word", "phrase", "group"] = "word"
        value = found["word"] or ""
        if found["phrase"] is not None:
            kind, value = "phrase", found["phrase"]
        elif found["group"] is not None:
            kind, value = "group", found["group"]
        if op is not None and op.lower() in _KNOWN_OPS and value:
            return cls(op.lower(), value, kind, negate)
        warning = None
        if op is not None:
            warning = f"operator {op}: is not simulated; searched as text"
            value = f"{op}:{value}"
        elif value in {"OR", "AND", "AROUND"} or "{" in value:
            warning = f"{value} is not simulated; searched as text"
        return cls(None, value, kind, negate, warning)

    def _in(self, texts: list[str], tokens: Tokens) -> bool:
        """Whether the words (all of a group, a phrase in order) occur in one of ``texts``."""
        fields = [_words(text, tokens) for text in texts]
        wanted = (
            [_words(word, tokens) for word in self.value.split()]
            if self.kind == "group"
            else [_words(self.value, tokens)]
        )
        return all(any(_contains(words, part) for words in fields) for part in wanted)

    def matches(self, message: GmailMessage, tokens: Tokens) -> bool:
        value = self.value.lower()
        match self.op:
            case None:
                texts = [
                    message.subject,
                    message.text(),
                    message.header("From") or "",
                    message.header("To") or "",
                ]
                return self._in(texts, tokens)
            case "rfc822msgid":
                own = (message.header("Message-ID") or "").strip().strip("<>").lower()
                return own == value.strip("<>")
            case "subject":
                return self._in([message.subject], tokens)
            case "from":
                return value in (message.header("From") or "").lower()
            case "to":
                wanted = " ".join(message.parsed.get_all("To") + message.parsed.get_all("Cc"))
                return value in wanted.lower()
            case "in" | "label":
                if value == "anywhere":
                    return True
                return value.upper() in message.labels
            case "is":
                return {
                    "unread": "UNREAD" in message.labels,
                    "read": "UNREAD" not in message.labels,
                    "starred": "STARRED" in message.labels,
                }.get(value, False)
            case "newer_than" | "older_than":
                found = re.fullmatch(r"(\d+)([dmy])", value)
                if found is None:
                    return False
                limit = time.time() - int(found.group(1)) * _AGE[found.group(2)]
                newer = message.internal_date / 1000 > limit
                return newer if self.op == "newer_than" else not newer
            case "after" | "before":
                moment = _date_value(value)
                if moment is None:
                    return False
                later = message.internal_date / 1000 >= moment
                return later if self.op == "after" else not later
        return False


def _date_value(value: str) -> float | None:
    if value.isdigit():
        return float(value)
    for pattern in ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(value, pattern).replace(tzinfo=UTC).timestamp()
    return None

"""A local Microsoft Graph (mail) and Microsoft identity platform token endpoint, for tests.

Each behaviour below names the public reference page it was written from
(Microsoft Learn; the Graph pages are also in microsoftgraph/microsoft-graph-docs-contrib).

Token endpoint, ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials flow, https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow;
  certificate credentials, https://learn.microsoft.com/entra/identity-platform/certificate-credentials;
  RFC 7523)
  - ``grant_type=client_credentials``; ``scope`` must be ``https://graph.microsoft.com/.default``
    (the ``cloud``'s Graph in a national cloud, see Modes)
    (else 400 ``invalid_scope`` AADSTS70011).
  - client secret (wrong: 401 ``invalid_client`` AADSTS7000215) or a client assertion
    (``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``):
    a PS256 JWT whose ``x5t#S256`` (base64url SHA-256) names the certificate registered
    for the app, as the certificate credentials page now documents, or an RS256 JWT whose
    ``x5t`` (base64url SHA-1) does, as it documented before (refused with
    ``rs256_assertions=False``: 401 AADSTS5002738 unsupported algorithm; any other
    algorithm always is). The thumbprint header that goes with the algorithm must be there
    and name the registered certificate, and the other one, if sent, too (else 401
    AADSTS700027 "not registered"); signature checked against that certificate (else 401
    AADSTS700027 "invalid signature"), ``aud`` = this token URL, ``iss`` = ``sub`` =
    client id (AADSTS700021), ``exp`` in the future and ``nbf`` passed (AADSTS700024),
    ``jti`` present.
  - Errors carry ``error``, ``error_description`` ("AADSTSnnn: ...\\r\\nTrace ID: ...
    \\r\\nCorrelation ID: ...\\r\\nTimestamp: ..."), ``error_codes``, ``timestamp``,
    ``trace_id``, ``correlation_id``, ``error_uri``.  Unknown tenant: 400 AADSTS90002;
    unknown client: 400 ``unauthorized_client`` AADSTS700016.
  - Success: ``token_type`` Bearer, ``expires_in``, ``ext_expires_in``, ``access_token``
    (opaque here; real tokens are JWTs the client must not parse).

Graph v1.0 mail API under ``/v1.0/users/{id | userPrincipalName}``
  - ``POST /sendMail`` -> 202, empty body (https://learn.microsoft.com/graph/api/user-sendmail):
    JSON (``message``, ``saveToSentItems``, also as the string "false" as in the
    reference's own example) or MIME (``Content-Type: text/plain``, base64; bad base64 ->
    400 ``ErrorMimeContentInvalidBase64String``).  ``internetMessageHeaders`` names must
    start with ``x-``/``X-`` (message resource: "Add custom headers only when creating a
    message, and name them starting with x-"), else 400 ``InvalidInternetMessageHeader``;
    more than 5 (or an empty list) -> 400 ``InvalidInternetMessageHeaderCollection``
    ("Maximum number of headers in one message should be less than or equal to 5." --
    the limit and wording are from responses reported by practitioners, not from the
    reference).  ``from`` another mailbox without send-as -> 403 ``ErrorSendAsDenied``
    (https://learn.microsoft.com/graph/outlook-send-mail-from-other-user).  A copy goes
    to Sent Items unless ``saveToSentItems`` is false.  Mail for hosted mailboxes lands
    in their Inbox (or Junk Email, by ``junk_rule``) after ``delivery_delay``; other
    recipients are relayed over SMTP to ``relay``.
  - ``GET /mailFolders/{id | well-known name}`` (https://learn.microsoft.com/graph/api/mailfolder-get;
    well-known names: https://learn.microsoft.com/graph/api/resources/mailfolder):
    inbox, sentitems, deleteditems, junkemail, drafts.
  - ``GET /messages`` and ``GET /mailFolders/{id}/messages``
    (https://learn.microsoft.com/graph/api/user-list-messages): default page 10,
    ``$top`` 1..1000, ``@odata.nextLink`` (absolute, with ``$skip``), ``@odata.context``,
    ``$select`` (``internetMessageHeaders`` only when selected -- message resource:
    "Returned only on applying a $select query option"), ``$filter`` (see `_odata`),
    ``$orderby`` with the InefficientFilter rules, ``$count=true``.  Default order:
    ``receivedDateTime desc``.
  - ``GET /messages/{id}`` with ``$select`` (https://learn.microsoft.com/graph/api/message-get);
    ``DELETE /messages/{id}`` -> 204, moved to Deleted Items with a new id
    (https://learn.microsoft.com/graph/api/message-delete; ids change on move per the
    message resource); ``POST /messages/{id}/permanentDelete`` -> 204, gone
    (https://learn.microsoft.com/graph/api/message-permanentdelete); ``POST
    /messages/{id}/move`` {destinationId} -> 201 with the moved message
    (https://learn.microsoft.com/graph/api/message-move).
  - Every answer has ``request-id`` and ``client-request-id`` headers; errors are
    ``{"error": {"code", "message", "innerError": {"date", "request-id",
    "client-request-id"}}}`` (https://learn.microsoft.com/graph/errors).
  - 401 ``InvalidAuthenticationToken`` for a missing, unknown or expired bearer token;
    403 ``ErrorAccessDenied`` "Access is denied. Check credentials and try again." when
    the app lacks Mail.Send / Mail.Read(Write) or the mailbox is outside its RBAC scope
    (https://learn.microsoft.com/exchange/permissions-exo/application-rbac); 404
    ``ErrorInvalidUser`` for an unknown user; 404 ``MailboxNotEnabledForRESTAPI`` for an
    unlicensed mailbox (status and message as reported by practitioners, not in the
    reference); ``ErrorQuotaExceeded`` on sendMail for a full mailbox, with 507, Graph's
    documented status for a reached storage quota (errors page).
  - Throttling (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits):
    per app and mailbox, 10,000 requests per 10 minutes and 4 concurrent requests ->
    429 ``ApplicationThrottled`` with ``Retry-After`` (seconds); the concurrency message is
    "Application is over its MailboxConcurrency limit." as Graph sends it.

Inbound SMTP (``smtp_port``): mail for hosted addresses is parsed (subject, from,
headers, Message-ID, received time) into the Inbox, or Junk Email by ``junk_rule``;
unknown hosted recipients get ``550 5.1.1``.

Modes, for what the references leave open (each named, with its source, where it acts):

- ``x_header_promotion``: whether custom ``x-`` headers of delivered mail become String
  extended properties in PS_INTERNET_HEADERS ``{00020386-0000-0000-C000-000000000046}``,
  which ``singleValueExtendedProperties/any(...)`` filters find.  ``"never"`` (default, the
  strictest reading): Exchange team blog, "Named Properties, Round 2" -- no x-header is
  promoted unless a client mapped it.  ``"after-first"``: "Provision x-headers by using EWS
  in Exchange" -- the first message carrying a header creates the named property, its value
  is not saved on that message; later ones have it (per mailbox here).  ``"always"``: the
  extended properties overview read loosely
  (https://learn.microsoft.com/graph/api/resources/extended-properties-overview).
- ``subject_tag``: a transport rule that prepends text (e.g. ``"[EXTERNAL] "``) to the
  subject of every delivered message ("Mail flow rule actions in Exchange Online": "Prepend
  the subject of the message with").
- ``cloud``: the national cloud served (``global``, ``usgov``, ``usgov-dod``, ``china``;
  "Microsoft Graph national cloud deployments"): the token scope must be that cloud's Graph
  (``https://graph.microsoft.us/.default``, ...; "Access national cloud deployments with the
  Microsoft Graph SDKs"), and outside ``global`` ``permanentDelete`` is refused, as its
  reference page's national-cloud table lists it for the global service only.  No refusal
  is documented; the answer is Graph's for a path segment a deployment lacks, 400
  ``BadRequest`` "Resource not found for the segment 'permanentDelete'." (as reported for
  other segments in microsoftgraph/microsoft-graph-docs#21648 and
  microsoftgraph/msgraph-beta-sdk-python#764).
- ``smtp_sent_copies``: mail arriving over SMTP from a hosted mailbox's own address also
  leaves a copy in that mailbox's Sent Items, as Exchange Online keeps one of mail submitted
  over SMTP AUTH ("How to set up a multifunction device or application to send email using
  Microsoft 365": the authenticating mailbox is the sender).  The copy has no internet
  headers: the message resource describes ``internetMessageHeaders`` as the headers of the
  network path a message took, which a copy that was never received need not have.

NOT simulated: delegated (user) tokens and token validation of real JWTs, ``/me``,
``$search``, ``$expand``, ``$skiptoken``/delta (these query options are
answered 501 NotImplemented, so a transport relying on them fails loudly), attachments, drafts
(create/send/reply), change notifications, JSON batching, ``Prefer`` headers, mail
folder hierarchy beyond the well-known folders, message size limits, Exchange sending
limits (30 messages/minute), NDRs for unknown hosted recipients, and anything outside
mail.  Error messages not quoted from a reference are plausible, not verbatim.
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
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ._base import (
    RAW_BODY,
    Fault,
    PendingDelivery,
    SimulatorBase,
    SlidingWindow,
    addresses,
    build_message,
    parse_rfc822,
    quick_parse,
)
from ._odata import FILTERABLE, ODataError, check_orderby, parse_filter, parse_orderby

__all__ = [
    "CLOUD_GRAPH",
    "GRAPH_SCOPE",
    "PS_INTERNET_HEADERS",
    "GraphApp",
    "GraphFolder",
    "GraphMailbox",
    "GraphMessage",
    "GraphSimulator",
    "extended_header_id",
    "self_signed_certificate",
    "thumbprint_headers",
]

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
XHeaderPromotion = Literal["never", "after-first", "always"]
NationalCloud = Literal["global", "usgov", "usgov-dod", "china"]
#: each cloud's Graph root ("Microsoft Graph national cloud deployments"); its .default scope
CLOUD_GRAPH: dict[NationalCloud, str] = {
    "global": "https://graph.microsoft.com",
    "usgov": "https://graph.microsoft.us",
    "usgov-dod": "https://dod-graph.microsoft.us",
    "china": "https://microsoftgraph.chinacloudapi.cn",
}
PS_INTERNET_HEADERS = "{00020386-0000-0000-C000-000000000046}"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_THUMBPRINTS = {"PS256": "x5t#S256", "RS256": "x5t"}
"""The algorithms a client assertion may be signed with, and the header naming the
certificate in each (certificate credentials page: PS256 now, RS256 before)."""
WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "drafts": "Drafts",
}
DEFAULT_PAGE = 10  # user-list-messages: "The default page size is 10 messages."
MAX_PAGE = 1000  # user-list-messages: "within the range of 1 and 1000"
MAX_CUSTOM_HEADERS = 5
ACCESS_DENIED = "Access is denied. Check credentials and try again."
_REQUEST_ID = web.RequestKey("graph_request_id", str)
_NOT_FOUND = "The specified object was not found in the store."
_UNREADABLE = "Unable to read JSON request payload."
READ_PERMISSIONS = {"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All"}
WRITE_PERMISSIONS = {"Mail.ReadWrite"}
SEND_PERMISSIONS = {"Mail.Send"}


def extended_header_id(header_name: str) -> str:
    """The extended-property id under which an internet header is filterable."""
    return f"String {PS_INTERNET_HEADERS} Name {header_name}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _graph_id() -> str:
    return "AAMkAD" + _b64url(secrets.token_bytes(24)).replace("_", "-") + "AAA="


@dataclass
class GraphMessage:
    """A message in a simulated mailbox (the subset of the Graph message resource modelled)."""

    id: str
    parent_folder_id: str
    subject: str
    body_type: str
    body: str
    from_address: str | None
    to: list[str]
    cc: list[str]
    internet_message_id: str
    headers: list[tuple[str, str]]
    received: datetime
    sent: datetime
    is_read: bool = False
    conversation_id: str = field(default_factory=lambda: _b64url(secrets.token_bytes(16)))
    extended: dict[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def header(self, name: str) -> str | None:
        """First value of an internet header (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def value(self, prop: str) -> Any:
        """The value of a filterable property (see `_odata.FILTERABLE`)."""
        return {
            "subject": self.subject,
            "internetMessageId": self.internet_message_id,
            "conversationId": self.conversation_id,
            "parentFolderId": self.parent_folder_id,
            "importance": "normal",
            "inferenceClassification": "focused",
            "from/emailAddress/address": self.from_address,
            "sender/emailAddress/address": self.from_address,
            "receivedDateTime": self.received.replace(microsecond=0),
            "sentDateTime": self.sent.replace(microsecond=0),
            "createdDateTime": self.created.replace(microsecond=0),
            "lastModifiedDateTime": self.created.replace(microsecond=0),
            "isRead": self.is_read,
            "isDraft": False,
            "hasAttachments": False,
        }[prop]

    def resource(self) -> dict[str, Any]:
        """The full JSON representation (internetMessageHeaders included; callers trim)."""

        def recipient(address: str | None) -> dict[str, Any] | None:
            if address is None:
                return None
            return {"emailAddress": {"name": address, "address": address}}

        return {
            "@odata.etag": f'W/"{self.conversation_id[:12]}"',
            "id": self.id,
            "createdDateTime": _iso(self.created),
            "lastModifiedDateTime": _iso(self.created),
            "changeKey": self.conversation_id[:12],
            "categories": [],
            "receivedDateTime": _iso(self.received),
            "sentDateTime": _iso(self.sent),
            "hasAttachments": False,
            "internetMessageId": self.internet_message_id,
            "subject": self.subject,
            "bodyPreview": self.body[:255],
            "importance": "normal",
            "parentFolderId": self.parent_folder_id,
            "conversationId": self.conversation_id,
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": self.is_read,
            "isDraft": False,
            "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(self.id)}",
            "inferenceClassification": "focused",
            "body": {"contentType": self.body_type, "content": self.body},
            "sender": recipient(self.from_address),
            "from": recipient(self.from_address),
            "toRecipients": [recipient(a) for a in self.to],
            "ccRecipients": [recipient(a) for a in self.cc],
            "bccRecipients": [],
            "replyTo": [],
            "flag": {"flagStatus": "notFlagged"},
            "internetMessageHeaders": [{"name": k, "value": v} for k, v in self.headers],
        }


_SELECTABLE = {
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
    "receivedDateTime", "sentDateTime", "hasAttachments", "internetMessageId", "subject",
    "bodyPreview", "importance", "parentFolderId", "conversationId",
    "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients",
    "bccRecipients", "replyTo", "flag", "internetMessageHeaders", "uniqueBody",
}  # fmt: skip


@dataclass
class GraphFolder:
    """A mail folder: its immutable id, well-known name and display name."""

    id: str
    well_known: str
    display_name: str


@dataclass
class GraphMailbox:
    """A hosted mailbox and its states (flip the flags to simulate trouble)."""

    address: str
    user_id: str
    display_name: str
    folders: dict[str, GraphFolder]
    messages: dict[str, GraphMessage] = field(default_factory=dict)
    licensed: bool = True
    quota_exceeded: bool = False
    deferred: bool = False
    send_as: set[str] = field(default_factory=set)
    named_headers: set[str] = field(default_factory=set)
    """x-header names (lower case) the mailbox has a named property for (``after-first``)."""

    def folder(self, key: str) -> GraphFolder | None:
        """A folder by well-known name (case-insensitive) or id."""
        for folder in self.folders.values():
            if folder.well_known == key.lower() or folder.id == key:
                return folder
        return None


@dataclass
class GraphApp:
    """A registered application: credentials, application permissions and RBAC scope."""

    client_id: str
    secret: str | None
    certificate: x509.Certificate | None
    permissions: set[str]
    mailboxes: set[str] | None  # None: every mailbox of the tenant

    def thumbprints(self) -> tuple[str, str] | None:
        """(x5t, x5t#S256) of the registered certificate, base64url without padding."""
        if self.certificate is None:
            return None
        return (
            _b64url(self.certificate.fingerprint(hashes.SHA1())),
            _b64url(self.certificate.fingerprint(hashes.SHA256())),
        )


@dataclass
class _Token:
    client_id: str
    expires_at: float
    roles: frozenset[str]
    """The app's application permissions when the token was issued: Microsoft identity
    platform access tokens carry them in their ``roles`` claim, so a permission granted or
    removed later reaches only tokens issued after ("Microsoft identity platform access
    tokens", the roles claim)."""


class _GraphError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class _TokenError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


class GraphSimulator(SimulatorBase):
    """Microsoft Graph mail + token endpoint on 127.0.0.1; see the module docstring."""

    name = "graph-simulator"

    def __init__(
        self,
        *,
        tenant: str = "00000000-0000-0000-0000-0000000000aa",
        domains: Iterable[str] = ("contoso.example",),
        delivery_delay: float = 0.2,
        relay: tuple[str, int] | None = None,
        junk_rule: Callable[[EmailMessage], bool] | None = None,
        token_lifetime: int = 3599,
        request_limit: int = 10_000,
        request_window: float = 600.0,
        concurrency_limit: int = 4,
        x_header_promotion: XHeaderPromotion = "never",
        subject_tag: str | None = None,
        cloud: NationalCloud = "global",
        smtp_sent_copies: bool = False,
        rs256_assertions: bool = True,
    ) -> None:
        super().__init__(
            domains=tuple(domains),
            delivery_delay=delivery_delay,
            relay=relay,
            junk_rule=junk_rule,
        )
        self.tenant = tenant
        self.token_lifetime = token_lifetime
        self.request_limit = request_limit
        self.request_window = request_window
        self.concurrency_limit = concurrency_limit
        self.x_header_promotion = x_header_promotion
        self.subject_tag = subject_tag
        self.cloud = cloud
        self.smtp_sent_copies = smtp_sent_copies
        self.rs256_assertions = rs256_assertions
        """Whether RS256 client assertions named by ``x5t`` are still taken (PS256 with
        ``x5t#S256`` always is)."""
        self._mailboxes: dict[str, GraphMailbox] = {}
        self._apps: dict[str, GraphApp] = {}
        self._tokens: dict[str, _Token] = {}
        self._windows: dict[tuple[str, str], SlidingWindow] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self.undeliverable: list[tuple[str, bytes]] = []

    # ------------------------------------------------------------ URLs

    @property
    def token_url(self) -> str:
        """``{url}/{tenant}/oauth2/v2.0/token`` -- also the ``aud`` of client assertions."""
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    @property
    def graph_url(self) -> str:
        """Base of the Graph API, ``{url}/v1.0`` (as ``https://graph.microsoft.com/v1.0``)."""
        return f"{self.url}/v1.0"

    # ------------------------------------------------------------ registry (test helpers)

    def add_mailbox(self, address: str, *, display_name: str | None = None) -> GraphMailbox:
        """Host a mailbox with the well-known folders; `address` must be in `domains`."""
        address = address.lower()
        if not self.hosts(address):
            raise ValueError(f"{address} is not in {self.domains}")
        folders = {}
        for well_known, name in WELL_KNOWN.items():
            folder = GraphFolder(_graph_id(), well_known, name)
            folders[folder.id] = folder
        mailbox = GraphMailbox(
            address=address,
            user_id=str(uuid.uuid4()),
            display_name=display_name or address.split("@")[0],
            folders=folders,
        )
        with self._lock:
            self._mailboxes[address] = mailbox
        return mailbox

    def mailbox(self, address: str) -> GraphMailbox:
        with self._lock:
            return self._mailboxes[address.lower()]

    def add_app(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate: bytes | x509.Certificate | None = None,
        permissions: Iterable[str] = ("Mail.Send", "Mail.ReadWrite"),
        mailboxes: Iterable[str] | None = None,
    ) -> GraphApp:
        """Register an app with a secret and/or a certificate (PEM bytes or object).

        `permissions` are application permissions (Mail.Send, Mail.Read, Mail.ReadWrite);
        `mailboxes` limits them to those addresses (RBAC for Applications), None = all.
        """
        if isinstance(certificate, bytes):
            certificate = x509.load_pem_x509_certificate(certificate)
        app = GraphApp(
            client_id=client_id,
            secret=secret,
            certificate=certificate,
            permissions=set(permissions),
            mailboxes=None if mailboxes is None else {m.lower() for m in mailboxes},
        )
        with self._lock:
            self._apps[client_id] = app
        return app

    def app(self, client_id: str) -> GraphApp:
        with self._lock:
            return self._apps[client_id]

    def issue_token(self, client_id: str, lifetime: float | None = None) -> str:
        """Mint an access token for a registered app without calling the token endpoint."""
        token = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IlNJTSJ9." + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = _Token(
                client_id,
                time.time() + (self.token_lifetime if lifetime is None else lifetime),
                frozenset(self._apps[client_id].permissions),
            )
        return token

    def expire_tokens(self) -> None:
        """Every token issued so far is now expired."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def grant_send_as(self, mailbox: str, other: str) -> None:
        """Let `mailbox` send as `other` (``from`` = other in sendMail)."""
        with self._lock:
            self._mailboxes[mailbox.lower()].send_as.add(other.lower())

    def set_mailbox_state(
        self,
        address: str,
        *,
        licensed: bool | None = None,
        quota_exceeded: bool | None = None,
        deferred: bool | None = None,
    ) -> None:
        """Flip a mailbox's states: unlicensed, full, or deferring delivery (mail is held)."""
        with self._lock:
            mailbox = self._mailboxes[address.lower()]
            if licensed is not None:
                mailbox.licensed = licensed
            if quota_exceeded is not None:
                mailbox.quota_exceeded = quota_exceeded
            if deferred is not None:
                mailbox.deferred = deferred

    def resume_delivery(self, address: str) -> None:
        """End a deferral: held mail is delivered on the next tick."""
        self.set_mailbox_state(address, deferred=False)

    def put_message(
        self,
        address: str,
        folder: str = "inbox",
        *,
        subject: str,
        body: str = "",
        sender: str = "someone@elsewhere.example",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        internet_message_id: str | None = None,
        received: datetime | None = None,
        is_read: bool = False,
    ) -> GraphMessage:
        """Put a message into a folder directly (ordinary mail, or lookalikes)."""
        moment = received or datetime.now(UTC)
        raw = build_message(
            sender=sender,
            to=address,
            subject=subject,
            date=moment,
            message_id=internet_message_id or make_msgid(domain="elsewhere.example"),
            headers=headers.items() if isinstance(headers, Mapping) else headers,
            body=body,
        )
        return self._store(address, folder, raw, received=moment, is_read=is_read)

    def put_raw(self, address: str, raw: bytes, folder: str = "inbox") -> GraphMessage:
        """Put an RFC 822 message into a folder as delivered."""
        return self._store(address, folder, raw)

    def messages(self, address: str, folder: str | None = None) -> list[GraphMessage]:
        """Messages of a mailbox (all folders if `folder` is None), oldest first."""
        with self._lock:
            mailbox = self._mailboxes[address.lower()]
            wanted = None if folder is None else mailbox.folder(folder)
            if folder is not None and wanted is None:
                raise KeyError(folder)
            found = [
                m
                for m in mailbox.messages.values()
                if wanted is None or m.parent_folder_id == wanted.id
            ]
        return sorted(found, key=lambda m: m.received)

    def folder_name(self, address: str, message: GraphMessage) -> str:
        """The well-known name of the folder a message is in."""
        with self._lock:
            return self._mailboxes[address.lower()].folders[message.parent_folder_id].well_known

    # ------------------------------------------------------------ storage

    def _store(
        self,
        address: str,
        folder: str,
        raw: bytes,
        *,
        received: datetime | None = None,
        is_read: bool = False,
        internet_headers: bool = True,
    ) -> GraphMessage:
        parsed = quick_parse(raw)
        headers = parsed.headers if internet_headers else []
        body_type = "html" if parsed.html is not None else "text"
        body = parsed.html if parsed.html is not None else parsed.text
        sent = received or datetime.now(UTC)
        if parsed.get("Date"):
            with contextlib.suppress(TypeError, ValueError):
                sent = parsedate_to_datetime(parsed.get("Date") or "")
        from_list = addresses([parsed.get("From") or ""])
        with self._lock:
            mailbox = self._mailboxes[address.lower()]
            target = mailbox.folder(folder)
            if target is None:
                raise KeyError(folder)
            extended = self._promoted(mailbox, headers)
            message = GraphMessage(
                id=_graph_id(),
                parent_folder_id=target.id,
                subject=parsed.get("Subject") or "",
                body_type=body_type,
                body=body,
                from_address=from_list[0] if from_list else None,
                to=addresses(parsed.get_all("To")),
                cc=addresses(parsed.get_all("Cc")),
                internet_message_id=parsed.get("Message-ID") or make_msgid(),
                headers=headers,
                received=received or datetime.now(UTC),
                sent=sent,
                is_read=is_read,
                extended=extended,
            )
            mailbox.messages[message.id] = message
        return message

    def _promoted(self, mailbox: GraphMailbox, headers: list[tuple[str, str]]) -> dict[str, str]:
        """The x-headers Exchange keeps as extended properties, by `x_header_promotion`."""
        extended: dict[str, str] = {}
        for key, value in headers:
            name = key.lower()
            if not name.startswith("x-") or self.x_header_promotion == "never":
                # "Named Properties, Round 2" (Exchange team blog): none promoted unless a
                # client mapped the name first.
                continue
            if self.x_header_promotion == "after-first" and name not in mailbox.named_headers:
                # "Provision x-headers by using EWS in Exchange": the first message carrying
                # an x-header creates its named property; "the x-header value is not saved
                # on that first email".
                mailbox.named_headers.add(name)
                continue
            extended.setdefault(extended_header_id(key), value)
        return extended

    def _tag_subject(self, raw: bytes) -> bytes:
        """`subject_tag` prepended to the Subject, as a transport rule's "Prepend the subject
        of the message with" action does ("Mail flow rule actions in Exchange Online")."""
        if not self.subject_tag:
            return raw
        tag = self.subject_tag.encode()
        end = re.search(rb"\r?\n\r?\n", raw)
        split = end.start() if end else len(raw)
        head = re.sub(
            rb"(?im)^(subject:[ \t]*)", lambda found: found.group(1) + tag, raw[:split], count=1
        )
        return head + raw[split:]

    def _deliver_local(self, address: str, raw: bytes) -> None:
        raw = self._tag_subject(raw)
        junk = self.junk_rule is not None and self.junk_rule(parse_rfc822(raw))
        folder = "junkemail" if junk else "inbox"
        self._store(address, folder, raw)

    def _mailbox_deferred(self, address: str) -> bool:
        mailbox = self._mailboxes.get(address.lower())
        return mailbox is not None and mailbox.deferred

    def _smtp_accepts(self, address: str) -> bool:
        with self._lock:
            return address.lower() in self._mailboxes

    def _smtp_received(self, sender: str, recipients: list[str], raw: bytes) -> None:
        if self.smtp_sent_copies and sender.lower() in self._mailboxes:
            # Exchange Online keeps a Sent Items copy of mail a mailbox submits over SMTP AUTH
            # ("How to set up a multifunction device or application to send email using
            # Microsoft 365"); a copy never received carries no internet headers.
            self._store(sender, "sentitems", raw, is_read=True, internet_headers=False)
        stamped = self._received_line("inbound") + raw
        for rcpt in (r.lower() for r in recipients):
            self._enqueue(
                PendingDelivery(
                    due=0.0,
                    mailbox=rcpt,
                    raw=stamped,
                    sender=sender,
                    recipients=[rcpt],
                    deliver=functools.partial(self._deliver_local, rcpt, stamped),
                )
            )

    def _received_line(self, via: str) -> bytes:
        stamp = format_datetime(datetime.now(UTC))
        return f"Received: from {via} by {self.name}.invalid; {stamp}\r\n".encode()

    # ------------------------------------------------------------ HTTP plumbing

    def _routes(self, app: web.Application) -> None:
        users = "/v1.0/users/{user}"
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post(users + "/sendMail", self._api(self._send_mail, SEND_PERMISSIONS))
        app.router.add_get(
            users + "/mailFolders/{folder}", self._api(self._get_folder, READ_PERMISSIONS)
        )
        app.router.add_get(
            users + "/mailFolders/{folder}/messages", self._api(self._list, READ_PERMISSIONS)
        )
        app.router.add_get(users + "/messages", self._api(self._list, READ_PERMISSIONS))
        app.router.add_get(
            users + "/messages/{mid}", self._api(self._get_message, READ_PERMISSIONS)
        )
        app.router.add_get(
            users + "/mailFolders/{folder}/messages/{mid}",
            self._api(self._get_message, READ_PERMISSIONS),
        )
        app.router.add_delete(users + "/messages/{mid}", self._api(self._delete, WRITE_PERMISSIONS))
        app.router.add_post(
            users + "/messages/{mid}/permanentDelete",
            self._api(self._permanent_delete, WRITE_PERMISSIONS),
        )
        app.router.add_post(
            users + "/messages/{mid}/move", self._api(self._move, WRITE_PERMISSIONS)
        )

    @staticmethod
    def _request_id(request: web.Request) -> str:
        if _REQUEST_ID not in request:
            request[_REQUEST_ID] = str(uuid.uuid4())
        return request[_REQUEST_ID]

    def _decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/v1.0/"):
            rid = self._request_id(request)
            response.headers["request-id"] = rid
            response.headers["client-request-id"] = request.headers.get("client-request-id", rid)

    def _error(
        self,
        request: web.Request,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        rid = self._request_id(request)
        body = {
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": rid,
                    "client-request-id": request.headers.get("client-request-id", rid),
                },
            }
        }
        return web.json_response(body, status=status, headers=headers)

    def _fault_response(self, fault: Fault, request: web.Request) -> web.Response:
        body = fault.body
        if (
            isinstance(body, dict)
            and isinstance(body.get("error"), dict)
            and "innerError" not in body["error"]
            and request.path.startswith("/v1.0/")
        ):
            rid = self._request_id(request)
            body = {
                "error": {
                    **body["error"],
                    "innerError": {
                        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                        "request-id": rid,
                        "client-request-id": request.headers.get("client-request-id", rid),
                    },
                }
            }
        return web.json_response(body, status=fault.status, headers=fault.headers)

    def _api(
        self,
        handler: Callable[[web.Request, GraphMailbox, GraphApp], Any],
        permissions: set[str],
    ) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                app, mailbox = self._admit(request, permissions)
            except _GraphError as exc:
                return self._error(request, exc.status, exc.code, exc.message, exc.headers)
            key = (app.client_id, mailbox.address)
            with self._lock:
                inflight = self._inflight.get(key, 0)
                if inflight >= self.concurrency_limit:
                    return self._error(
                        request,
                        429,
                        "ApplicationThrottled",
                        "Application is over its MailboxConcurrency limit.",
                        {"Retry-After": "1"},
                    )
                self._inflight[key] = inflight + 1
            try:
                delay = self._latency_for(request.path)
                if delay:
                    await asyncio.sleep(delay)
                result: web.StreamResponse = handler(request, mailbox, app)
                return result
            except _GraphError as exc:
                return self._error(request, exc.status, exc.code, exc.message, exc.headers)
            except ODataError as exc:
                return self._error(request, 400, exc.code, exc.message)
            finally:
                with self._lock:
                    self._inflight[key] -= 1

        return serve

    def _admit(self, request: web.Request, permissions: set[str]) -> tuple[GraphApp, GraphMailbox]:
        """Authentication, authorisation, mailbox lookup and the request-rate limit."""
        unauthenticated = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri='
            '"https://login.microsoftonline.com/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        }
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _GraphError(
                401, "InvalidAuthenticationToken", "Access token is empty.", unauthenticated
            )
        with self._lock:
            issued = self._tokens.get(token.strip())
            if issued is None:
                raise _GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token validation failure. Invalid audience.",
                    unauthenticated,
                )
            if issued.expires_at <= time.time():
                raise _GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                    unauthenticated,
                )
            app = self._apps[issued.client_id]
            if not issued.roles & permissions:
                raise _GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
            user = request.match_info["user"].lower()
            mailbox = self._mailboxes.get(user) or next(
                (m for m in self._mailboxes.values() if m.user_id == user), None
            )
            if mailbox is None:
                name = request.match_info["user"]
                raise _GraphError(
                    404, "ErrorInvalidUser", f"The requested user '{name}' is invalid."
                )
            if app.mailboxes is not None and mailbox.address not in app.mailboxes:
                raise _GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
            if not mailbox.licensed:
                raise _GraphError(
                    404,
                    "MailboxNotEnabledForRESTAPI",
                    "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
                )
            window = self._windows.setdefault(
                (app.client_id, mailbox.address), SlidingWindow(self.request_window)
            )
            now = time.monotonic()
            if window.used(now) >= self.request_limit:
                raise _GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxRequestLimit limit.",
                    {"Retry-After": str(window.retry_after(now))},
                )
            window.events.append((now, 1))
        return app, mailbox

    # ------------------------------------------------------------ token endpoint

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            app = self._authenticate_client(request.match_info["tenant"], form)
        except _TokenError as exc:
            return self._token_error(exc)
        token = self.issue_token(app.client_id)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _token_error(self, exc: _TokenError) -> web.Response:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{exc.code}: {exc.description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
        )
        return web.json_response(
            {
                "error": exc.error,
                "error_description": description,
                "error_codes": [exc.code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={exc.code}",
            },
            status=exc.status,
        )

    def _authenticate_client(self, tenant: str, form: dict[str, str]) -> GraphApp:
        if tenant != self.tenant and tenant.lower() not in self.domains:
            raise _TokenError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            raise _TokenError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            raise _TokenError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise _TokenError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        scope = form.get("scope", "")
        if not scope:
            raise _TokenError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        # "Access national cloud deployments with the Microsoft Graph SDKs": a scope naming
        # Graph uses the national cloud's Graph domain.
        if scope != CLOUD_GRAPH[self.cloud] + "/.default":
            raise _TokenError(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. "
                f"The scope {scope} is not valid.",
            )
        if "client_secret" in form:
            if app.secret is None or not secrets.compare_digest(form["client_secret"], app.secret):
                raise _TokenError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is the client secret value, not the client secret ID, for a secret added to "
                    f"app '{client_id}'.",
                )
            return app
        if "client_assertion" in form:
            self._check_assertion(app, form)
            return app
        raise _TokenError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )

    def _check_assertion(self, app: GraphApp, form: dict[str, str]) -> None:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _TokenError(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type; expected " + JWT_BEARER + ".",
            )
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise _TokenError(
                400, "invalid_request", 50027, f"JWT token is invalid or malformed. ({exc})"
            ) from exc
        algorithm = header.get("alg")
        accepted = dict(ASSERTION_THUMBPRINTS)
        if not self.rs256_assertions:
            del accepted["RS256"]
        if algorithm not in accepted:
            raise _TokenError(
                401,
                "invalid_client",
                5002738,
                f"Invalid JWT token. '{algorithm}' is not a supported signature algorithm.",
            )
        registered = app.thumbprints()
        expected = dict(zip(("x5t", "x5t#S256"), registered or ("", ""), strict=True))
        named = header.get(accepted[algorithm])
        others = [header[name] for name in expected if name in header]
        if (
            registered is None
            or named is None
            or any(header[name] != expected[name] for name in expected if name in header)
        ):
            raise _TokenError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not "
                f"registered on application. [Reason - The key was not found., Thumbprint of key "
                f"used by client: '{named or (others[0] if others else None)}']",
            )
        assert app.certificate is not None
        try:
            claims = jwt.decode(
                assertion,
                app.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=[algorithm],
                audience=self.token_url,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
                leeway=60,
            )
        except jwt.InvalidSignatureError as exc:
            raise _TokenError(
                401, "invalid_client", 700027, "Client assertion contains an invalid signature."
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise _TokenError(
                401,
                "invalid_client",
                700023,
                "Client assertion audience claim does not match Realm issuer.",
            ) from exc
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            raise _TokenError(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ) from exc
        except jwt.PyJWTError as exc:
            raise _TokenError(
                400, "invalid_request", 50027, f"JWT token is invalid or malformed. ({exc})"
            ) from exc
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise _TokenError(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )

    # ------------------------------------------------------------ API handlers

    def _send_mail(
        self, request: web.Request, mailbox: GraphMailbox, app: GraphApp
    ) -> web.Response:
        raw_body: bytes = request[RAW_BODY]
        content_type = request.content_type
        if content_type == "text/plain":
            mail = self._mime_message(raw_body)
            save = True
        else:
            try:
                payload = json.loads(raw_body or b"null")
            except ValueError as exc:
                raise _GraphError(400, "BadRequest", _UNREADABLE) from exc
            if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
                raise _GraphError(
                    400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty."
                )
            save_value = payload.get("saveToSentItems", True)
            save = not (save_value is False or str(save_value).lower() == "false")
            mail = self._json_message(payload["message"], mailbox)
        sender = addresses([str(mail["From"] or mailbox.address)])
        from_address = sender[0] if sender else mailbox.address
        if from_address != mailbox.address and from_address not in mailbox.send_as:
            raise _GraphError(
                403,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the right "
                "to send mail on behalf of the specified sending account. Cannot submit message.",
            )
        if mailbox.quota_exceeded:
            raise _GraphError(507, "ErrorQuotaExceeded", "The mailbox quota has been exceeded.")
        recipients = addresses(
            [str(v) for name in ("To", "Cc", "Bcc") for v in mail.get_all(name, [])]
        )
        if not recipients:
            raise _GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it "
                "contains no recipients.",
            )
        del mail["Bcc"]
        raw = mail.as_bytes()
        if save:
            self._store(mailbox.address, "sentitems", raw, is_read=True)
        stamped = self._received_line("graph sendMail") + raw
        due = time.monotonic() + self.delivery_delay
        outside = []
        for rcpt in recipients:
            if not self.hosts(rcpt):
                outside.append(rcpt)
            elif rcpt in self._mailboxes:
                self._enqueue(
                    PendingDelivery(
                        due,
                        rcpt,
                        stamped,
                        from_address,
                        [rcpt],
                        deliver=functools.partial(self._deliver_local, rcpt, stamped),
                    )
                )
            else:
                with self._lock:
                    self.undeliverable.append((rcpt, raw))
        if outside:
            self._enqueue(PendingDelivery(due, None, raw, from_address, outside))
        return web.Response(status=202)

    def _mime_message(self, body: bytes) -> EmailMessage:
        try:
            raw = base64.b64decode(body.strip(), validate=False)
            if not raw.strip():
                raise ValueError("empty")
        except (binascii.Error, ValueError) as exc:
            raise _GraphError(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            ) from exc
        mail = parse_rfc822(raw)
        if "Message-ID" not in mail:
            mail["Message-ID"] = make_msgid(domain="simulated.prod.outlook.com")
        if "Date" not in mail:
            mail["Date"] = format_datetime(datetime.now(UTC))
        return mail

    def _json_message(self, message: dict[str, Any], mailbox: GraphMailbox) -> EmailMessage:
        headers = message.get("internetMessageHeaders")
        if headers is not None:
            if not isinstance(headers, list) or not headers or len(headers) > MAX_CUSTOM_HEADERS:
                raise _GraphError(
                    400,
                    "InvalidInternetMessageHeaderCollection",
                    "Maximum number of headers in one message should be less than or equal to "
                    f"{MAX_CUSTOM_HEADERS}.",
                )
            for item in headers:
                name = str(item.get("name", "")) if isinstance(item, dict) else ""
                if not name.lower().startswith("x-"):
                    raise _GraphError(
                        400,
                        "InvalidInternetMessageHeader",
                        f"The internet message header name '{name}' should start with 'x-' or "
                        "'X-'.",
                    )

        def recipients(key: str) -> list[str]:
            found = []
            for item in message.get(key) or []:
                address = ((item or {}).get("emailAddress") or {}).get("address")
                if not address:
                    raise _GraphError(
                        400, "ErrorInvalidRecipients", "At least one recipient isn't valid."
                    )
                found.append(str(address))
            return found

        mail = EmailMessage()
        sender = ((message.get("from") or {}).get("emailAddress") or {}).get("address")
        mail["From"] = sender or mailbox.address
        kinds = (("toRecipients", "To"), ("ccRecipients", "Cc"), ("bccRecipients", "Bcc"))
        for key, header in kinds:
            found = recipients(key)
            if found:
                mail[header] = ", ".join(found)
        mail["Subject"] = str(message.get("subject") or "")
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain=f"{secrets.token_hex(4)}.simulated.prod.outlook.com")
        for item in headers or []:
            mail[str(item["name"])] = str(item.get("value", ""))
        body = message.get("body") or {}
        content = str(body.get("content") or "")
        if str(body.get("contentType", "text")).lower() == "html":
            mail.set_content(content, subtype="html")
        else:
            mail.set_content(content)
        return mail

    def _folder_or_404(self, mailbox: GraphMailbox, key: str) -> GraphFolder:
        folder = mailbox.folder(key)
        if folder is None:
            raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND)
        return folder

    def _message_or_404(self, mailbox: GraphMailbox, mid: str) -> GraphMessage:
        message = mailbox.messages.get(mid)
        if message is None:
            raise _GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        return message

    def _get_folder(
        self, request: web.Request, mailbox: GraphMailbox, app: GraphApp
    ) -> web.Response:
        with self._lock:
            folder = self._folder_or_404(mailbox, request.match_info["folder"])
            inside = [m for m in mailbox.messages.values() if m.parent_folder_id == folder.id]
            return web.json_response(
                {
                    "@odata.context": f"{self.graph_url}/$metadata#users('{mailbox.address}')"
                    "/mailFolders/$entity",
                    "id": folder.id,
                    "displayName": folder.display_name,
                    "parentFolderId": "AAMkADmsgfolderroot",
                    "childFolderCount": 0,
                    "unreadItemCount": sum(1 for m in inside if not m.is_read),
                    "totalItemCount": len(inside),
                    "sizeInBytes": sum(len(m.body) for m in inside),
                    "isHidden": False,
                }
            )

    @staticmethod
    def _select(request: web.Request) -> list[str] | None:
        text = request.query.get("$select")
        if text is None:
            return None
        chosen = [p.strip() for p in text.split(",") if p.strip()]
        for prop in chosen:
            if prop not in _SELECTABLE:
                raise ODataError(
                    "RequestBroker--ParseUri",
                    f"Could not find a property named '{prop}' on type 'microsoft.graph.message'.",
                )
        return chosen

    @staticmethod
    def _shape(message: GraphMessage, select: list[str] | None) -> dict[str, Any]:
        full = message.resource()
        if select is None:
            full.pop("internetMessageHeaders")
            return full
        shaped = {"@odata.etag": full["@odata.etag"], "id": full["id"]}
        for prop in select:
            if prop in full:
                shaped[prop] = full[prop]
        return shaped

    def _list(self, request: web.Request, mailbox: GraphMailbox, app: GraphApp) -> web.Response:
        query = request.query
        for option in query:
            if option.startswith("$") and option not in {
                "$top", "$skip", "$select", "$filter", "$orderby", "$count",
            }:  # fmt: skip
                if option in {"$search", "$expand", "$skiptoken", "$deltatoken"}:
                    raise _GraphError(501, "NotImplemented", f"{option} is not simulated.")
                raise ODataError("BadRequest", f"Query option '{option}' is not supported.")
        top = DEFAULT_PAGE
        if "$top" in query:
            try:
                top = int(query["$top"])
            except ValueError as exc:
                raise ODataError("BadRequest", f"Invalid $top value '{query['$top']}'.") from exc
            if not 1 <= top <= MAX_PAGE:
                raise ODataError(
                    "ErrorInvalidParameter", f"The $top value must be between 1 and {MAX_PAGE}."
                )
        try:
            skip = int(query.get("$skip", "0") or 0)
        except ValueError as exc:
            raise ODataError("BadRequest", f"Invalid $skip value '{query['$skip']}'.") from exc
        select = self._select(request)
        clauses = parse_filter(query["$filter"]) if "$filter" in query else []
        orderby = parse_orderby(query["$orderby"]) if "$orderby" in query else []
        check_orderby(clauses, orderby)
        with self._lock:
            folder = None
            if "folder" in request.match_info:
                folder = self._folder_or_404(mailbox, request.match_info["folder"])
            found = [
                m
                for m in mailbox.messages.values()
                if (folder is None or m.parent_folder_id == folder.id)
                and all(c.test(m.value, m.extended.get) for c in clauses)
            ]
        found.sort(key=lambda m: m.received, reverse=True)
        for prop, descending in reversed(orderby):
            found.sort(key=functools.partial(_sort_key, prop), reverse=descending)
        page = found[skip : skip + top]
        where = (
            f"mailFolders('{request.match_info['folder']}')/messages"
            if folder is not None
            else "messages"
        )
        shape = f"({','.join(select)})" if select else ""
        result: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#users('{mailbox.address}')/"
            f"{where}{shape}",
        }
        if query.get("$count", "").lower() == "true":
            result["@odata.count"] = len(found)
        result["value"] = [self._shape(m, select) for m in page]
        if skip + top < len(found):
            params = [(k, v) for k, v in query.items() if k != "$skip"]
            params.append(("$skip", str(skip + top)))
            result["@odata.nextLink"] = (
                f"{self.url}{request.path}?{urlencode(params, quote_via=quote, safe=chr(36))}"
            )
        return web.json_response(result)

    def _get_message(
        self, request: web.Request, mailbox: GraphMailbox, app: GraphApp
    ) -> web.Response:
        select = self._select(request)
        with self._lock:
            message = self._message_or_404(mailbox, request.match_info["mid"])
            if "folder" in request.match_info:
                folder = self._folder_or_404(mailbox, request.match_info["folder"])
                if message.parent_folder_id != folder.id:
                    raise _GraphError(
                        404, "ErrorItemNotFound", "The specified object was not found in the store."
                    )
            shaped = self._shape(message, select)
        shaped["@odata.context"] = (
            f"{self.graph_url}/$metadata#users('{mailbox.address}')/messages/$entity"
        )
        return web.json_response(shaped)

    def _relocate(
        self, mailbox: GraphMailbox, message: GraphMessage, folder: GraphFolder
    ) -> GraphMessage:
        del mailbox.messages[message.id]
        message.id = _graph_id()  # ids change when an item moves (message resource)
        message.parent_folder_id = folder.id
        mailbox.messages[message.id] = message
        return message

    def _delete(self, request: web.Request, mailbox: GraphMailbox, app: GraphApp) -> web.Response:
        with self._lock:
            message = self._message_or_404(mailbox, request.match_info["mid"])
            deleted = mailbox.folder("deleteditems")
            assert deleted is not None
            if message.parent_folder_id == deleted.id:
                del mailbox.messages[message.id]  # on to Recoverable Items: out of sight
            else:
                self._relocate(mailbox, message, deleted)
        return web.Response(status=204)

    def _permanent_delete(
        self, request: web.Request, mailbox: GraphMailbox, app: GraphApp
    ) -> web.Response:
        if self.cloud != "global":
            # "message: permanentDelete": available in the global service only (its table of
            # national cloud deployments). The refusal is not documented: this is Graph's
            # answer for a segment a deployment lacks (see the module docstring).
            raise _GraphError(
                400, "BadRequest", "Resource not found for the segment 'permanentDelete'."
            )
        with self._lock:
            message = self._message_or_404(mailbox, request.match_info["mid"])
            del mailbox.messages[message.id]
        return web.Response(status=204)

    def _move(self, request: web.Request, mailbox: GraphMailbox, app: GraphApp) -> web.Response:
        raw: bytes = request[RAW_BODY]
        try:
            payload = json.loads(raw or b"null")
        except ValueError as exc:
            raise _GraphError(400, "BadRequest", _UNREADABLE) from exc
        destination = payload.get("destinationId") if isinstance(payload, dict) else None
        if not isinstance(destination, str) or not destination:
            raise _GraphError(
                400, "ErrorInvalidParameter", "The value of the parameter 'DestinationId' is empty."
            )
        with self._lock:
            message = self._message_or_404(mailbox, request.match_info["mid"])
            folder = self._folder_or_404(mailbox, destination)
            moved = self._relocate(mailbox, message, folder)
            shaped = self._shape(moved, None)
        shaped["@odata.context"] = (
            f"{self.graph_url}/$metadata#users('{mailbox.address}')/messages/$entity"
        )
        return web.json_response(shaped, status=201)


def _sort_key(prop: str, message: GraphMessage) -> tuple[bool, Any]:
    value = message.value(prop)
    if value is None:
        zero = {"string": "", "bool": False, "datetime": datetime.min.replace(tzinfo=UTC)}
        return (False, zero[FILTERABLE[prop]])
    return (True, value)


def self_signed_certificate(common_name: str = "mailbox-exporter") -> tuple[bytes, bytes]:
    """A fresh RSA key and self-signed certificate, as (private key PEM, certificate PEM).

    Register the certificate with `GraphSimulator.add_app`; sign client assertions with
    the key.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def thumbprint_headers(certificate: x509.Certificate) -> dict[str, str]:
    """``x5t`` and ``x5t#S256`` header values for a certificate (for building assertions)."""
    return {
        "x5t": _b64url(certificate.fingerprint(hashes.SHA1())),
        "x5t#S256": _b64url(certificate.fingerprint(hashes.SHA256())),
    }

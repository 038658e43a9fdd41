"""A local Exchange Web Services endpoint (Exchange Server 2016/2019/Subscription Edition), for
tests; SOAP over HTTP at ``/EWS/Exchange.asmx``, and an Entra-like token endpoint for hybrid
OAuth.

Each behaviour names the published reference it was written from: the Exchange Server
protocol documents MS-OXWSCORE (items: CreateItem, GetItem, DeleteItem), MS-OXWSSRCH
(FindItem and restrictions), MS-OXWSFOLD (GetFolder), MS-OXWSMSG (messages,
MessageDisposition), MS-OXWSCDATA (ResponseCodeType, DistinguishedFolderIdNameType), and
the EWS reference on Microsoft Learn (learn.microsoft.com/exchange/client-developer/
web-service-reference/...: "ResponseCode", "FindItem operation", "GetItem operation (email
message)", "DeleteItem operation", "CreateItem operation (email message)", "GetFolder
operation", "ExchangeImpersonation", "EWS throttling in Exchange").

Operations (``POST /EWS/Exchange.asmx``, ``text/xml``; the operation is the first child of
``soap:Body``; each answer carries ``ServerVersionInfo`` in its header and one
``<Operation>ResponseMessage`` per requested id, each with ``ResponseClass`` and
``ResponseCode``, and ``MessageText`` on errors):

- ``GetFolder`` of ``DistinguishedFolderId`` inbox, junkemail, sentitems, deleteditems,
  drafts: ``Folder`` with ``FolderId``, ``DisplayName``, ``TotalCount``,
  ``ChildFolderCount``, ``UnreadCount``. Unknown name: ``ErrorInvalidRequest`` ("GetFolder
  operation": an invalid distinguished id fails schema validation; here a plain error).
- ``CreateItem`` of a ``Message`` with ``MimeContent`` (base64), ``MessageDisposition``
  ``SendOnly``, ``SendAndSaveCopy`` (a copy in ``SavedItemFolderId``, default Sent Items) or
  ``SaveOnly`` (Drafts) (MS-OXWSMSG 3.1.4.1 / "CreateItem operation (email message)").
  Recipients are read from To, Cc and Bcc of the MIME. Hosted recipients get the message
  in their Inbox after ``delivery_delay`` (Junk Email by ``junk_rule`` or ``file_into_junk``);
  others are relayed over SMTP to ``relay`` (with ``relay_auth`` if given), and a relay
  refusal puts a non-delivery report (``REPORT.IPM.Note.NDR``, ``multipart/report`` quoting
  the original header, as Exchange's NDRs do) into the sender's Inbox.
- ``FindItem`` (``Traversal="Shallow"``) with ``IndexedPageItemView`` (MaxEntriesReturned,
  Offset, BasePoint), ``Restriction`` and ``SortOrder`` (MS-OXWSSRCH 2.2.4): ``And``, ``Or``,
  ``Not``, ``Contains`` (``ContainmentMode`` FullString / Prefixed / Substring /
  PrefixOnWords / ExactPhrase, ``ContainmentComparison`` Exact / IgnoreCase, ...),
  ``IsEqualTo``, ``IsNotEqualTo``, ``IsGreaterThan(OrEqualTo)``, ``IsLessThan(OrEqualTo)``
  (strings compared without case: the reference does not say how, and a client that deletes
  what a search finds must withstand the looser reading), ``Exists``, over ``FieldURI``
  item:Subject, item:ItemClass, item:DateTimeReceived, message:InternetMessageId, and
  ``ExtendedFieldURI`` of the ``InternetHeaders`` property set. Other paths:
  ``ErrorUnsupportedPathForQuery``. ``RootFolder`` answers ``TotalItemsInView``,
  ``IncludesLastItemInRange``, ``IndexedPagingOffset``.
- ``GetItem`` with ``BaseShape`` IdOnly/Default/AllProperties, ``AdditionalProperties``
  (item:InternetMessageHeaders gives ``InternetMessageHeader HeaderName=...``) and
  ``IncludeMimeContent``; an unknown id: ``ErrorItemNotFound`` "The specified object was not
  found in the store." for that id.
- ``DeleteItem`` with ``DeleteType`` HardDelete (gone), SoftDelete (gone from the folder) or
  MoveToDeletedItems; unknown ids: ``ErrorItemNotFound`` per id.

Errors and faults (``ResponseCode``, "EWS throttling in Exchange"):
- ``busy(times, back_off_ms)``: HTTP 500 SOAP fault ``a:ErrorServerBusy`` "The server cannot
  service this request right now. Try again later." with ``BackOffMilliseconds`` in
  ``MessageXml``, as published in mguessan/davmail#161.
- ``set_mailbox_state(store_unavailable=True)``: ``ErrorMailboxStoreUnavailable`` on every
  operation on that mailbox; ``fail_operation(op, code, text)`` answers one operation's
  response message with any ResponseCode (``ErrorAccessDenied``,
  ``ErrorQuotaExceeded``, ...).
- ``unavailable(times)``: HTTP 503 with no SOAP body (IIS or a load balancer in front of a
  stopped Client Access service); base ``fail``/``hang``/``slow`` work per path.
- 401 with ``WWW-Authenticate: Negotiate``, ``NTLM`` and ``Basic realm=...`` for missing or
  wrong credentials, a disabled account, or an expired or unknown bearer token.

Authentication:
- Basic (RFC 7617) against the accounts added with ``add_account``.
- NTLM (MS-NLMP over HTTP, "[MS-NTHT]"): the server side is pyspnego's NTLM acceptor with a
  Heimdal-format user file (``DOMAIN:USER:PASSWORD``) named by ``NTLM_USER_FILE`` (set by
  this simulator for its process). NTLM authenticates the TCP connection: a CHALLENGE is
  tied to the connection that asked for it, the AUTHENTICATE must come on the same
  connection, and later requests on it need no header.
- OAuth bearer tokens from ``/{tenant}/oauth2/v2.0/token`` (client credentials with a
  secret; scope must be ``{url}/.default``); an app acts for a mailbox only through
  ``ExchangeImpersonation`` with ``PrimarySmtpAddress`` and the ApplicationImpersonation
  role for it ("Configure impersonation"), else ``ErrorImpersonateUserDenied``; without the
  header, ``ErrorAccessDenied``. These, and ``ErrorNonExistentMailbox`` for an impersonated
  address without a mailbox, are SOAP faults (HTTP 500), as published answers show.
  Basic/NTLM accounts reach their own mailbox only.

Modes:
- ``strict`` (default True): custom x-headers are NOT searchable properties (Exchange team
  blog, "Named Properties, Round 2": none promoted unless a client mapped them), so an
  ``ExtendedFieldURI`` restriction on ``X-...`` matches nothing. False: every x-header is
  (the loose reading of "Provision x-headers by using EWS in Exchange").
- ``file_into_junk(address)``: deliveries to that mailbox go to Junk Email.

- ``tls`` (an ``ssl.SSLContext``, the certificate's DER in ``certificate``): HTTPS; with
  ``extended_protection``, NTLM must carry ``tls-server-end-point`` channel bindings (RFC
  5929) of that certificate ("Configure Windows Extended Protection in Exchange Server").

NOT simulated: Autodiscover, Kerberos/Negotiate (NTLM only), EWS schema
validation beyond what is read, notifications (MS-OXWSNTIF), SyncFolderItems, paging by
``FractionalPageItemView``, attachments, calendar items, throttling budgets (faults are set
by the test). Error texts not quoted from a reference are plausible, not verbatim.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import functools
import os
import re
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import spnego
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from multidict import CIMultiDict
from spnego.channel_bindings import GssChannelBindings

from ._base import (
    RAW_BODY,
    Fault,
    PendingDelivery,
    SimulatorBase,
    addresses,
    parse_rfc822,
    quick_parse,
)

__all__ = ["EwsAccount", "EwsApp", "EwsItem", "EwsMailbox", "EwsSimulator"]

EWS_PATH = "/EWS/Exchange.asmx"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGES = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS = "http://schemas.microsoft.com/exchange/services/2006/errors"
FOLDERS = {
    "inbox": "Inbox",
    "junkemail": "Junk Email",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
}
NOT_FOUND = "The specified object was not found in the store."
BUSY = "The server cannot service this request right now. Try again later."
STORE_UNAVAILABLE = "The mailbox database is temporarily unavailable."
"""Exchange 2016's words for a mailbox database that is down (jamesiarmes/php-ews#402)."""
ACCESS_DENIED = "The account does not have permission to impersonate the requested user."
NDR_CLASS = "REPORT.IPM.Note.NDR"
_USER_FILE = Path(tempfile.gettempdir(), f"ews-simulator-ntlm-{os.getpid()}-{secrets.token_hex(4)}")
"""The NTLM accounts of every simulator of this process (see ``_write_user_file``)."""
_USERS: dict[int, list[str]] = {}
_USERS_LOCK = threading.Lock()
SCHEMA = "The request failed schema validation."
NTLM_TYPE = slice(8, 12)
"""Where an NTLM message says which it is (MS-NLMP 2.2.1: MessageType after the signature)."""
NTLM_NEGOTIATE = b"\x01\x00\x00\x00"


@dataclass
class EwsItem:
    """A message in a folder."""

    id: str
    change_key: str
    folder: str
    raw: bytes
    subject: str
    message_id: str
    item_class: str
    headers: list[tuple[str, str]]
    received: datetime
    is_read: bool = False


@dataclass
class EwsMailbox:
    address: str
    items: dict[str, EwsItem] = field(default_factory=dict)
    store_unavailable: bool = False
    deferred: bool = False
    junk: bool = False


@dataclass
class EwsAccount:
    """An Active Directory account that signs in with Basic or NTLM."""

    domain: str
    user: str
    password: str
    mailbox: str
    disabled: bool = False


@dataclass
class EwsApp:
    client_id: str
    secret: str
    impersonates: set[str]


class _SoapError(Exception):
    """A response message error (HTTP 200) for the whole request."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element: Element, name: str) -> Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: Element | None, name: str) -> list[Element]:
    return [] if element is None else [c for c in element if _local(c.tag) == name]


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_login(login: str) -> tuple[str, str]:
    domain, sep, user = login.partition("\\")
    return (domain, user) if sep else ("", login)


class EwsSimulator(SimulatorBase):
    """EWS on 127.0.0.1; see the module docstring."""

    name = "ews-simulator"

    def __init__(
        self,
        *,
        domains: Iterable[str] = ("exchange.example",),
        delivery_delay: float = 0.1,
        relay: tuple[str, int] | None = None,
        relay_auth: tuple[str, str] | None = None,
        junk_rule: Callable[[EmailMessage], bool] | None = None,
        strict: bool = True,
        tenant: str = "00000000-0000-0000-0000-0000000000ee",
        tls: ssl.SSLContext | None = None,
        certificate: bytes | None = None,
        extended_protection: bool = False,
    ) -> None:
        super().__init__(
            domains=tuple(domains), delivery_delay=delivery_delay, relay=relay, junk_rule=junk_rule
        )
        self.relay_auth = relay_auth
        self.strict = strict
        self.tenant = tenant
        self._mailboxes: dict[str, EwsMailbox] = {}
        self._accounts: list[EwsAccount] = []
        self._apps: dict[str, EwsApp] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._ntlm: dict[tuple[Any, ...], Any] = {}
        """Per connection: a pyspnego acceptor mid-handshake, or the account it signed in."""
        self._signed_in: dict[tuple[Any, ...], EwsAccount] = {}
        self._busy: list[float] = []
        self._unavailable = 0
        self._failing: dict[str, tuple[str, str, int | None]] = {}
        self._write_user_file()
        self.tls = tls
        """Serve HTTPS with this context (the certificate's DER in ``certificate``)."""
        self.certificate = certificate
        self.extended_protection = extended_protection
        """NTLM over TLS must carry channel bindings of the server's certificate
        (``tls-server-end-point``, RFC 5929), as with Extended Protection for Authentication
        on the EWS virtual directory ("Configure Windows Extended Protection in Exchange
        Server"; on by default from Exchange Server 2019 CU14). pyspnego's acceptor refuses an
        AUTHENTICATE without them or with others (it takes all-zero bindings, which a client
        sends when it has none to give)."""

    # ------------------------------------------------------------ URLs

    def _server_tls(self) -> ssl.SSLContext | None:
        return self.tls

    @property
    def url(self) -> str:
        plain = super().url
        return plain.replace("http://", "https://", 1) if self.tls is not None else plain

    @property
    def ews_url(self) -> str:
        return self.url + EWS_PATH

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    @property
    def scope(self) -> str:
        return f"{self.url}/.default"

    # ------------------------------------------------------------ test helpers

    def add_mailbox(self, address: str) -> EwsMailbox:
        with self._lock:
            return self._mailboxes.setdefault(address.lower(), EwsMailbox(address.lower()))

    def mailbox(self, address: str) -> EwsMailbox:
        return self._mailboxes[address.lower()]

    def add_account(self, login: str, password: str, mailbox: str) -> EwsAccount:
        """An account (``DOMAIN\\user`` or ``user@domain``) whose mailbox is ``mailbox``."""
        domain, user = _split_login(login)
        account = EwsAccount(domain, user, password, mailbox.lower())
        with self._lock:
            self._accounts.append(account)
        self.add_mailbox(mailbox)
        self._write_user_file()
        return account

    def add_app(self, client_id: str, secret: str, impersonates: Iterable[str]) -> EwsApp:
        app = EwsApp(client_id, secret, {a.lower() for a in impersonates})
        with self._lock:
            self._apps[client_id] = app
        return app

    def _write_user_file(self) -> None:
        """The NTLM acceptor's credentials (Heimdal format, ``DOMAIN:USER:PASSWORD``):
        pyspnego reads them from the one file ``NTLM_USER_FILE`` names, so every simulator of
        the process writes its accounts into one file (logins must differ between them)."""
        with _USERS_LOCK:
            _USERS[id(self)] = [f"{a.domain}:{a.user}:{a.password}" for a in self._accounts]
            lines = [line for listed in _USERS.values() for line in listed]
            _USER_FILE.write_text("\n".join(lines) + "\n")
            os.environ["NTLM_USER_FILE"] = str(_USER_FILE)

    def _write_user_file_without_self(self) -> None:
        with _USERS_LOCK:
            _USERS.pop(id(self), None)
            lines = [line for listed in _USERS.values() for line in listed]
            _USER_FILE.write_text("\n".join(lines) + "\n")

    def busy(self, times: int = 1, back_off_ms: int = 30_000) -> None:
        """The next ``times`` requests get the ErrorServerBusy SOAP fault."""
        with self._lock:
            self._busy.extend([back_off_ms / 1000] * times)

    def unavailable(self, times: int = 1) -> None:
        """The next ``times`` requests get HTTP 503 with no body."""
        with self._lock:
            self._unavailable += times

    def fail_operation(
        self, operation: str, code: str, text: str, times: int | None = None
    ) -> None:
        """``operation``'s response messages answer ``code`` (HTTP 200, ResponseClass Error)."""
        with self._lock:
            self._failing[operation] = (code, text, times)

    def clear_faults(self) -> None:
        """Remove every fault (busy, unavailable, failing operations, and the base's)."""
        with self._lock:
            self._busy.clear()
            self._unavailable = 0
            self._failing.clear()
        super().clear_faults()

    def set_mailbox_state(
        self,
        address: str,
        *,
        store_unavailable: bool | None = None,
        deferred: bool | None = None,
    ) -> None:
        box = self.mailbox(address)
        with self._lock:
            if store_unavailable is not None:
                box.store_unavailable = store_unavailable
            if deferred is not None:
                box.deferred = deferred

    def file_into_junk(self, address: str, on: bool = True) -> None:
        with self._lock:
            self.mailbox(address).junk = on

    def put(
        self,
        address: str,
        raw: bytes,
        folder: str = "inbox",
        *,
        received: datetime | None = None,
        item_class: str | None = None,
    ) -> EwsItem:
        """Store a message directly (no delivery)."""
        parsed = quick_parse(raw)
        kind = item_class or self._item_class(raw)
        item = EwsItem(
            id=base64.b64encode(uuid.uuid4().bytes + secrets.token_bytes(8)).decode(),
            change_key=base64.b64encode(secrets.token_bytes(12)).decode(),
            folder=folder,
            raw=raw,
            subject=parsed.get("Subject") or "",
            message_id=parsed.get("Message-ID") or "",
            item_class=kind,
            headers=parsed.headers,
            received=received or datetime.now(UTC),
        )
        with self._lock:
            self.mailbox(address).items[item.id] = item
        return item

    def items(self, address: str, folder: str | None = None) -> list[EwsItem]:
        with self._lock:
            return [
                i
                for i in self.mailbox(address).items.values()
                if folder is None or i.folder == folder
            ]

    @staticmethod
    def _item_class(raw: bytes) -> str:
        """A delivery status notification becomes a report item (MS-OXOMSG: ``REPORT.*``
        message classes), anything else a note."""
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        if b"multipart/report" in head and b"delivery-status" in head:
            return NDR_CLASS
        return "IPM.Note"

    # ------------------------------------------------------------ mail flow

    def _deliver_local(self, address: str, raw: bytes) -> None:
        box = self.mailbox(address)
        junk = box.junk or (self.junk_rule is not None and self.junk_rule(parse_rfc822(raw)))
        self.put(address, raw, "junkemail" if junk else "inbox")

    def _mailbox_deferred(self, address: str) -> bool:
        box = self._mailboxes.get(address.lower())
        return box is not None and box.deferred

    def _smtp_accepts(self, address: str) -> bool:
        return address.lower() in self._mailboxes

    def _smtp_received(self, sender: str, recipients: list[str], raw: bytes) -> None:
        stamped = self._received_line("inbound") + raw
        for rcpt in (r.lower() for r in recipients):
            self._queue_local(rcpt, stamped, sender)

    def _queue_local(self, rcpt: str, raw: bytes, sender: str, delay: float = 0.0) -> None:
        self._enqueue(
            PendingDelivery(
                due=time.monotonic() + delay,
                mailbox=rcpt,
                raw=raw,
                sender=sender,
                recipients=[rcpt],
                deliver=functools.partial(self._deliver_local, rcpt, raw),
            )
        )

    def _received_line(self, via: str) -> bytes:
        stamp = email.utils.format_datetime(datetime.now(UTC))
        return f"Received: from {via} by {self.name}.invalid; {stamp}\r\n".encode()

    def _relay_refused(self, item: PendingDelivery, error: str) -> None:
        """Exchange puts a non-delivery report in the sender's Inbox."""
        if item.sender.lower() in self._mailboxes:
            self._queue_local(item.sender.lower(), self._ndr(item, error), "")

    def _ndr(self, item: PendingDelivery, error: str) -> bytes:
        """A non-delivery report quoting the original header (RFC 3464, as Exchange's)."""
        head = item.raw.split(b"\r\n\r\n", 1)[0]
        boundary = "ndr-" + secrets.token_hex(6)
        rcpt = ", ".join(item.recipients)
        found = re.search(r"\b([45]\.\d{1,3}\.\d{1,3})\b", error)
        status = found.group(1) if found else "5.0.0"
        text = (
            f"From: postmaster@{self.domains[0]}\r\nTo: {item.sender}\r\n"
            f"Subject: Undeliverable: probe\r\nDate: "
            f"{email.utils.format_datetime(datetime.now(UTC))}\r\n"
            f"Message-ID: <ndr-{secrets.token_hex(8)}@{self.domains[0]}>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
            f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
            f"Delivery has failed to these recipients: {rcpt}\r\n\r\n--{boundary}\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {self.name}.invalid\r\n\r\n"
            f"Final-Recipient: rfc822; {item.recipients[0]}\r\nAction: failed\r\n"
            f"Status: {status}\r\nDiagnostic-Code: smtp; {error[:200]}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        return text + head + f"\r\n\r\n--{boundary}--\r\n".encode()

    # ------------------------------------------------------------ HTTP

    def _routes(self, app: web.Application) -> None:
        app.router.add_post(EWS_PATH, self._serve)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)

    def _fault_response(self, fault: Fault, request: web.Request) -> web.Response:
        body = fault.body if isinstance(fault.body, str) else ""
        return web.Response(
            text=body, status=fault.status, headers=fault.headers, content_type="text/xml"
        )

    async def _token(self, request: web.Request) -> web.Response:
        """Client credentials (Microsoft identity platform, "client credentials flow")."""
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        app = self._apps.get(form.get("client_id", ""))
        if request.match_info["tenant"] != self.tenant:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."},
                status=400,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if app is None or not secrets.compare_digest(form.get("client_secret", ""), app.secret):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        if form.get("scope") != self.scope:
            return web.json_response(
                {"error": "invalid_scope", "error_description": "AADSTS70011: invalid scope."},
                status=400,
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (app.client_id, time.time() + 3599)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @staticmethod
    def _connection(request: web.Request) -> tuple[Any, ...]:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return tuple(peer or ("?",))

    def _challenge(self, token: bytes | None = None) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict()
        if token is not None:
            headers.add("WWW-Authenticate", "NTLM " + base64.b64encode(token).decode())
        else:
            headers.add("WWW-Authenticate", "Negotiate")
            headers.add("WWW-Authenticate", "NTLM")
            headers.add("WWW-Authenticate", f'Basic realm="{self.name}"')
        return web.Response(status=401, headers=headers)

    def _authenticate(self, request: web.Request) -> EwsAccount | EwsApp | web.Response:
        """Who sends the request, or the 401 to answer (MS-NTHT for NTLM over HTTP)."""
        conn = self._connection(request)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                login, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return self._challenge()
            account = self._account(*_split_login(login))
            if account is None or not secrets.compare_digest(account.password, password):
                return self._challenge()
            return account if not account.disabled else self._challenge()
        if scheme == "bearer":
            with self._lock:
                found = self._tokens.get(value)
            if found is None or found[1] < time.time():
                return self._challenge()
            return self._apps[found[0]]
        if scheme == "ntlm":
            try:
                token = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return self._challenge()
            with self._lock:
                context = self._ntlm.get(conn)
                if context is None or token[NTLM_TYPE] == NTLM_NEGOTIATE:
                    context = spnego.server(protocol="ntlm")
                    self._ntlm[conn] = context
                    self._signed_in.pop(conn, None)
            bindings = None
            if self.extended_protection and self.certificate is not None:
                bindings = _tls_server_end_point(self.certificate)
            try:
                answer = context.step(token, channel_bindings=bindings)
            except Exception:  # a wrong password, other bindings, a malformed message: refused
                self._ntlm.pop(conn, None)
                return self._challenge()
            if not context.complete:
                return self._challenge(answer)
            self._ntlm.pop(conn, None)
            account = self._account(*_split_login(str(context.client_principal or "")))
            if account is None or account.disabled:
                return self._challenge()
            self._signed_in[conn] = account
            return account
        signed_in = self._signed_in.get(conn)
        if signed_in is not None:
            return signed_in
        return self._challenge()

    def _account(self, domain: str, user: str) -> EwsAccount | None:
        with self._lock:
            for account in self._accounts:
                if account.user.lower() == user.lower() and (
                    not domain or account.domain.lower() == domain.lower()
                ):
                    return account
        return None

    def _envelope(self, body: str) -> str:
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}"><s:Header>'
            f'<h:ServerVersionInfo xmlns:h="{TYPES}" MajorVersion="15" MinorVersion="2" '
            'MajorBuildNumber="1544" MinorBuildNumber="4" Version="V2017_07_11"/>'
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        )

    def _soap(self, body: str, status: int = 200) -> web.Response:
        return web.Response(
            text=self._envelope(body),
            status=status,
            content_type="text/xml",
            charset="utf-8",
            headers={"request-id": str(uuid.uuid4())},
        )

    def _soap_fault(self, code: str, text: str, back_off: float | None = None) -> web.Response:
        """A SOAP fault (HTTP 500) as Exchange sends ErrorServerBusy (davmail#161)."""
        extra = ""
        if back_off is not None:
            extra = (
                f'<t:MessageXml xmlns:t="{TYPES}"><t:Value Name="BackOffMilliseconds">'
                f"{int(back_off * 1000)}</t:Value></t:MessageXml>"
            )
        return self._soap(
            f'<s:Fault><faultcode xmlns:a="{TYPES}">a:{code}</faultcode>'
            f'<faultstring xml:lang="en-US">{escape(text)}</faultstring><detail>'
            f'<e:ResponseCode xmlns:e="{ERRORS}">{code}</e:ResponseCode>'
            f'<e:Message xmlns:e="{ERRORS}">{escape(text)}</e:Message>{extra}</detail></s:Fault>',
            status=500,
        )

    @staticmethod
    def _response(operation: str, messages: list[str]) -> str:
        return (
            f'<m:{operation}Response xmlns:m="{MESSAGES}" xmlns:t="{TYPES}">'
            f"<m:ResponseMessages>{''.join(messages)}</m:ResponseMessages>"
            f"</m:{operation}Response>"
        )

    @staticmethod
    def _ok(operation: str, inner: str = "") -> str:
        return (
            f'<m:{operation}ResponseMessage ResponseClass="Success">'
            f"<m:ResponseCode>NoError</m:ResponseCode>{inner}</m:{operation}ResponseMessage>"
        )

    @staticmethod
    def _error(operation: str, code: str, text: str) -> str:
        return (
            f'<m:{operation}ResponseMessage ResponseClass="Error">'
            f"<m:MessageText>{escape(text)}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
            f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{operation}ResponseMessage>"
        )

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            if self._unavailable:
                self._unavailable -= 1
                return web.Response(status=503, text="Service Unavailable")
        who = self._authenticate(request)
        if isinstance(who, web.Response):
            return who
        with self._lock:
            back_off = self._busy.pop(0) if self._busy else None
        if back_off is not None:
            return self._soap_fault("ErrorServerBusy", BUSY, back_off)
        delay = self._latency_for(request.path)
        if delay:
            await asyncio.sleep(delay)
        try:
            root = fromstring(request[RAW_BODY], forbid_dtd=True)
        except (ParseError, DefusedXmlException, ValueError):
            return self._soap_fault(
                "ErrorSchemaValidation", "The request failed schema validation."
            )
        header = _child(root, "Header")
        body = _child(root, "Body")
        if body is None or not len(body):
            return self._soap_fault(
                "ErrorSchemaValidation", "The request failed schema validation."
            )
        operation_element = body[0]
        operation = _local(operation_element.tag)
        handler = {
            "GetFolder": self._get_folder,
            "CreateItem": self._create_item,
            "FindItem": self._find_item,
            "GetItem": self._get_item,
            "DeleteItem": self._delete_item,
        }.get(operation)
        if handler is None:
            return self._soap_fault("ErrorInvalidRequest", f"{operation} is not simulated.")
        try:
            box = self._mailbox_for(who, header)
        except _SoapError as exc:
            # A refused ExchangeImpersonation header fails the request, not an operation: a
            # SOAP fault (OfficeDev/ews-managed-api#223, ErrorImpersonateUserDenied;
            # ecederstrand/exchangelib#968, ErrorNonExistentMailbox).
            return self._soap_fault(exc.code, exc.text)
        try:
            with self._lock:
                failing = self._failing.get(operation)
                if failing is not None:
                    code, text, times = failing
                    if times is not None:
                        if times <= 1:
                            del self._failing[operation]
                        else:
                            self._failing[operation] = (code, text, times - 1)
                    raise _SoapError(code, text)
            if box.store_unavailable:
                raise _SoapError("ErrorMailboxStoreUnavailable", STORE_UNAVAILABLE)
            messages = handler(operation_element, box)
        except _SoapError as exc:
            messages = [self._error(operation, exc.code, exc.text)]
        return self._soap(self._response(operation, messages))

    def _mailbox_for(self, who: EwsAccount | EwsApp, header: Element | None) -> EwsMailbox:
        """The mailbox acted on: the account's own, or the impersonated one ("Configure
        impersonation"; "ExchangeImpersonation")."""
        target = ""
        if header is not None:
            for element in header.iter():
                if _local(element.tag) == "PrimarySmtpAddress":
                    target = "".join(element.itertext()).strip().lower()
        if target and target not in self._mailboxes:
            raise _SoapError(
                "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
            )
        if isinstance(who, EwsApp):
            if not target:
                raise _SoapError("ErrorAccessDenied", "An application must impersonate a mailbox.")
            if target not in who.impersonates:
                raise _SoapError("ErrorImpersonateUserDenied", ACCESS_DENIED)
        elif target and target != who.mailbox:
            raise _SoapError("ErrorImpersonateUserDenied", ACCESS_DENIED)
        address = target or (who.mailbox if isinstance(who, EwsAccount) else "")
        box = self._mailboxes.get(address)
        if box is None:
            raise _SoapError(
                "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
            )
        return box

    # ------------------------------------------------------------ operations

    @staticmethod
    def _folder_of(element: Element | None) -> str:
        for found in element.iter() if element is not None else ():
            if _local(found.tag) == "DistinguishedFolderId":
                name = found.get("Id", "")
                if name in FOLDERS:
                    return name
                raise _SoapError("ErrorInvalidRequest", f"Unknown folder {name!r}.")
        raise _SoapError("ErrorInvalidRequest", "A folder id is required.")

    def _get_folder(self, operation: Element, box: EwsMailbox) -> list[str]:
        messages = []
        ids = _child(operation, "FolderIds")
        for folder_id in _children(ids, "DistinguishedFolderId"):
            name = folder_id.get("Id", "")
            if name not in FOLDERS:
                messages.append(self._error("GetFolder", "ErrorFolderNotFound", NOT_FOUND))
                continue
            with self._lock:
                held = [i for i in box.items.values() if i.folder == name]
            folder = (
                f'<t:Folder><t:FolderId Id="{name}-{box.address}" ChangeKey="AQAAAA=="/>'
                f"<t:DisplayName>{FOLDERS[name]}</t:DisplayName>"
                f"<t:TotalCount>{len(held)}</t:TotalCount>"
                "<t:ChildFolderCount>0</t:ChildFolderCount>"
                f"<t:UnreadCount>{sum(not i.is_read for i in held)}</t:UnreadCount></t:Folder>"
            )
            messages.append(self._ok("GetFolder", f"<m:Folders>{folder}</m:Folders>"))
        if not messages:
            raise _SoapError("ErrorInvalidRequest", "A folder id is required.")
        return messages

    def _create_item(self, operation: Element, box: EwsMailbox) -> list[str]:
        disposition = operation.get("MessageDisposition", "")
        if disposition not in ("SendOnly", "SendAndSaveCopy", "SaveOnly"):
            raise _SoapError("ErrorInvalidRequest", "MessageDisposition is required for messages.")
        results = []
        for message in _children(_child(operation, "Items"), "Message"):
            mime = _child(message, "MimeContent")
            if mime is None:
                raise _SoapError("ErrorInvalidRequest", "Only MimeContent is simulated.")
            try:
                raw = base64.b64decode("".join(mime.itertext()), validate=True)
            except (binascii.Error, ValueError):
                raise _SoapError(
                    "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME."
                ) from None
            parsed = quick_parse(raw)
            if disposition == "SaveOnly":
                self.put(box.address, raw, "drafts")
                results.append(self._ok("CreateItem", "<m:Items/>"))
                continue
            if disposition == "SendAndSaveCopy":
                saved = _child(operation, "SavedItemFolderId")
                folder = self._folder_of(saved) if saved is not None else "sentitems"
                self.put(box.address, raw, folder).is_read = True
            recipients = addresses(
                parsed.get_all("To") + parsed.get_all("Cc") + parsed.get_all("Bcc")
            )
            if not recipients:
                raise _SoapError("ErrorInvalidRecipients", "At least one recipient isn't valid.")
            stamped = self._received_line(f"ews {box.address}") + _without_bcc(raw)
            for rcpt in recipients:
                if rcpt in self._mailboxes:
                    self._queue_local(rcpt, stamped, box.address, self.delivery_delay)
                else:
                    self._enqueue(
                        PendingDelivery(
                            due=time.monotonic() + self.delivery_delay,
                            mailbox=None,
                            raw=stamped,
                            sender=box.address,
                            recipients=[rcpt],
                        )
                    )
            results.append(self._ok("CreateItem", "<m:Items/>"))
        if not results:
            raise _SoapError("ErrorInvalidRequest", "No item to create.")
        return results

    def _value(self, item: EwsItem, path: Element) -> str | datetime | None:
        name = _local(path.tag)
        if name == "FieldURI":
            uri = path.get("FieldURI", "")
            if uri == "item:Subject":
                return item.subject
            if uri == "item:ItemClass":
                return item.item_class
            if uri == "item:DateTimeReceived":
                return item.received
            if uri == "message:InternetMessageId":
                return item.message_id
            raise _SoapError("ErrorUnsupportedPathForQuery", f"{uri} cannot be searched here.")
        if name == "ExtendedFieldURI" and path.get("DistinguishedPropertySetId") == (
            "InternetHeaders"
        ):
            if self.strict:
                return None  # "Named Properties, Round 2": not promoted
            wanted = path.get("PropertyName", "").lower()
            return next((v for n, v in item.headers if n.lower() == wanted), None)
        raise _SoapError("ErrorUnsupportedPathForQuery", "The property path is not supported.")

    def _matches(self, item: EwsItem, condition: Element) -> bool:
        kind = _local(condition.tag)
        if kind == "And":
            return all(self._matches(item, c) for c in condition)
        if kind == "Or":
            return any(self._matches(item, c) for c in condition)
        if kind == "Not":
            return not any(self._matches(item, c) for c in condition)
        path = condition[0] if len(condition) else None
        if path is None:
            raise _SoapError("ErrorInvalidRestriction", "A restriction needs a property.")
        value = self._value(item, path)
        if kind == "Exists":
            return value is not None
        constant = next(
            (e.get("Value", "") for e in condition.iter() if _local(e.tag) == "Constant"), None
        )
        if constant is None:
            raise _SoapError("ErrorInvalidRestriction", "A restriction needs a constant.")
        if value is None:
            return False
        if kind == "Contains":
            text, wanted = str(value), constant
            if "IgnoreCase" in condition.get("ContainmentComparison", "Exact"):
                text, wanted = text.lower(), wanted.lower()
            mode = condition.get("ContainmentMode", "FullString")
            if mode == "FullString":
                return text == wanted
            if mode == "Prefixed":
                return text.startswith(wanted)
            if mode == "PrefixOnWords":
                return any(word.startswith(wanted) for word in text.split())
            return wanted in text
        compared: Any = value
        other: Any = constant
        if isinstance(value, datetime):
            try:
                other = datetime.fromisoformat(constant.replace("Z", "+00:00"))
            except ValueError:
                raise _SoapError("ErrorInvalidValueForProperty", "Not a date.") from None
        comparisons: dict[str, Callable[[Any, Any], bool]] = {
            "IsEqualTo": lambda a, b: a == b,
            "IsNotEqualTo": lambda a, b: a != b,
            "IsGreaterThan": lambda a, b: a > b,
            "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
            "IsLessThan": lambda a, b: a < b,
            "IsLessThanOrEqualTo": lambda a, b: a <= b,
        }
        if kind not in comparisons:
            raise _SoapError("ErrorInvalidRestriction", f"{kind} is not simulated.")
        if isinstance(compared, datetime):
            compared = compared.replace(microsecond=0)
        else:
            # "IsEqualTo" and its kin do not say how strings compare: the looser reading,
            # which a client that deletes what it finds must withstand.
            compared, other = str(compared).casefold(), str(other).casefold()
        return comparisons[kind](compared, other)

    def _find_item(self, operation: Element, box: EwsMailbox) -> list[str]:
        folder = self._folder_of(_child(operation, "ParentFolderIds"))
        restriction = _child(operation, "Restriction")
        with self._lock:
            held = [i for i in box.items.values() if i.folder == folder]
        if restriction is not None and len(restriction):
            held = [i for i in held if self._matches(i, restriction[0])]
        held.sort(key=lambda i: i.received, reverse=True)
        view = _child(operation, "IndexedPageItemView")
        limit, offset = len(held), 0
        if view is not None:
            with contextlib.suppress(ValueError):
                limit = int(view.get("MaxEntriesReturned", limit))
                offset = int(view.get("Offset", 0))
        page = held[offset : offset + limit]
        items = "".join(self._shape(i, (), mime=False, found=True) for i in page)
        last = "true" if offset + len(page) >= len(held) else "false"
        root = (
            f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
            f'TotalItemsInView="{len(held)}" IncludesLastItemInRange="{last}">'
            f"<t:Items>{items}</t:Items></m:RootFolder>"
        )
        return [self._ok("FindItem", root)]

    def _shape(
        self, item: EwsItem, properties: Iterable[str], *, mime: bool, found: bool = False
    ) -> str:
        wanted = set(properties)
        inner = f"<t:ItemId Id={quoteattr(item.id)} ChangeKey={quoteattr(item.change_key)}/>"
        if mime:
            encoded = base64.b64encode(item.raw).decode()
            inner = f'<t:MimeContent CharacterSet="UTF-8">{encoded}</t:MimeContent>' + inner
        if found or "item:Subject" in wanted:
            inner += f"<t:Subject>{escape(item.subject)}</t:Subject>"
        if found or "item:ItemClass" in wanted:
            inner += f"<t:ItemClass>{escape(item.item_class)}</t:ItemClass>"
        if "item:InternetMessageHeaders" in wanted:
            headers = "".join(
                f"<t:InternetMessageHeader HeaderName={quoteattr(n)}>{escape(v)}"
                "</t:InternetMessageHeader>"
                for n, v in item.headers
            )
            inner += f"<t:InternetMessageHeaders>{headers}</t:InternetMessageHeaders>"
        if found:
            inner += f"<t:DateTimeReceived>{_instant(item.received)}</t:DateTimeReceived>"
        if found or "message:InternetMessageId" in wanted:
            inner += f"<t:InternetMessageId>{escape(item.message_id)}</t:InternetMessageId>"
        return f"<t:Message>{inner}</t:Message>"

    def _get_item(self, operation: Element, box: EwsMailbox) -> list[str]:
        shape = _child(operation, "ItemShape")
        mime = False
        properties: list[str] = []
        for element in shape.iter() if shape is not None else ():
            if _local(element.tag) == "IncludeMimeContent":
                mime = "".join(element.itertext()).strip() == "true"
            if _local(element.tag) == "FieldURI":
                properties.append(element.get("FieldURI", ""))
        messages = []
        for item_id in _children(_child(operation, "ItemIds"), "ItemId"):
            with self._lock:
                item = box.items.get(item_id.get("Id", ""))
            if item is None:
                messages.append(self._error("GetItem", "ErrorItemNotFound", NOT_FOUND))
                continue
            shaped = self._shape(item, properties, mime=mime)
            messages.append(self._ok("GetItem", f"<m:Items>{shaped}</m:Items>"))
        return messages

    def _delete_item(self, operation: Element, box: EwsMailbox) -> list[str]:
        kind = operation.get("DeleteType", "")
        if kind not in ("HardDelete", "SoftDelete", "MoveToDeletedItems"):
            raise _SoapError("ErrorInvalidRequest", "DeleteType is required.")
        messages = []
        for item_id in _children(_child(operation, "ItemIds"), "ItemId"):
            with self._lock:
                item = box.items.get(item_id.get("Id", ""))
                if item is None:
                    messages.append(self._error("DeleteItem", "ErrorItemNotFound", NOT_FOUND))
                    continue
                if kind == "MoveToDeletedItems":
                    item.folder = "deleteditems"
                else:
                    del box.items[item.id]
            messages.append(self._ok("DeleteItem"))
        return messages

    async def astart(self) -> None:
        await super().astart()
        self._write_user_file()

    async def aclose(self) -> None:
        """Stop serving; its accounts leave the NTLM user file until it serves again."""
        await super().aclose()
        self._write_user_file_without_self()


def _tls_server_end_point(certificate: bytes) -> GssChannelBindings:
    """RFC 5929 4.1: the certificate's hash by its signature's algorithm (SHA-256 for MD5 and
    SHA-1)."""
    algorithm = x509.load_der_x509_certificate(certificate).signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


def _without_bcc(raw: bytes) -> bytes:
    """The message as delivered: no Bcc field (RFC 5322 3.6.3)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.splitlines(keepends=True)
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + sep + body

"""Exchange Web Services (Exchange Server 2016, 2019, Subscription Edition): send with
``CreateItem``, watch the Inbox with ``FindItem``, delete probes for good with ``DeleteItem``.

Written from the protocol documents (MS-OXWSCORE items, MS-OXWSSRCH ``FindItem`` and its
restrictions, MS-OXWSMSG messages) and the EWS reference on Microsoft Learn, read strictly
where they are silent. The few SOAP calls are written here over aiohttp rather than with
exchangelib, which is synchronous: its calls run in threads that cannot be cancelled at the
probe's deadline.

- The probe is sent as its MIME (``MimeContent``), the bytes the other senders send.
  ``MessageDisposition`` is ``SendAndSaveCopy`` (a copy in Sent Items, which the round trip
  deletes) or ``SendOnly``, as configured.
- Probes are found by a ``Contains`` restriction on ``message:InternetMessageId``: the
  probe's Message-ID carries its id (:func:`exporter.message.headers`); or on
  ``item:Subject``, which carries it too, for probes sent through a service that replaces
  the Message-ID with its own (Microsoft Graph's ``sendMail``, Gmail). Not by the
  ``X-Mailbox-Probe-Id`` header as an extended property: Exchange promotes an x-header to a
  searchable named property only once a client mapped it, and keeps no value on the first
  message that carries it ("Provision x-headers by using EWS in Exchange"; Exchange team
  blog, "Named Properties, Round 2"). A candidate's id is then read from its
  ``InternetMessageHeaders`` (or its Message-ID) and verified as the IMAP receiver verifies
  it, before anything is deleted.
- Arrivals are polled with the IMAP receiver's back-off without IDLE (:class:`Poller`), not
  watched with streaming notifications (MS-OXWSNTIF): a subscription is a second long-lived
  request per probe, bound to the Client Access server that made it, and a lost
  notification would read as a late delivery. A ``FindItem`` costs one request while the
  Inbox holds no probe.
- Delivery status notifications reach the Inbox as report items (``ItemClass``
  ``REPORT.IPM.Note.NDR``): those that arrived since the round trip began are read as MIME by
  :mod:`exporter.bounce`.
- ``DeleteItem`` with ``DeleteType="HardDelete"`` removes an item for good.

NTLM (through pyspnego: no cryptography is written here) authenticates a TCP connection, not
a request: every request of a session goes over one connection (a connector limited to one),
and the handshake is done again if the server answers 401 on a new one. Over HTTPS the
AUTHENTICATE carries channel bindings of the server's certificate (RFC 5929
``tls-server-end-point``), which Extended Protection for Authentication requires. Basic sends
the account and password with each request; OAuth2 sends an app-only token and names the
mailbox in ``ExchangeImpersonation``. No credential, and nothing derived from one, is put
in a detail, the transcript or a log line.

Answers are parsed with defusedxml with document type declarations forbidden, so no entity
can be expanded; at most :data:`MAX_ANSWER` bytes of an answer are read, each value once.
Redirects are not followed (a POST would come back as a GET, to a sign-in page): the failure
names where they point.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import spnego
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from spnego.channel_bindings import GssChannelBindings

from exporter import classify
from exporter.classify import HttpStage
from exporter.config.sections.ews import EwsConfig
from exporter.message import PROBE_HEADER
from exporter.message import subject as probe_subject
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.trace import Trace, recorder
from exporter.transports import Envelope, ProbeMessage, net
from exporter.transports.graph import from_message_id
from exporter.transports.http import TOKEN_LIMIT, TOKEN_SHARE, Poller, client_failure
from exporter.transports.imap import FIRST_POLL
from exporter.transports.oauth import TokenCache, read_bounded
from exporter.transports.retry import MAX_RETRY_AFTER, retry_after

logging.getLogger("spnego").setLevel(logging.WARNING)
"""pyspnego logs every NTLM message at DEBUG, the AUTHENTICATE (computed from the password)
among them: none of it may reach a log."""

NAME: Final = "ews"
SOAP: Final = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGES: Final = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES: Final = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS: Final = "http://schemas.microsoft.com/exchange/services/2006/errors"
SERVER_VERSION: Final = "Exchange2013_SP1"
"""``RequestServerVersion``: the newest schema name that Exchange 2016, 2019 and Subscription
Edition all accept (the EWS schema versions page); nothing newer is needed here."""
MAX_ANSWER: Final = 4 * 1024 * 1024
"""Bytes of an answer read: a page of item ids and headers is far smaller; a report's MIME is
cut to :data:`exporter.bounce.MAX_REPORT` before it is asked for."""
PAGE_SIZE: Final = 50
"""Items per ``FindItem`` (``IndexedPageItemView MaxEntriesReturned``): candidates carrying
this exporter's id prefix, so a page is more than a round trip ever finds."""
LOOKBACK: Final = timedelta(days=1)
"""A folder's first look in a round trip reads items received this long before it: probes that
arrived after their round trip gave up are found and deleted."""
CLOCK_SKEW: Final = timedelta(minutes=5)
"""Received times are the server's: later looks read from this long before the round trip
began, so that a server clock behind ours loses no arrival."""
SENT_COPY_WAIT: Final = 2.0
"""Seconds the sender looks for its copy in Sent Items after sending to another mailbox:
Exchange files it once the message is submitted, at once or within a moment."""
MIN_WAIT: Final = 0.1
"""Seconds a request or token request is given at least, however late in the probe."""
NTLM_ROUNDS: Final = 2
"""Requests of an NTLM handshake before the authenticated one (NEGOTIATE, then AUTHENTICATE
answering the CHALLENGE): a server asking for more is refused."""
MAX_CHALLENGE: Final = 8192
"""Characters of a ``WWW-Authenticate`` header read: an NTLM CHALLENGE is a few hundred."""
MAX_NAME: Final = 40
"""Characters of an unexpected element's name put in a detail."""
MAX_SCHEME: Final = 20
"""Letters of an authentication scheme's name shown (``Negotiate`` has nine)."""
REPORT_CLASS: Final = "REPORT."
"""The message class prefix of delivery reports (``REPORT.IPM.Note.NDR``, ``.DR``, ...)."""
PROPERTIES: Final = (
    "item:Subject",
    "message:InternetMessageId",
    "item:InternetMessageHeaders",
)
"""What ``GetItem`` reads of a candidate: its subject, Message-ID and internet headers."""
ITEM_NOT_FOUND: Final = "ErrorItemNotFound"
"""An item already gone: no error when deleting, or reading what a look found a moment ago."""
HTTP_UNAUTHORIZED: Final = 401
HTTP_REDIRECTS: Final = range(300, 400)
MAX_LOCATION: Final = 300
"""Characters of a redirect's ``Location`` read (its query and fragment are not shown)."""
FOLDERS: Final = frozenset({"inbox", "junkemail", "sentitems"})
"""The distinguished folders looked into (MS-OXWSCDATA DistinguishedFolderIdNameType)."""


# ------------------------------------------------------------------ answers (pure)


class Malformed(ValueError):
    """An answer that is not the SOAP the request asks for."""


class TooLarge(ProbeFailure):
    """An answer longer than :data:`MAX_ANSWER` (its rest is not read)."""

    def __init__(self) -> None:
        super().__init__(Reason.PROTOCOL_ERROR, f"EWS answered more than {MAX_ANSWER:,} bytes")


@dataclass(frozen=True)
class Fault:
    """A SOAP fault (HTTP 500), or a response message whose ``ResponseClass`` is ``Error``."""

    code: str
    """The EWS ResponseCode (``ErrorServerBusy``), or the fault code without its prefix."""
    message: str
    back_off: float | None = None
    """Seconds from ``BackOffMilliseconds`` (``ErrorServerBusy``), if given."""


@dataclass(frozen=True)
class Item:
    """What is read of an item: from ``FindItem`` its id and class, from ``GetItem`` more."""

    id: str
    subject: str = ""
    message_id: str = ""
    item_class: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    mime: bytes | None = None

    def probe_id(self) -> str:
        """The probe id header, else the one in the Message-ID (a Sent Items copy may have
        no internet headers); trusted only once it verifies."""
        found = next((v for n, v in self.headers if n.lower() == PROBE_HEADER.lower()), "")
        return found.strip() or from_message_id(self.message_id)

    def envelope(self) -> Envelope:
        return Envelope(
            probe_id=self.probe_id(),
            subject=self.subject,
            authentication_results=tuple(
                v for n, v in self.headers if n.lower() == "authentication-results"
            ),
        )


@dataclass(frozen=True)
class Answer:
    """The response messages of one answer, in request order, each with its items."""

    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Message:
    """One response message: success (``fault`` None) or its error, and the items it holds."""

    fault: Fault | None
    items: tuple[Item, ...] = ()
    total: int | None = None
    """``GetFolder``'s ``TotalCount``, where given."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: Element | None) -> str:
    """The element's own text. Every value read here is a simple type (no child elements);
    the text of a whole subtree would be read again for each element above it, quadratic in
    an answer's depth."""
    return "" if element is None or element.text is None else element.text.strip()


def _child(element: Element, name: str) -> Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _back_off(element: Element) -> float | None:
    """``<t:MessageXml><t:Value Name="BackOffMilliseconds">N</t:Value>`` in seconds."""
    for value in element.iter():
        if _local(value.tag) == "Value" and value.get("Name") == "BackOffMilliseconds":
            try:
                millis = float(_text(value))
            except ValueError:
                return None
            if math.isfinite(millis) and millis >= 0:
                return min(millis / 1000, MAX_RETRY_AFTER)
            return None
    return None


def _fault(fault: Element) -> Fault:
    detail = _child(fault, "detail")
    code = _text(_child(detail, "ResponseCode")) if detail is not None else ""
    if not code:
        code = _text(_child(fault, "faultcode")).rpartition(":")[2]
    return Fault(
        code=code,
        message=_text(_child(fault, "faultstring")),
        back_off=_back_off(detail) if detail is not None else None,
    )


def _item(element: Element) -> Item | None:
    item_id = _child(element, "ItemId")
    if item_id is None or not item_id.get("Id"):
        return None
    headers: list[tuple[str, str]] = []
    listed = _child(element, "InternetMessageHeaders")
    for header in listed if listed is not None else ():
        if _local(header.tag) == "InternetMessageHeader":
            headers.append((header.get("HeaderName", ""), _text(header)))
    mime_element = _child(element, "MimeContent")
    mime = None
    if mime_element is not None:
        try:
            mime = base64.b64decode(_text(mime_element), validate=False)
        except (binascii.Error, ValueError):
            raise Malformed("MimeContent is not base64") from None
    return Item(
        id=str(item_id.get("Id")),
        subject=_text(_child(element, "Subject")),
        message_id=_text(_child(element, "InternetMessageId")),
        item_class=_text(_child(element, "ItemClass")),
        headers=tuple(headers),
        mime=mime,
    )


def _message(element: Element) -> Message:
    if element.get("ResponseClass") not in ("Success", "Warning", "Error"):
        raise Malformed("a response message without its ResponseClass")
    code = _text(_child(element, "ResponseCode"))
    if element.get("ResponseClass") == "Error" or (code and code != "NoError"):
        return Message(Fault(code, _text(_child(element, "MessageText")), _back_off(element)))
    items: list[Item] = []
    total: int | None = None
    for found in element.iter():
        name = _local(found.tag)
        if name == "Items":
            items.extend(i for i in map(_item, found) if i is not None)
        elif name == "TotalCount" and total is None:
            try:
                total = int(_text(found))
            except ValueError:
                raise Malformed("TotalCount is not a number") from None
    return Message(None, tuple(items), total)


def parse(raw: bytes) -> Answer | Fault:
    """An EWS answer: its response messages, or its SOAP fault. Raises :class:`Malformed` for
    anything else (not XML, a document type declaration, no SOAP body)."""
    try:
        root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError) as exc:
        raise Malformed(f"not XML: {type(exc).__name__}") from None
    if _local(root.tag) != "Envelope":
        raise Malformed("not a SOAP envelope")
    body = _child(root, "Body")
    if body is None or not len(body):
        raise Malformed("a SOAP envelope without a body")
    response = body[0]
    if _local(response.tag) == "Fault":
        return _fault(response)
    listed = _child(response, "ResponseMessages")
    if listed is None:
        raise Malformed(f"{_local(response.tag)[:MAX_NAME]} without ResponseMessages")
    return Answer(tuple(_message(m) for m in listed))


def schemes(header: str) -> list[str]:
    """The authentication schemes a ``WWW-Authenticate`` header offers (never their tokens)."""
    found = []
    for part in header[:MAX_CHALLENGE].split(","):
        word = part.strip().partition(" ")[0]
        if word.isalpha() and len(word) <= MAX_SCHEME:
            found.append(word)
    return found


def redirect_target(location: str) -> str:
    """Where a ``Location`` header points, as shown in a detail: scheme, host and path, never
    an account, a query or a fragment (a sign-in page's query may carry anything)."""
    try:
        parts = urlsplit(location[:MAX_LOCATION].strip())
    except ValueError:
        return "an unreadable location"
    host, path = parts.netloc.rpartition("@")[2], parts.path.rpartition("@")[2]
    shown = f"{parts.scheme}://{host}{path}" if host else path
    return "".join(c if c.isprintable() else "?" for c in shown) or "nowhere"


def ntlm_challenge(header: str) -> bytes | None:
    """The NTLM CHALLENGE in a ``WWW-Authenticate: NTLM <base64>`` header (several may be
    comma-joined); None if there is none."""
    for part in header[:MAX_CHALLENGE].split(","):
        scheme, _, token = part.strip().partition(" ")
        if scheme.lower() == "ntlm" and token.strip():
            try:
                return base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


def tls_bindings(certificate: bytes) -> GssChannelBindings:
    """Channel bindings of type ``tls-server-end-point`` (RFC 5929 4.1): the hash of the
    server's certificate, by its signature's hash algorithm, SHA-256 for MD5 and SHA-1 (and
    for a signature without one). What Exchange's Extended Protection checks an NTLM
    AUTHENTICATE against."""
    try:
        algorithm = x509.load_der_x509_certificate(certificate).signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        algorithm = None
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


def answer_challenge(
    context: spnego.ContextProxy, challenge: bytes, bindings: GssChannelBindings | None = None
) -> bytes | None:
    """The AUTHENTICATE message answering a server's NTLM CHALLENGE, bound to the TLS channel
    where ``bindings`` are given. pyspnego reads the server's bytes; whatever it cannot read
    is the server's fault, ``protocol_error``."""
    try:
        return context.step(challenge, channel_bindings=bindings)
    except Exception as exc:  # any failure to read outside bytes, by any name pyspnego uses
        raise ProbeFailure(
            Reason.PROTOCOL_ERROR, f"unreadable NTLM challenge ({type(exc).__name__})"
        ) from None


# ------------------------------------------------------------------ requests (pure)


def envelope(operation: str, impersonate: str | None) -> bytes:
    """A SOAP request of ``operation`` (the body's XML), acting as ``impersonate`` if given."""
    header = f'<t:RequestServerVersion Version="{SERVER_VERSION}"/>'
    if impersonate:
        header += (
            "<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
            f"{escape(impersonate)}</t:PrimarySmtpAddress></t:ConnectingSID>"
            "</t:ExchangeImpersonation>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:m="{MESSAGES}" xmlns:t="{TYPES}">'
        f"<soap:Header>{header}</soap:Header><soap:Body>{operation}</soap:Body></soap:Envelope>"
    ).encode()


def _folder(name: str) -> str:
    if name not in FOLDERS:
        raise ValueError(f"not a folder looked into: {name!r}")
    return f'<t:DistinguishedFolderId Id="{name}"/>'


def get_folder(name: str) -> str:
    return (
        "<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
        f"<m:FolderIds>{_folder(name)}</m:FolderIds></m:GetFolder>"
    )


def create_item(probe: ProbeMessage, disposition: str) -> str:
    """``CreateItem`` of the probe's MIME, sent with ``disposition``; a kept copy goes to
    Sent Items."""
    saved = (
        f"<m:SavedItemFolderId>{_folder('sentitems')}</m:SavedItemFolderId>"
        if disposition == "SendAndSaveCopy"
        else ""
    )
    mime = base64.b64encode(probe.raw).decode("ascii")
    return (
        f"<m:CreateItem MessageDisposition={quoteattr(disposition)}>{saved}<m:Items>"
        f'<t:Message><t:MimeContent CharacterSet="UTF-8">{mime}</t:MimeContent></t:Message>'
        "</m:Items></m:CreateItem>"
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_items(folder: str, since: datetime, condition: str) -> str:
    """``FindItem`` of the items of ``folder`` received since ``since`` that meet
    ``condition`` (a search expression of MS-OXWSSRCH), newest first."""
    shape = "".join(
        f'<t:FieldURI FieldURI="{uri}"/>'
        for uri in ("item:Subject", "message:InternetMessageId", "item:ItemClass")
    )
    received = (
        '<t:IsGreaterThanOrEqualTo><t:FieldURI FieldURI="item:DateTimeReceived"/>'
        f'<t:FieldURIOrConstant><t:Constant Value="{_instant(since)}"/></t:FieldURIOrConstant>'
        "</t:IsGreaterThanOrEqualTo>"
    )
    return (
        '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
        f"<t:AdditionalProperties>{shape}</t:AdditionalProperties></m:ItemShape>"
        f'<m:IndexedPageItemView MaxEntriesReturned="{PAGE_SIZE}" Offset="0" '
        'BasePoint="Beginning"/>'
        f"<m:Restriction><t:And>{received}{condition}</t:And></m:Restriction>"
        '<m:SortOrder><t:FieldOrder Order="Descending">'
        '<t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder></m:SortOrder>'
        f"<m:ParentFolderIds>{_folder(folder)}</m:ParentFolderIds></m:FindItem>"
    )


def message_id_contains(text: str) -> str:
    return (
        '<t:Contains ContainmentMode="Substring" ContainmentComparison="IgnoreCase">'
        '<t:FieldURI FieldURI="message:InternetMessageId"/>'
        f"<t:Constant Value={quoteattr(text)}/></t:Contains>"
    )


def subject_contains(text: str) -> str:
    return (
        '<t:Contains ContainmentMode="Substring" ContainmentComparison="IgnoreCase">'
        '<t:FieldURI FieldURI="item:Subject"/>'
        f"<t:Constant Value={quoteattr(text)}/></t:Contains>"
    )


def _arrived(prefix: str) -> str:
    """Mail whose Message-ID or subject carries an id starting with ``prefix``: a probe
    keeps its subject through every sender, its Message-ID only through some."""
    return (
        f"<t:Or>{message_id_contains('<' + prefix)}{subject_contains(probe_subject(prefix))}</t:Or>"
    )


def message_id_is(message_id: str) -> str:
    return (
        '<t:IsEqualTo><t:FieldURI FieldURI="message:InternetMessageId"/>'
        f"<t:FieldURIOrConstant><t:Constant Value={quoteattr(message_id)}/>"
        "</t:FieldURIOrConstant></t:IsEqualTo>"
    )


def class_prefixed(text: str) -> str:
    return (
        '<t:Contains ContainmentMode="Prefixed" ContainmentComparison="IgnoreCase">'
        '<t:FieldURI FieldURI="item:ItemClass"/>'
        f"<t:Constant Value={quoteattr(text)}/></t:Contains>"
    )


def _item_ids(refs: Sequence[str]) -> str:
    return "".join(f"<t:ItemId Id={quoteattr(ref)}/>" for ref in refs)


def get_items(refs: Sequence[str], mime: bool) -> str:
    """``GetItem`` of ``refs``: their MIME, or the :data:`PROPERTIES`."""
    if mime:
        shape = "<t:BaseShape>IdOnly</t:BaseShape><t:IncludeMimeContent>true</t:IncludeMimeContent>"
    else:
        uris = "".join(f'<t:FieldURI FieldURI="{uri}"/>' for uri in PROPERTIES)
        shape = (
            "<t:BaseShape>IdOnly</t:BaseShape>"
            f"<t:AdditionalProperties>{uris}</t:AdditionalProperties>"
        )
    return (
        f"<m:GetItem><m:ItemShape>{shape}</m:ItemShape>"
        f"<m:ItemIds>{_item_ids(refs)}</m:ItemIds></m:GetItem>"
    )


def delete_items(refs: Sequence[str]) -> str:
    """``DeleteItem`` for good (``HardDelete``)."""
    return (
        '<m:DeleteItem DeleteType="HardDelete">'
        f"<m:ItemIds>{_item_ids(refs)}</m:ItemIds></m:DeleteItem>"
    )


# ------------------------------------------------------------------ the session


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class EwsSession:
    """One probe's conversation with the EWS endpoint, over one TCP connection."""

    section: EwsConfig
    trace: Trace
    tokens: TokenCache
    _client: aiohttp.ClientSession | None = None
    _token: str | None = None
    _ntlm_ready: bool = False
    _peer: bytes | None = None
    """The certificate (DER) the server showed in the last TLS handshake: with one
    connection, that of the connection in use."""

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            context: ssl.SSLContext | bool = False
            if self.section.tls == "implicit":
                context = net.tls_context(self.section.tls_config)
                context.sslobject_class = _recording(self._handshaken)
            self._client = aiohttp.ClientSession(
                # One connection: NTLM authenticates the connection, not the request.
                connector=aiohttp.TCPConnector(limit=1, ssl=context),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._ntlm_ready = False
        return self._client

    def _keep_secret(self, value: str) -> None:
        """Redact ``value`` from anything the probe reports."""
        if value not in self.trace.tokens:
            self.trace.tokens.append(value)

    async def authorize(self) -> None:
        """Get the app-only access token where OAuth2 is used (cached across probes); NTLM
        and Basic sign in with each connection or request instead."""
        oauth2 = self.section.oauth2
        if oauth2 is None or self._token is not None:
            return
        limit = max(MIN_WAIT, min(TOKEN_LIMIT, self.trace.remaining() * TOKEN_SHARE))
        self.trace.say(f"requesting an access token ({oauth2.grant}) from {oauth2.token_url}")
        try:
            token = await self.tokens.token(oauth2, limit)
        except ProbeFailure as failure:
            self.trace.found.token_failed.add(NAME)
            if failure.retry_after is not None:
                self.trace.found.retry_after = failure.retry_after
            raise
        self.trace.found.token_expiry[NAME] = token.expires_at
        self._keep_secret(token.value)
        self._token = token.value

    async def login(self) -> int | None:
        """Sign in (a token, or the first authenticated request) and read the Inbox folder:
        how many items it holds."""
        with self.trace.phase(Phase.EWS_AUTH):
            await self.authorize()
            answer = await self.call(get_folder("inbox"), "GetFolder", "auth")
        self.trace.found.logged_in.add(NAME)
        return answer.messages[0].total if answer.messages else None

    async def call(
        self, operation: str, name: str, stage: HttpStage, *, missing_ok: bool = False
    ) -> Answer:
        """One request; its answer, every response message of which succeeded. With
        ``missing_ok`` an item already gone (``ErrorItemNotFound``) is no error: its response
        message is skipped."""
        await self.authorize()
        body = envelope(operation, self.section.username if self.section.oauth2 else None)
        self.trace.found.requests += 1
        self.trace.say(f"C: POST {name}")
        active, recorded = recorder(), 0
        if active is not None:
            recorded = active.request(f"POST {name}")
        status, headers, raw = await self._authenticated(body, stage)
        self.trace.say(f"S: {status}")
        if active is not None:
            active.answer(recorded, str(status))
        try:
            parsed: Answer | Fault | None = parse(raw) if raw.strip() else None
        except Malformed as exc:
            if 200 <= status < 300:
                raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{name}: {exc}") from None
            parsed = None
        if isinstance(parsed, Answer) and 200 <= status < 300:
            if not parsed.messages:
                raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{name} answered no response message")
            for message in parsed.messages:
                fault = message.fault
                if fault is not None and not (missing_ok and fault.code == ITEM_NOT_FOUND):
                    raise self._failure(status, fault, headers, stage)
            return parsed
        if parsed is None and 200 <= status < 300:
            raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{name} answered {status} without SOAP")
        if isinstance(parsed, Fault):
            raise self._failure(status, parsed, headers, stage)
        if status == HTTP_UNAUTHORIZED:
            offered = ", ".join(sorted(set(schemes(headers.get("WWW-Authenticate", ""))))) or "none"
            raise self._failure(
                status,
                Fault("", f"credentials refused (schemes offered: {offered})"),
                headers,
                stage,
            )
        if status in HTTP_REDIRECTS:
            # Not followed: a POST redirected becomes a GET (301, 302, 303), and a sign-in
            # page (OWA's forms) is no EWS. The url to configure is named instead.
            shown = redirect_target(headers.get("Location", ""))
            raise self._failure(status, Fault("", f"a redirect to {shown}"), headers, stage)
        raise self._failure(status, Fault("", ""), headers, stage)

    async def _authenticated(
        self, body: bytes, stage: HttpStage
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``body`` with the configured authentication; an NTLM handshake first where the
        connection has none."""
        section = self.section
        if section.auth == "basic":
            assert section.password is not None
            secret = _b64(f"{section.login}:{section.password.reveal()}".encode())
            self._keep_secret(secret)
            return await self._post(body, {"Authorization": "Basic " + secret})
        if section.auth == "oauth2":
            return await self._post(body, {"Authorization": f"Bearer {self._token}"})
        if self._ntlm_ready:
            answer = await self._post(body, {})
            if answer[0] != 401:
                return answer
            self._ntlm_ready = False  # a new connection: its own handshake
        return await self._ntlm(body)

    async def _ntlm(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        section = self.section
        assert section.password is not None
        context = spnego.client(
            section.login,
            section.password.reveal(),
            hostname=section.host,
            service="HTTP",
            protocol="ntlm",
        )
        token = context.step()
        for _ in range(NTLM_ROUNDS):
            if token is None:
                break
            sent = _b64(token)
            self._keep_secret(sent)
            status, headers, raw = await self._post(body, {"Authorization": "NTLM " + sent})
            if status != 401:
                self._ntlm_ready = 200 <= status < 300 or status == 500
                return status, headers, raw
            challenge = ntlm_challenge(headers.get("WWW-Authenticate", ""))
            if challenge is None or context.complete:
                return status, headers, raw
            # The CHALLENGE came over the connection the AUTHENTICATE goes over: bind to its
            # certificate (Extended Protection for Authentication).
            bindings = tls_bindings(self._peer) if self._peer else None
            token = answer_challenge(context, challenge, bindings)
        raise ProbeFailure(Reason.PROTOCOL_ERROR, "the NTLM handshake did not finish")

    async def _post(self, body: bytes, auth: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "text/xml; charset=utf-8", **auth}
        try:
            async with self._session().post(
                self.section.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(MIN_WAIT, self.trace.remaining())),
                allow_redirects=False,
            ) as response:
                raw = await read_bounded(response, MAX_ANSWER)
                if raw is None:
                    raise TooLarge()
                kept = {
                    name: ", ".join(response.headers.getall(name, ()))
                    for name in ("WWW-Authenticate", "Retry-After", "request-id", "Location")
                }
                return response.status, kept, raw
        except aiohttp.ClientError as exc:
            raise client_failure(exc) from None
        except TimeoutError:
            raise ProbeFailure(Reason.TIMEOUT, "no answer from EWS in time") from None

    def _handshaken(self, ssl_object: ssl.SSLObject) -> None:
        """A TLS connection was made: keep its certificate (for channel bindings) and, once,
        the session it made."""
        self._peer = ssl_object.getpeercert(binary_form=True)
        if NAME not in self.trace.found.tls:
            session = net.tls_session(ssl_object)
            if session is not None:
                self.trace.found.tls[NAME] = session

    def _failure(
        self, status: int, fault: Fault, headers: dict[str, str], stage: HttpStage
    ) -> ProbeFailure:
        reason = classify.http_reply(status, fault.code, fault.message, stage)
        wait = fault.back_off
        if wait is None:
            wait = retry_after(headers, fault.message)
        if wait is not None and reason in (Reason.THROTTLED, Reason.UNAVAILABLE):
            self.trace.found.retry_after = wait
        if reason is Reason.AUTH_REJECTED:
            self.trace.found.login_refused = NAME
            if self.section.oauth2 is not None:
                self.tokens.forget(self.section.oauth2)
        words = " ".join(f"{status} {fault.code}: {fault.message}".split()).replace(" :", ":")
        if headers.get("request-id"):
            words += f" (request-id {headers['request-id'][:64]})"
        self.trace.say(f"failed: {words}")
        failure = ProbeFailure(reason, words)
        failure.retry_after = self.trace.found.retry_after
        return failure

    async def close(self) -> None:
        client, self._client, self._token = self._client, None, None
        if client is not None:
            await client.close()

    def abort(self) -> None:
        """Drop the connection at once (the deadline passed)."""
        client, self._client, self._token = self._client, None, None
        if client is not None and not client.closed and client.connector is not None:
            # The connector closes its connections' transports at once; what is left to
            # await is their shutdown, done in the background.
            waiter = client.connector.close(abort_ssl=True)
            client.detach()
            task = asyncio.get_running_loop().create_task(_settle(waiter))
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()
"""Connections being shut down after an abort (kept referenced until they are)."""


async def _settle(waiter: Awaitable[None]) -> None:
    await waiter


# ------------------------------------------------------------------ roles


def _recording(seen: Callable[[ssl.SSLObject], None]) -> type[ssl.SSLObject]:
    """An ``SSLContext.sslobject_class`` that hands each completed handshake to ``seen``:
    aiohttp releases a connection as soon as an answer without a body is read, so the
    certificate of the connection that carried a 401 cannot be asked of the answer."""

    class Recording(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            seen(self)

    return Recording


def _own_message_id(probe: ProbeMessage) -> str:
    """The probe's Message-ID, which names its id: its Sent Items copy is found by it. A
    message without one is refused before it is sent (nothing could tell its copy apart)."""
    message_id = dict(probe.headers).get("Message-ID", "")
    if not message_id or from_message_id(message_id) != probe.probe_id:
        raise ValueError("a probe message without a Message-ID naming its probe id")
    return message_id


def _one_per_ref(answer: Answer) -> list[Item]:
    return [item for message in answer.messages if message.fault is None for item in message.items]


@dataclass
class EwsSender:
    """Sends the probe's MIME with ``CreateItem`` as the configured mailbox. Sent to another
    mailbox with ``SendAndSaveCopy``, the copy Exchange keeps in Sent Items is deleted right
    after (the receiver, watching another account, never sees it): ``CreateItem`` answers no
    id for it, so it is found by the probe's exact Message-ID."""

    section: EwsConfig
    trace: Trace
    tokens: TokenCache

    async def send(self, probe: ProbeMessage) -> float:
        _own_message_id(probe)
        session = EwsSession(self.section, self.trace, self.tokens)
        try:
            if self.section.oauth2 is not None:
                with self.trace.phase(Phase.EWS_AUTH):
                    await session.authorize()
            with self.trace.phase(Phase.EWS_SEND):
                await session.call(create_item(probe, self.section.send_mode), "CreateItem", "send")
            accepted = time.monotonic()
            elsewhere = probe.mail_to.lower() != self.section.username.lower()
            if elsewhere and self.section.send_mode == "SendAndSaveCopy":
                await self._forget(session, probe)
            return accepted
        finally:
            await asyncio.shield(session.close())

    async def _forget(self, session: EwsSession, probe: ProbeMessage) -> None:
        """Delete the copy in Sent Items; one that cannot be found or deleted within
        :data:`SENT_COPY_WAIT` stays, a cleanup failure rather than a failed probe.

        Only an item whose Message-ID is this probe's, character for character, and names
        this probe's id is deleted: the reference does not say how ``IsEqualTo`` compares
        strings (a server comparing without case would match a stranger's message too)."""
        message_id = _own_message_id(probe)
        poller = Poller(SENT_COPY_WAIT, FIRST_POLL)
        give_up = time.monotonic() + min(SENT_COPY_WAIT, self.trace.remaining() * TOKEN_SHARE)
        since = datetime.now(UTC) - CLOCK_SKEW
        try:
            with self.trace.phase(Phase.EWS_CLEANUP):
                while True:
                    await poller.wait(give_up)
                    found = await session.call(
                        find_items("sentitems", since, message_id_is(message_id)),
                        "FindItem",
                        "mailbox",
                    )
                    refs = [
                        item.id
                        for item in _one_per_ref(found)
                        if item.message_id == message_id
                        and from_message_id(item.message_id) == probe.probe_id
                    ]
                    if refs:
                        await session.call(
                            delete_items(refs), "DeleteItem", "mailbox", missing_ok=True
                        )
                        return
                    if time.monotonic() >= give_up:
                        break
        except ProbeFailure as failure:
            self.trace.say(f"the sent copy stays: {failure.detail}")
        else:
            self.trace.say("the sent copy stays: not in Sent Items yet")
        self.trace.found.cleanup_failed = True


class EwsReceiver:
    """The Inbox, Junk Email and Sent Items, searched by Message-ID; probes verified from
    their internet headers and deleted for good."""

    def __init__(self, section: EwsConfig, trace: Trace, tokens: TokenCache) -> None:
        self.section = section
        self.trace = trace
        self.session = EwsSession(section, trace, tokens)
        self.poller = Poller(section.poll_interval, FIRST_POLL)
        self._began = datetime.now(UTC)
        self._swept: set[str] = set()
        """Folders already read back over :data:`LOOKBACK` in this round trip."""
        self._items: dict[str, Item] = {}

    async def open(self) -> None:
        total = await self.session.login()
        self.trace.say(f"Inbox holds {'?' if total is None else total} items")

    async def wait(self, deadline: float) -> float | None:
        return await self.poller.wait(deadline)

    async def find(self, prefix: str) -> list[str]:
        return await self._look("inbox", _arrived(prefix))

    async def junk(self, prefix: str) -> list[str]:
        return await self._look("junkemail", _arrived(prefix))

    async def sent_copies(self, prefix: str) -> list[str]:
        """Copies kept by ``SendAndSaveCopy`` (and by Exchange for mail the account submits
        over SMTP): this sender's own, which keep the probe's Message-ID."""
        return await self._look("sentitems", message_id_contains("<" + prefix))

    async def reports(self, prefix: str) -> list[str]:
        """Report items (``REPORT.*``) that arrived in the Inbox since the round trip began:
        EWS cannot search a report's quoted header, so each is read by :mod:`exporter.bounce`,
        which keeps only those quoting this exporter's probes."""
        answer = await self.session.call(
            find_items("inbox", self._began - CLOCK_SKEW, class_prefixed(REPORT_CLASS)),
            "FindItem",
            "mailbox",
        )
        return [item.id for item in _one_per_ref(answer)]

    def _since(self, folder: str) -> datetime:
        if folder in self._swept:
            return self._began - CLOCK_SKEW
        return self._began - LOOKBACK

    async def _look(self, folder: str, condition: str) -> list[str]:
        """Items of ``folder`` that meet ``condition``, received since the look-back."""
        answer = await self.session.call(
            find_items(folder, self._since(folder), condition), "FindItem", "mailbox"
        )
        self._swept.add(folder)
        return [item.id for item in _one_per_ref(answer)]

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        """Each item's internet headers, read with ``GetItem``."""
        wanted = [ref for ref in refs if ref not in self._items]
        if wanted:
            with self.trace.phase(Phase.EWS_FETCH):
                answer = await self.session.call(
                    get_items(wanted, mime=False), "GetItem", "mailbox", missing_ok=True
                )
            for item in _one_per_ref(answer):
                self._items[item.id] = item
        return {ref: self._items.get(ref, Item(ref)).envelope() for ref in refs}

    async def raw(self, ref: str, limit: int) -> bytes:
        """The item's MIME (``IncludeMimeContent``), cut to ``limit`` bytes. EWS sends the
        whole MIME: a report larger than :data:`MAX_ANSWER` (Exchange's reports carry the
        returned message) is no report on a probe, and reads as nothing."""
        with self.trace.phase(Phase.EWS_FETCH):
            try:
                answer = await self.session.call(
                    get_items([ref], mime=True), "GetItem", "mailbox", missing_ok=True
                )
            except TooLarge:
                self.trace.say("a report too large to quote a probe: not read")
                return b""
        items = _one_per_ref(answer)
        return (items[0].mime or b"")[:limit] if items else b""

    async def delete(self, refs: Sequence[str]) -> bool:
        """For good (``HardDelete``); an item already gone is fine."""
        with self.trace.phase(Phase.EWS_CLEANUP):
            await self.session.call(delete_items(refs), "DeleteItem", "mailbox", missing_ok=True)
        for ref in refs:
            self._items.pop(ref, None)
        return True

    async def close(self) -> None:
        await self.session.close()

    def abort(self) -> None:
        self.session.abort()


async def check_login(section: EwsConfig, trace: Trace, tokens: TokenCache) -> None:
    """ews_login: can the account sign in and read the mailbox's Inbox folder?"""
    session = EwsSession(section, trace, tokens)
    try:
        await session.login()
    finally:
        await asyncio.shield(session.close())

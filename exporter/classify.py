"""Map what servers and sockets say to one failure reason.

Each protocol has an ordered table of rules, first match wins. The order asks "who is the
problem?": the client being limited, the credentials, the mailbox, the service, and last what
only this sender or message is refused for. A reply can carry words of several kinds (Yahoo's
``535 5.7.0 Too many bad auth attempts`` is both a limit and a credential refusal), so the order
is part of the contract: tests/classify_corpus.yaml holds the replies that pin it down.

SMTP replies are read by their enhanced status code in full (``5.1.90`` is a sending limit,
``5.1.10`` a missing recipient), then their basic code, because providers reuse basic codes:
550 can mean a full mailbox or basic auth switched off. A multi-line reply is one reply.
IMAP answers are read by their response code (``[AUTHENTICATIONFAILED]``), then their text.
HTTP answers (Microsoft Graph, Gmail API) are read by their error code, then their status.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from exporter.outcome import Reason, shorten

SmtpStage = Literal["greeting", "tls", "auth", "send"]
ImapStage = Literal["greeting", "tls", "auth", "select", "mailbox"]
HttpStage = Literal["auth", "send", "mailbox"]

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_IMAP_CODE = re.compile(r"^\s*\[([A-Z][A-Z0-9-]*)")

# The client is being limited: connections, rates, volumes, quotas on sending or commands.
_LIMITED = re.compile(
    r"too many|too much|too quickly|\brate\b|\bbusy\b|throttl|unexpected volume"
    r"|maximum number of connections"
    r"|(?:sending|relay|connection|recipient|daily|concurren|bandwidth|command|submission)"
    r"[\w ]{0,16}?(?:limit|quota)"
)
# The service says it cannot serve now (Exchange's front end: "Server Unavailable. 15").
_UNAVAILABLE_WORDS = re.compile(r"\bunavailable\b|temporar|try again")
_AUTH_NOT_CONNECTED = "user is authenticated but not connected"

SMTP_SERVICE_NOT_AVAILABLE: Final = 421
"""RFC 5321: "Service not available, closing transmission channel"."""
SMTP_NO_SERVICE_HERE: Final = 554
"""RFC 5321 3.1: a greeting of 554 means the server will not serve this connection."""
SMTP_AUTH_TEMPORARY: Final = 454
SMTP_AUTH_CODES: Final = frozenset({530, 534, 535})
"""Authentication required, mechanism too weak, credentials invalid (RFC 4954)."""

_SMTP_AUTH_REJECTED = frozenset({"5.7.3", "5.7.8", "5.7.9", "5.7.30", "5.7.57", "5.7.139"})
# Sending limits with codes of their own: Gmail's daily quota, Exchange Online's daily
# recipient limit and tenant external recipient rate limits.
_SMTP_SENDING_LIMITS = frozenset({"5.4.5", "5.1.90", "5.7.232", "5.7.233"})
# Sender-side codes inside 5.1.x (RFC 3463 "bad sender's mailbox address", "bad sender's
# system address"; Exchange Online "Access denied, bad outbound sender").
_SMTP_SENDER_REFUSED = frozenset({"5.1.7", "5.1.8"})
# Mailbox full or disabled, and Exchange Online's directory-based edge blocking of an unknown
# recipient ("5.4.1 Recipient address rejected: Access denied").
_SMTP_MAILBOX = frozenset({"5.2.1", "5.2.2", "4.2.2", "5.4.1"})

_IMAP_AUTH_REJECTED = frozenset(
    {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "CONTACTADMIN", "WEBALERT"}
)
_IMAP_MAILBOX = frozenset({"OVERQUOTA", "NONEXISTENT", "NOPERM", "TRYCREATE", "INUSE"})
_IMAP_INFORMATIONAL = frozenset({"", "ALERT"})
"""Codes that say nothing about the cause: the text decides."""


def enhanced_code(message: str) -> str | None:
    """The RFC 3463 code a reply text starts with, as ``x.y.z``, if any."""
    match = _ENHANCED.match(message)
    return ".".join(match.groups()) if match else None


def _reply_text(message: str) -> str:
    """A multi-line reply as one line, without the enhanced code repeated on each line."""
    lines = (_ENHANCED.sub("", line, count=1).strip() for line in message.splitlines())
    return " ".join(line for line in lines if line)


def smtp_detail(code: int, message: str) -> str:
    """The provider's own words for a failure's detail: code, enhanced code, text, shortened."""
    enhanced = enhanced_code(message)
    words = " ".join(part for part in (str(code), enhanced, _reply_text(message)) if part)
    return shorten(words)


@dataclass(frozen=True)
class _Smtp:
    code: int
    enhanced: str
    words: str
    stage: SmtpStage


_SMTP_RULES: Final[tuple[tuple[Callable[[_Smtp], bool], Reason], ...]] = (
    # Credentials: 535 5.7.8 (Postfix, Gmail), 535 5.7.139 SMTP AUTH disabled (Exchange Online),
    # 550 5.7.30 basic auth off; also Yahoo's "535 5.7.0 Too many bad auth attempts".
    (
        lambda r: r.code in SMTP_AUTH_CODES or r.enhanced in _SMTP_AUTH_REJECTED,
        Reason.AUTH_REJECTED,
    ),
    # Sending quotas with codes of their own: Gmail 550 5.4.5, Exchange Online 5.1.90/5.7.233.
    (lambda r: r.enhanced in _SMTP_SENDING_LIMITS, Reason.THROTTLED),
    # Limit wording: "too many connections" (Postfix, Exim), "recipient thread limit exceeded"
    # and "Submission quota exceeded" (Exchange), "Server busy" (Gmail), TSS04 volume (Yahoo).
    (lambda r: bool(_LIMITED.search(r.words)), Reason.THROTTLED),
    # The service: 421 (RFC 5321), 4.3.x system status (RFC 3463: 4.3.2 "not accepting network
    # messages"; Postfix 4.3.5 configuration error, Gmail 4.3.0), a 554 greeting.
    (
        lambda r: (
            r.code == SMTP_SERVICE_NOT_AVAILABLE
            or r.enhanced.startswith("4.3.")
            or (r.stage == "greeting" and r.code == SMTP_NO_SERVICE_HERE)
        ),
        Reason.UNAVAILABLE,
    ),
    # Refused for this sender only: 5.1.8 "bad outbound sender" (Exchange Online), 5.1.7.
    (lambda r: r.enhanced in _SMTP_SENDER_REFUSED, Reason.SEND_REJECTED),
    # The recipient mailbox: 5.1.1 unknown, 5.1.10 RecipientNotFound, 5.2.2 / 4.2.2 full.
    (
        lambda r: (
            r.stage == "send"
            and (r.enhanced.startswith(("5.1.", "4.1.")) or r.enhanced in _SMTP_MAILBOX)
        ),
        Reason.MAILBOX_UNAVAILABLE,
    ),
    # AUTH answered with a temporary failure: 454 4.7.0 (Gmail, Postfix via Dovecot).
    (
        lambda r: (
            r.stage == "auth" and (r.code == SMTP_AUTH_TEMPORARY or r.enhanced.startswith("4."))
        ),
        Reason.AUTH_TEMPORARY,
    ),
    # Any other refusal of AUTH.
    (lambda r: r.stage == "auth", Reason.AUTH_REJECTED),
    # Anything else refused in MAIL, RCPT or DATA: relaying, policy, content (5.7.1, 5.7.60).
    (lambda r: r.stage == "send", Reason.SEND_REJECTED),
    # STARTTLS refused: 454 4.7.0 TLS not available.
    (lambda r: r.stage == "tls", Reason.TLS),
)


def smtp_reply(code: int, message: str, stage: SmtpStage) -> Reason:
    """Classify a negative SMTP reply received during ``stage``."""
    reply = _Smtp(code, enhanced_code(message) or "", _reply_text(message).lower(), stage)
    return next((reason for rule, reason in _SMTP_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


def imap_response_code(text: str) -> str | None:
    """The bracketed response code an IMAP status text starts with, if any."""
    match = _IMAP_CODE.match(text)
    return match.group(1) if match else None


@dataclass(frozen=True)
class _Imap:
    result: str
    code: str
    words: str
    stage: ImapStage


_IMAP_RULES: Final[tuple[tuple[Callable[[_Imap], bool], Reason], ...]] = (
    # The client is limited: [LIMIT], Gmail's "BYE [ALERT] Too many simultaneous connections"
    # and "[OVERQUOTA] Account exceeded command or bandwidth limits", Dovecot's
    # "Maximum number of connections from user+IP exceeded", Cyrus "Too many open connections".
    (lambda r: r.code == "LIMIT" or bool(_LIMITED.search(r.words)), Reason.THROTTLED),
    # Exchange Online logged in but cannot open the mailbox (unlicensed, not provisioned).
    (lambda r: _AUTH_NOT_CONNECTED in r.words, Reason.MAILBOX_UNAVAILABLE),
    # The server turns the connection away at the greeting, or says it is unavailable.
    (
        lambda r: r.result == "BYE" and (r.stage == "greeting" or r.code == "UNAVAILABLE"),
        Reason.UNAVAILABLE,
    ),
    # A login answered with BYE and unavailable wording: Courier "Temporary problem".
    (
        lambda r: (
            r.result == "BYE" and r.stage == "auth" and bool(_UNAVAILABLE_WORDS.search(r.words))
        ),
        Reason.UNAVAILABLE,
    ),
    # Any other BYE mid-session: the server hung up ("Disconnected for inactivity").
    (lambda r: r.result == "BYE", Reason.NETWORK),
    # A server bug or a command it did not understand.
    (lambda r: r.code == "SERVERBUG" or r.result == "BAD", Reason.PROTOCOL_ERROR),
    # Credentials: [AUTHENTICATIONFAILED] (Dovecot, Gmail), [WEBALERT] web login required (Gmail).
    (lambda r: r.code in _IMAP_AUTH_REJECTED, Reason.AUTH_REJECTED),
    # Dovecot "[UNAVAILABLE] Temporary authentication failure": the user database is down.
    (lambda r: r.code == "UNAVAILABLE" and r.stage == "auth", Reason.AUTH_TEMPORARY),
    # [UNAVAILABLE] outside login: the mail store cannot be reached.
    (lambda r: r.code == "UNAVAILABLE", Reason.UNAVAILABLE),
    # No code, unavailable wording: Exchange's "NO Server Unavailable. 15" (the mailbox server
    # behind the front end is down), Zimbra's "[ALERT] account undergoing maintenance".
    (
        lambda r: r.code in _IMAP_INFORMATIONAL and bool(_UNAVAILABLE_WORDS.search(r.words)),
        Reason.UNAVAILABLE,
    ),
    # The mailbox: over quota, missing, not permitted, or any refusal to SELECT it.
    (
        lambda r: r.code in _IMAP_MAILBOX or r.stage in ("select", "mailbox"),
        Reason.MAILBOX_UNAVAILABLE,
    ),
    # Any other refused login: "NO LOGIN failed" (Zimbra, Exchange), "NO Login failed." (Courier).
    (lambda r: r.stage == "auth", Reason.AUTH_REJECTED),
    # STARTTLS refused.
    (lambda r: r.stage == "tls", Reason.TLS),
)


def imap_reply(result: str, text: str, stage: ImapStage) -> Reason:
    """Classify a tagged ``NO``/``BAD`` (or a ``BYE``) received during ``stage``."""
    reply = _Imap(result.upper(), imap_response_code(text) or "", text.lower(), stage)
    return next((reason for rule, reason in _IMAP_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


HTTP_UNAUTHORIZED: Final = 401
HTTP_FORBIDDEN: Final = 403
HTTP_TOO_MANY_REQUESTS: Final = 429
HTTP_INSUFFICIENT_STORAGE: Final = 507
HTTP_BANDWIDTH_EXCEEDED: Final = 509
HTTP_CLIENT_ERRORS: Final = range(400, 500)
HTTP_SERVER_ERRORS: Final = frozenset({500, 502, 503, 504})
"""Gmail API: "An unexpected error occurred while processing the request", retry with backoff;
Graph: internal error, service unavailable (maintenance or overload), gateway timeout."""

# Gmail API usage limits (403 and 429) and Graph's per-mailbox limits (429 ApplicationThrottled).
_HTTP_LIMITS = frozenset(
    {"ratelimitexceeded", "userratelimitexceeded", "dailylimitexceeded", "applicationthrottled"}
)
# Graph: the mailbox is not there (unknown user: ErrorInvalidUser; unlicensed, on-premises,
# soft-deleted) or full; Gmail API: "Mail service not enabled" (failedPrecondition).
_HTTP_MAILBOX = frozenset(
    {
        "errorinvaliduser",
        "mailboxnotenabledforrestapi",
        "mailboxnotsupportedforrestapi",
        "erroritemnotfound",
        "resourcenotfound",
        "errorquotaexceeded",
        "failedprecondition",
    }
)
# Graph: not allowed to send as this mailbox, or submission blocked.
_HTTP_SEND_REFUSED = frozenset({"errorsendasdenied", "errormessagesubmissionblocked"})
# Graph ErrorAccessDenied, Gmail insufficientPermissions / authError / forbidden (delegation).
_HTTP_ACCESS_DENIED = frozenset(
    {"erroraccessdenied", "insufficientpermissions", "autherror", "authorization_requestdenied"}
)


@dataclass(frozen=True)
class _Http:
    status: int
    error: str
    words: str
    stage: HttpStage


_HTTP_RULES: Final[tuple[tuple[Callable[[_Http], bool], Reason], ...]] = (
    # Limits: 429 with Retry-After (Graph, Gmail), Gmail 403 rateLimitExceeded /
    # userRateLimitExceeded / dailyLimitExceeded, Graph 509 bandwidth.
    (
        lambda r: (
            r.status in (HTTP_TOO_MANY_REQUESTS, HTTP_BANDWIDTH_EXCEEDED) or r.error in _HTTP_LIMITS
        ),
        Reason.THROTTLED,
    ),
    # Sending refused for this sender: Graph 403 ErrorSendAsDenied.
    (lambda r: r.error in _HTTP_SEND_REFUSED, Reason.SEND_REJECTED),
    # The mailbox: Graph MailboxNotEnabledForRESTAPI, ErrorQuotaExceeded, 507; Gmail
    # failedPrecondition "Mail service not enabled".
    (
        lambda r: r.error in _HTTP_MAILBOX or r.status == HTTP_INSUFFICIENT_STORAGE,
        Reason.MAILBOX_UNAVAILABLE,
    ),
    # The service: 500, 502, 503, 504 (Gmail backendError, Graph ServiceUnavailable).
    (lambda r: r.status in HTTP_SERVER_ERRORS, Reason.UNAVAILABLE),
    # Credentials and permissions: 401 (token invalid), 403 access denied, Gmail
    # "Delegation denied" for a service account without domain-wide delegation.
    (
        lambda r: r.status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN) or r.error in _HTTP_ACCESS_DENIED,
        Reason.AUTH_REJECTED,
    ),
    # Any other refusal of a message being sent.
    (lambda r: r.stage == "send" and r.status in HTTP_CLIENT_ERRORS, Reason.SEND_REJECTED),
)


def http_reply(status: int, error_code: str, message: str, stage: HttpStage) -> Reason:
    """Classify an HTTP error answer of a mail API (Microsoft Graph, Gmail API) during ``stage``.

    ``error_code`` is Graph's ``error.code`` or Gmail's ``error.errors[].reason``.
    """
    reply = _Http(status, error_code.lower(), message.lower(), stage)
    return next((reason for rule, reason in _HTTP_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


def os_error(exc: BaseException) -> Reason:
    """Classify a failure to reach or talk to a server at the socket level."""
    if isinstance(exc, socket.gaierror):
        return Reason.DNS
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Reason.TLS
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return Reason.CONNECT_REFUSED
    return Reason.NETWORK

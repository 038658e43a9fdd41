"""Map what servers and sockets say to one failure reason.

Each protocol has an ordered table of rules, first match wins. The order asks "who is the
problem?": the client being limited, the credentials, the mailbox, the service, and last what
only this sender or message is refused for. A reply can carry words of several kinds (Yahoo's
``535 5.7.0 Too many bad auth attempts`` is both a limit and a credential refusal), so the order
is part of the contract: tests/classify_corpus.yaml holds the replies that pin it down.

SMTP replies are read by their enhanced status code in full (``5.1.90`` is a sending limit,
``5.1.10`` a missing recipient), then their basic code, because providers reuse basic codes:
550 can mean a full mailbox or basic auth switched off. A multi-line reply is one reply.
IMAP answers are read by their response code (``[AUTHENTICATIONFAILED]``), then their text;
POP3's ``-ERR`` by its extended response code (``[AUTH]``, ``[SYS/TEMP]``, RFC 2449 and 3206),
then its text.
HTTP answers (Microsoft Graph, Gmail API) are read by their error code, then their status.
Token endpoint answers (RFC 6749 section 5.2) are read by their status, the identity provider's
own code in the description (``AADSTS7000215``), then their ``error``.

Limits are read by what the words mean, not by one provider's phrase: a count, a rate, a
volume or a quota on what this client does ("too many", "per hour", "limit exceeded",
"maximum ... reached"), a tarpit or greylisting, or a temporary policy refusal (4.7.x) that asks
to come back later. A quota on the recipient's storage is the mailbox, a limit on one message's
size is that message, and a service that says it is down is ``unavailable``.
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
Pop3Stage = Literal["greeting", "tls", "auth", "mailbox", "message"]
"""``mailbox``: listing the maildrop (STAT, UIDL); ``message``: one message's command (TOP,
RETR, DELE) and QUIT, which commits deletions."""

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_QMAIL_CODE = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)\s*$")
_IMAP_CODE = re.compile(r"^\s*\[([A-Z][A-Z0-9-]*)")
_IMAP_CODE_TEXT = re.compile(r"^\s*\[[^\]]*\]")

# The client is being limited: counts, rates, volumes, quotas on sending, connections, commands.
_LIMITED = re.compile(
    "|".join(
        (
            # "too many connections" (Postfix, Exim), "too much mail" (Postfix), "receiving mail
            # too quickly" (Gmail 4.2.1), "too many recipients" (Exchange Online 4.5.3, qmail);
            # not "too many hops", a mail loop.
            r"too (?:many|much|quickly|fast)\b(?! hops)",
            # "an unusual rate of mail" (Gmail 4.7.28), "rate limited due to IP reputation"
            # (Exchange Online 4.7.650), "Rate limit hit" (Yahoo IMAP).
            r"\brate\b",
            # "Request is throttled" (Exchange Online IMAP), "Throttling failure" (Amazon SES).
            r"throttl",
            # "Server busy" (Gmail 4.4.5, Exchange Online 4.7.500), "All server ports are busy".
            r"\bbusy\b",
            # Tarpits and greylisting defer this client on purpose: "Greylisted for 5 minutes"
            # (Barracuda 4.7.1), "greylisted for 60 seconds by ZEROSPAM".
            r"tarpit|greylist",
            # "unexpected volume or user complaints" (Yahoo TSS04), "deferred due to excessive
            # volume" (iCloud 4.7.1).
            r"(?:unexpected|excessive|unusual) volume",
            # "Sender frequency limited" (QQ Mail).
            r"frequency limit",
            # Counts over time: "per hour message receive limit" (Exchange Online 5.2.121/122),
            # "Daily user sending limit exceeded" (Gmail 5.4.5).
            r"\bper[- ](?:second|minute|hour|day)\b|\bhourly\b|\bdaily\b",
            # A limit or quota on what this client does: "Peak SMTP relay limit" (Gmail),
            # "Submission quota exceeded" (Exchange Online), "SubmissionQuotaExceededException",
            # "Organization queue quota exceeded" (Outlook.com 4.7.3).
            r"(?:sending|send|relay|connection|recipient|concurren|bandwidth|command|submission"
            r"|session|login|queue)[\w' ]{0,24}?(?:limit|quota)",
            # A limit named as exceeded or reached: "has exceeded permitted limits within"
            # (Exchange Online 5.7.508), "You've exceeded your messaging limits" (SendGrid),
            # "concurrent connections per resource forest has exceeded a limit" (Exchange Online),
            # "recipient thread limit exceeded" (Exchange Online 4.3.2).
            r"\bexceed(?:s|ed)?\b[^.;]{0,40}?\blimits?\b",
            r"\blimits?\b (?:\w+ ){0,2}?(?:exceeded|reached)",
            # "Max message per connection reached" (Yahoo 421), "Maximum number of connections
            # from user+IP exceeded" (Dovecot).
            r"\bmax(?:imum)?\b[^.;]{0,48}?\b(?:reached|exceeded)",
        )
    )
)
# The recipient's storage is full: a quota on the mailbox, not on this client. "over quota"
# (Gmail 4.2.2), "Quota exceeded (mailbox for user is full)" (Dovecot), "Mailbox size limit
# exceeded" (Yandex 5.2.2), RFC 5321's 552 "exceeded storage allocation" (GMX, Web.de).
_STORAGE = re.compile(
    r"mailbox (?:is )?full|full mailbox|mailbox for user is full|mailbox size|over ?quota"
    r"|user quota|exceeded storage allocation|out of storage space"
)
# One message is refused for what it is: its size (RFC 3463 X.3.4 "message too big for
# system", X.2.3 "message length exceeds administrative limit"; Gmail 5.2.3 "exceeded Google's
# message size limits", qmail "exceeds my databytes limit (#5.3.4)") or a mail loop (X.4.6;
# Exchange Online 5.4.14 "Hop count exceeded", qmail "too many hops ... looping (#5.4.6)").
_SMTP_MESSAGE_REFUSED = frozenset({"5.3.4", "5.2.3", "5.4.6", "5.4.14"})
_MESSAGE_WORDS = re.compile(
    r"message size|size limit|message too (?:large|big)|mail loop|looping|too many hops|hop count"
)
# The service says it is down: "Service not available" (RFC 5321, Yahoo, Exchange), "Service
# unavailable - try again later" (iCloud 4.7.1), "the service is currently unavailable" (Yandex
# 4.7.1), "Resources temporarily unavailable" (Yahoo), "Temporary server error" (Exchange
# Online 4.7.0, Barracuda), "Temporary System Problem" (Gmail), "Temporary local problem"
# (Exim), "Space shortage" (Exim), "Insufficient system resources" (Exchange 4.3.1).
_DOWN = re.compile(
    r"(?:service|server|system|resources?)\b[^.;]{0,30}?\b(?:unavailable|not available|not active)"
    r"|system (?:problem|error)|server error|local problem|space shortage|insufficient system"
    r"|configuration error|shutting down|maintenance"
)
# Come back later, said with a policy code (RFC 3463 X.7.X): "421 4.7.0 Try again later,
# closing connection" (Gmail, a denial-of-service guard at HELO), "451 4.7.500-699 Access
# denied, please try again later" (Exchange Online, IP throttling), "451 4.7.1 Try again later"
# (Barracuda).
_TRY_LATER = re.compile(r"\btry (?:again )?later\b|\btry again\b|\bcome back later\b")
# The server demands TLS, or a newer TLS, of this client: "530 5.7.0 Must issue a STARTTLS
# command first" (Gmail, Postfix), "451 5.7.3 STARTTLS is required to send mail" (Exchange
# Online), "421 4.7.0 TLS required for RCPT domain" (Gmail), "421 4.7.66 TLS 1.0 and 1.1 are
# not supported" (Exchange Online), "535 STARTTLS required (#5.7.1)" (qmail).
_TLS_DEMANDED = re.compile(
    r"must issue a starttls|starttls (?:command )?(?:is )?required|\btls required\b"
    r"|\btls 1\.[01] (?:and 1\.[01] )?(?:is |are )?not supported"
)
# The service cannot serve now (Exchange's front end: "Server Unavailable. 15").
_UNAVAILABLE_WORDS = re.compile(r"\bunavailable\b|temporar|try again")
_AUTH_NOT_CONNECTED = "user is authenticated but not connected"

SMTP_SERVICE_NOT_AVAILABLE: Final = 421
"""RFC 5321: "Service not available, closing transmission channel"."""
SMTP_NO_SERVICE_HERE: Final = 554
"""RFC 5321 3.1: a greeting of 554 means the server will not serve this connection."""
SMTP_AUTH_TEMPORARY: Final = 454
SMTP_AUTH_CODES: Final = frozenset({530, 534, 535})
"""Authentication required, mechanism too weak, credentials invalid (RFC 4954)."""
SMTP_TEMPORARY: Final = range(400, 500)
"""RFC 5321 4.2.1: a 4yz reply is a transient negative completion."""

_SMTP_AUTH_REJECTED = frozenset({"5.7.3", "5.7.8", "5.7.9", "5.7.30", "5.7.57", "5.7.139"})
# Sending limits with codes of their own: Gmail's daily quota, Exchange Online's daily
# recipient limit, tenant external recipient rate limits, and per-hour limits between one sender
# and one recipient (5.2.121) or on what one recipient receives (5.2.122).
_SMTP_SENDING_LIMITS = frozenset({"5.4.5", "5.1.90", "5.7.232", "5.7.233", "5.2.121", "5.2.122"})
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


def _trailing_code(message: str) -> str | None:
    """qmail's way: the enhanced code last, in brackets (``451 qqt failure (#4.3.0)``)."""
    match = _QMAIL_CODE.search(message)
    return ".".join(match.groups()) if match else None


def _limited(words: str) -> bool:
    """Whether lowercase reply words name a limit on this client (not on the mailbox)."""
    return bool(_LIMITED.search(words)) and not _STORAGE.search(words)


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


def _policy_deferral(r: _Smtp) -> bool:
    """A temporary policy refusal (4.7.x) that asks to come back later, outside a login."""
    return (
        r.enhanced.startswith("4.7.")
        and r.stage in ("greeting", "send")
        and bool(_TRY_LATER.search(r.words))
        and not _DOWN.search(r.words)
    )


def _service_down(r: _Smtp) -> bool:
    """The service says it cannot serve now (RFC 5321 421, RFC 3463 4.3.x, its own words)."""
    return (
        r.code == SMTP_SERVICE_NOT_AVAILABLE
        or r.enhanced.startswith("4.3.")
        or (r.stage == "greeting" and r.code == SMTP_NO_SERVICE_HERE)
        or (
            r.stage in ("greeting", "send")
            and r.code in SMTP_TEMPORARY
            and bool(_DOWN.search(r.words))
        )
    )


_SMTP_RULES: Final[tuple[tuple[Callable[[_Smtp], bool], Reason], ...]] = (
    # TLS demanded of this client, before credentials: 530 5.7.0 "Must issue a STARTTLS command
    # first" (Gmail), 451 5.7.3 "STARTTLS is required" (Exchange Online), 421 4.7.66 TLS 1.0/1.1.
    (lambda r: bool(_TLS_DEMANDED.search(r.words)), Reason.TLS),
    # Credentials: 535 5.7.8 (Postfix, Gmail), 535 5.7.139 SMTP AUTH disabled (Exchange Online),
    # 550 5.7.30 basic auth off; also Yahoo's "535 5.7.0 Too many bad auth attempts".
    (
        lambda r: r.code in SMTP_AUTH_CODES or r.enhanced in _SMTP_AUTH_REJECTED,
        Reason.AUTH_REJECTED,
    ),
    # Sending quotas with codes of their own: Gmail 550 5.4.5, Exchange Online 5.1.90/5.7.233,
    # 554 5.2.121/5.2.122 per-hour limits.
    (lambda r: r.enhanced in _SMTP_SENDING_LIMITS, Reason.THROTTLED),
    # The recipient's storage, before limit words: "452 4.2.2 ... is over quota" (Gmail),
    # "552 5.2.2 Mailbox size limit exceeded" (Yandex).
    (lambda r: r.stage == "send" and bool(_STORAGE.search(r.words)), Reason.MAILBOX_UNAVAILABLE),
    # One message's size or loop, before limit words: "552 5.2.3 Your message exceeded Google's
    # message size limits" (Gmail), "554 too many hops, this message is looping (#5.4.6)".
    (
        lambda r: (
            r.stage == "send"
            and (r.enhanced in _SMTP_MESSAGE_REFUSED or bool(_MESSAGE_WORDS.search(r.words)))
        ),
        Reason.SEND_REJECTED,
    ),
    # Limits on this client by their words, whatever the code, 421 and 4.3.2 included
    # ("421 Max message per connection reached" from Yahoo, "432 4.3.2 recipient thread limit
    # exceeded" from Exchange Online), and 4.7.x deferrals that ask to come back later.
    (lambda r: _limited(r.words) or _policy_deferral(r), Reason.THROTTLED),
    # The service: 421 (RFC 5321), 4.3.x system status (RFC 3463: 4.3.2 "not accepting network
    # messages"; Postfix 4.3.5 configuration error, Gmail 4.3.0, qmail "qqt failure (#4.3.0)"),
    # a 554 greeting, and a 4yz saying the service is down ("451 Resources temporarily
    # unavailable" from Yahoo, "451 4.7.0 Temporary server error" from Exchange Online).
    (_service_down, Reason.UNAVAILABLE),
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
    enhanced = enhanced_code(message) or _trailing_code(message) or ""
    reply = _Smtp(code, enhanced, _reply_text(message).lower(), stage)
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
    prose: str
    """The words after the response code: ``[OVERQUOTA]`` alone says nothing of storage."""
    stage: ImapStage


_IMAP_RULES: Final[tuple[tuple[Callable[[_Imap], bool], Reason], ...]] = (
    # The client is limited: [LIMIT], Gmail's "BYE [ALERT] Too many simultaneous connections"
    # and "[OVERQUOTA] Account exceeded command or bandwidth limits", Dovecot's
    # "Maximum number of connections from user+IP exceeded", Cyrus "Too many open connections".
    # Exchange Online "NO Request is throttled. Suggested Backoff Time", Yahoo "NO [LIMIT]
    # CAPABILITY Rate limit hit.", and Dovecot's limit said with [UNAVAILABLE].
    (lambda r: r.code == "LIMIT" or _limited(r.prose), Reason.THROTTLED),
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
    words = text.lower()
    prose = _IMAP_CODE_TEXT.sub("", words, count=1)
    reply = _Imap(result.upper(), imap_response_code(text) or "", words, prose, stage)
    return next((reason for rule, reason in _IMAP_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


_POP3_CODE = re.compile(r"^\s*\[([A-Z][A-Z0-9/-]*)\]")
# Login refused because the connection is not encrypted: Dovecot "[AUTH] Plaintext
# authentication disallowed on non-secure (SSL/TLS) connections.", "Authentication not
# allowed until SSL/TLS is enabled."; with an extended code that would otherwise read as
# credentials.
_POP3_TLS_DEMANDED = re.compile(r"plaintext auth\w{0,20} disallowed|until ssl/tls")


def pop3_response_code(text: str) -> str | None:
    """The extended response code (RFC 2449, 3206) an ``-ERR`` text starts with, if any:
    ``AUTH``, ``SYS/TEMP``, ``SYS/PERM``, ``IN-USE``, ``LOGIN-DELAY``."""
    match = _POP3_CODE.match(text)
    return match.group(1).upper() if match else None


@dataclass(frozen=True)
class _Pop3:
    code: str
    words: str
    prose: str
    stage: Pop3Stage


_POP3_RULES: Final[tuple[tuple[Callable[[_Pop3], bool], Reason], ...]] = (
    # The client is limited: [LOGIN-DELAY] (RFC 2449: logins too close together), and
    # limit wording under any code: Gmail "[AUTH] Account exceeded pop command or bandwidth
    # limits", "Too many connections".
    (lambda r: r.code == "LOGIN-DELAY" or _limited(r.prose), Reason.THROTTLED),
    # The login needs TLS first.
    (lambda r: bool(_POP3_TLS_DEMANDED.search(r.words)), Reason.TLS),
    # [IN-USE] (RFC 2449): the maildrop is locked by another session; Cyrus "Unable to lock
    # maildrop".
    (lambda r: r.code == "IN-USE", Reason.MAILBOX_UNAVAILABLE),
    # [SYS/TEMP] at login (RFC 3206): Dovecot "Temporary authentication failure." (the user
    # database cannot be reached).
    (lambda r: r.code == "SYS/TEMP" and r.stage == "auth", Reason.AUTH_TEMPORARY),
    # [SYS/TEMP] elsewhere: "Internal error occurred" (Dovecot), an overloaded mail system.
    (lambda r: r.code == "SYS/TEMP", Reason.UNAVAILABLE),
    # [SYS/PERM] (RFC 3206): the maildrop cannot be opened or read (Cyrus "Unable to open
    # maildrop", "Could not read message file").
    (lambda r: r.code == "SYS/PERM", Reason.MAILBOX_UNAVAILABLE),
    # [AUTH] (RFC 3206): the credentials, or this account's access to POP3 (Gmail "Web login
    # required").
    (lambda r: r.code == "AUTH", Reason.AUTH_REJECTED),
    # No code, the service says it is down or asks to come back.
    (
        lambda r: bool(_DOWN.search(r.words) or _UNAVAILABLE_WORDS.search(r.words)),
        Reason.UNAVAILABLE,
    ),
    # The server hangs up: Dovecot "Disconnected for inactivity.".
    (lambda r: "disconnected" in r.words, Reason.NETWORK),
    # A greeting that is no +OK: turned away.
    (lambda r: r.stage == "greeting", Reason.UNAVAILABLE),
    # Any other refused login: Exchange "Logon failure: unknown user name or bad password.",
    # GMX "authentication failed".
    (lambda r: r.stage == "auth", Reason.AUTH_REJECTED),
    # STLS refused.
    (lambda r: r.stage == "tls", Reason.TLS),
)


def pop3_reply(text: str, stage: Pop3Stage) -> Reason:
    """Classify the text after ``-ERR`` received during ``stage``. A command refused for a
    message (no such message, an unknown command) is a protocol error."""
    words = text.lower()
    code = pop3_response_code(text) or ""
    prose = _POP3_CODE.sub("", words, count=1)
    reply = _Pop3(code, words, prose, stage)
    return next((reason for rule, reason in _POP3_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


HTTP_UNAUTHORIZED: Final = 401
HTTP_FORBIDDEN: Final = 403
HTTP_TOO_MANY_REQUESTS: Final = 429
HTTP_INSUFFICIENT_STORAGE: Final = 507
HTTP_BANDWIDTH_EXCEEDED: Final = 509
HTTP_CLIENT_ERRORS: Final = range(400, 500)
HTTP_SERVER_ERRORS: Final = frozenset({500, 502, 503, 504})
"""Gmail API: "An unexpected error occurred while processing the request", retry with backoff;
Graph: internal error, service unavailable (maintenance or overload), gateway timeout."""
TOKEN_SERVER_ERRORS: Final = range(500, 600)
"""Any 5xx of a token endpoint (RFC 9110 15.6): the identity service is failing."""

# Gmail API usage limits (403 and 429), Graph's per-mailbox limits (429 ApplicationThrottled),
# EWS throttling (ErrorServerBusy, with BackOffMilliseconds, in a SOAP fault).
_HTTP_LIMITS = frozenset(
    {
        "ratelimitexceeded",
        "userratelimitexceeded",
        "dailylimitexceeded",
        "applicationthrottled",
        "errorserverbusy",
    }
)
# EWS ResponseCodes of a service that cannot serve now (EWS reference, ResponseCode): the
# mailbox database or a store down or moving, Active Directory unavailable, a transient error.
_EWS_UNAVAILABLE = frozenset(
    {
        "errormailboxstoreunavailable",
        "errormailboxmoveinprogress",
        "errorinternalservertransienterror",
        "erroradunavailable",
        "errorconnectionfailed",
    }
)
# EWS ResponseCodes of a request the server cannot read: invalid against the schema, or of a
# schema version it does not speak (Exchange 2010 and older); SOAP faults, sent as HTTP 500.
_EWS_REQUEST_REFUSED = frozenset(
    {"errorschemavalidation", "errorinvalidserverversion", "errorinvalidrequest"}
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
        "errornonexistentmailbox",
    }
)
# Graph: not allowed to send as this mailbox, or submission blocked.
_HTTP_SEND_REFUSED = frozenset({"errorsendasdenied", "errormessagesubmissionblocked"})
# Graph ErrorAccessDenied, Gmail insufficientPermissions / authError / forbidden (delegation);
# EWS ErrorAccessDenied, ErrorAccountDisabled, and impersonation refused to the app.
_HTTP_ACCESS_DENIED = frozenset(
    {
        "erroraccessdenied",
        "insufficientpermissions",
        "autherror",
        "authorization_requestdenied",
        "erroraccountdisabled",
        "errorimpersonationdenied",
        "errorimpersonateuserdenied",
    }
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
    # Access refused by its own code, whatever the status: EWS refuses impersonation with a
    # SOAP fault, which SOAP 1.1 sends as HTTP 500.
    (lambda r: r.error in _HTTP_ACCESS_DENIED, Reason.AUTH_REJECTED),
    # EWS refusing the request itself (a SOAP fault, HTTP 500): not the service failing.
    (lambda r: r.error in _EWS_REQUEST_REFUSED, Reason.PROTOCOL_ERROR),
    # The service: 500, 502, 503, 504 (Gmail backendError, Graph ServiceUnavailable).
    # EWS: ErrorMailboxStoreUnavailable and its kin, in a response message (HTTP 200).
    (lambda r: r.status in HTTP_SERVER_ERRORS or r.error in _EWS_UNAVAILABLE, Reason.UNAVAILABLE),
    # Credentials and permissions: 401 (token invalid), 403 access denied, Gmail
    # "Delegation denied" for a service account without domain-wide delegation.
    (
        lambda r: r.status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN) or r.error in _HTTP_ACCESS_DENIED,
        Reason.AUTH_REJECTED,
    ),
    # Any other refusal of a message being sent.
    # EWS answers a refused CreateItem with HTTP 200 and the ResponseCode of its message.
    (
        lambda r: r.stage == "send" and (r.status in HTTP_CLIENT_ERRORS or r.error != ""),
        Reason.SEND_REJECTED,
    ),
)


def http_reply(status: int, error_code: str, message: str, stage: HttpStage) -> Reason:
    """Classify an HTTP error answer of a mail API (Microsoft Graph, Gmail API) during ``stage``.

    ``error_code`` is Graph's ``error.code`` or Gmail's ``error.errors[].reason``.
    """
    reply = _Http(status, error_code.lower(), message.lower(), stage)
    return next((reason for rule, reason in _HTTP_RULES if rule(reply)), Reason.PROTOCOL_ERROR)


# Token endpoint answers (RFC 6749 section 5.2), read in this order: the status, the identity
# provider's own code, the OAuth2 error. Sources: RFC 6749 section 5.2; Microsoft's "Microsoft
# Entra authentication and authorization error codes"; published answers in
# tests/classify_corpus.yaml.
_AADSTS = re.compile(r"\bAADSTS(\d{5,7})\b")
# Entra refuses this client for making too many requests: AADSTS90055 TenantThrottlingError
# ("There are too many incoming requests"), AADSTS50196 LoopDetected ("too many of the same
# request in too short a period").
_TOKEN_THROTTLED_AADSTS = frozenset({90055, 50196})
# Entra says the service is down for now: AADSTS50033 RetryableError ("a transient error"),
# AADSTS90006 ExternalServerRetryableError and AADSTS90090 GraphRetryableError ("The service is
# temporarily unavailable"), AADSTS90024 RequestBudgetExceededError ("A transient error has
# occurred. Try again."), AADSTS90033 MsodsServiceUnavailable (the directory service). Not
# AADSTS500011: the resource principal is missing from the tenant, a configuration error.
_TOKEN_UNAVAILABLE_AADSTS = frozenset({50033, 90006, 90024, 90033, 90090})
_TOKEN_UNAVAILABLE_ERRORS = frozenset({"temporarily_unavailable"})
"""RFC 6749 4.1.2.1, and Entra's token endpoint: "The server is temporarily too busy"."""
# The signed assertion's times are refused: this host's clock, not the credential.
# AADSTS700024 "Client assertion is not within its valid time range"; Google "Invalid JWT: Token
# must be a short-lived token (60 minutes) and in a reasonable timeframe".
_TOKEN_CLOCK_AADSTS = frozenset({700024})
_TOKEN_CLOCK_WORDS = re.compile(r"not within its valid time range|reasonable timeframe")
# The credentials are refused: a wrong, expired or unregistered secret or certificate
# (invalid_client: AADSTS7000215, 7000222, 700027), an application missing from the tenant or
# without domain-wide delegation (unauthorized_client: AADSTS700016; Google 401), a revoked or
# expired refresh token or a deleted key (invalid_grant: AADSTS70008, 700082; Google "Token has
# been expired or revoked.", "Invalid JWT Signature."; refresh tokens of Google apps in
# "Testing" last 7 days), a deleted Google client (deleted_client), and a refresh token that
# needs a person to sign in again (interaction_required).
_TOKEN_REFUSED_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "invalid_grant",
        "deleted_client",
        "interaction_required",
    }
)


def _aadsts(description: str) -> frozenset[int]:
    """The Entra error numbers a description names (``AADSTS7000215: ...``); an old answer
    names two (``AADSTS70002: Error validating credentials. AADSTS50012: ...``)."""
    return frozenset(int(number) for number in _AADSTS.findall(description))


def token_reply(status: int, error: str, description: str) -> Reason:
    """Classify a token endpoint's refusal: its HTTP status, ``error`` and ``error_description``.

    429 is ``throttled`` and 5xx ``unavailable`` whatever the body says; then the provider's own
    code; then the RFC 6749 error. Refused credentials are ``auth_rejected``; what is left
    (``invalid_request``, ``invalid_scope``, ``unsupported_grant_type``, ``invalid_resource``,
    anything unknown) is a fault of the token request itself, ``oauth_token``.
    """
    codes = _aadsts(description)
    error = error.strip().lower()
    if status == HTTP_TOO_MANY_REQUESTS or codes & _TOKEN_THROTTLED_AADSTS:
        return Reason.THROTTLED
    if status in TOKEN_SERVER_ERRORS or error in _TOKEN_UNAVAILABLE_ERRORS:
        return Reason.UNAVAILABLE
    if codes & _TOKEN_UNAVAILABLE_AADSTS:
        return Reason.UNAVAILABLE
    if codes & _TOKEN_CLOCK_AADSTS or _TOKEN_CLOCK_WORDS.search(description.lower()):
        return Reason.OAUTH_TOKEN
    if error in _TOKEN_REFUSED_ERRORS:
        return Reason.AUTH_REJECTED
    return Reason.OAUTH_TOKEN


JmapStage = Literal["auth", "send", "mailbox"]
"""``auth``: the session resource; ``send``: creating and submitting the probe;
``mailbox``: reading, querying and destroying messages."""
JMAP_ERROR_PREFIX: Final = "urn:ietf:params:jmap:error:"
"""Request-level problem types (RFC 8620, section 3.6.1) start with this."""
# Sources: RFC 8620 sections 3.6 (request-level problems, method errors) and 5.3 (SetError);
# RFC 8621 section 7.5 (EmailSubmission/set); published answers in tests/classify_corpus.yaml.
_JMAP_LIMITS = frozenset({"ratelimit"})
"""SetError ``rateLimit``: "too many objects of this type created recently"."""
_JMAP_CONCURRENCY = re.compile(r"maxconcurrent|concurrent")
"""A request-level ``limit`` on requests at once (``maxConcurrentRequests``,
``maxConcurrentUpload``) limits this client; any other (``maxSizeRequest``,
``maxCallsInRequest``) refuses a request too big, a fault of the request."""
_JMAP_SERVER = frozenset({"serverunavailable", "serverfail", "serverpartialfail"})
"""The server cannot serve now: "temporary ... in overload", "an unexpected error", "some,
but not all, changes ... were successfully made"."""
_JMAP_MAILBOX = frozenset(
    {"accountnotfound", "accountnotsupportedbymethod", "accountreadonly", "overquota"}
)
"""The account or its storage: it does not exist (to these credentials), cannot do mail, is
read-only, or is full."""
_JMAP_RECIPIENT = frozenset({"invalidrecipients"})
"""EmailSubmission: a recipient address the server refuses (the 5.1.x of SMTP)."""
_JMAP_SEND_REFUSED = frozenset(
    {"forbiddenfrom", "forbiddentosend", "forbiddenmailfrom", "toomanyrecipients", "toolarge"}
)
"""EmailSubmission: this sender or this message may not be sent."""
_JMAP_KNOWN = frozenset(
    {
        "unknowncapability",
        "notjson",
        "notrequest",
        "unknownmethod",
        "invalidarguments",
        "invalidresultreference",
        "requesttoolarge",
        "cannotcalculatechanges",
        "unsupportedfilter",
        "unsupportedsort",
        "anchornotfound",
        "notfound",
        "invalidproperties",
        "invalidpatch",
        "willdestroy",
        "singleton",
        "norecipients",
        "invalidemail",
        "blobnotfound",
        "toomanykeywords",
        "toomanymailboxes",
    }
)
"""The RFCs' other types: faults of the request, whatever their words say."""
SMTP_PERMANENT: Final = 550
SMTP_TRANSIENT: Final = 450
"""The basic code an SMTP reply quoted without one is read with, by its enhanced class."""


def jmap_reply(status: int, error_type: str, stage: JmapStage, words: str = "") -> Reason:
    """Classify a JMAP refusal during ``stage``: the HTTP status (0 for a method error or a
    SetError in a 200 answer), the error's ``type`` (a request-level problem type with or
    without its ``urn:ietf:params:jmap:error:`` prefix, a method error, a SetError) and its
    words (``description``, ``detail``).

    Limits first (429, a ``limit`` on concurrent requests, ``rateLimit``), then the service
    (5xx, ``server*``), the account and its storage, the sending, the credentials (401, a 403
    answer). A type outside the RFCs whose words are an SMTP reply (Cyrus 3.6's
    ``smtpProtocolError``: the relay's ``5.7.1 ... Relay access denied``) is read as that
    reply to a submission. Any other type (``unknownMethod``, ``invalidArguments``,
    ``notRequest``, ...) is a fault of the request, ``protocol_error``.
    """
    kind = error_type.strip().removeprefix(JMAP_ERROR_PREFIX).lower()
    if status == HTTP_TOO_MANY_REQUESTS or kind in _JMAP_LIMITS:
        return Reason.THROTTLED
    if kind == "limit":
        concurrent = _JMAP_CONCURRENCY.search(words.lower())
        return Reason.THROTTLED if concurrent else Reason.PROTOCOL_ERROR
    if status in HTTP_SERVER_ERRORS or kind in _JMAP_SERVER:
        return Reason.UNAVAILABLE
    if kind in _JMAP_MAILBOX or kind in _JMAP_RECIPIENT:
        return Reason.MAILBOX_UNAVAILABLE
    if kind in _JMAP_SEND_REFUSED or (stage == "send" and kind == "forbidden"):
        return Reason.SEND_REJECTED
    if status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return Reason.AUTH_REJECTED
    if kind == "forbidden":
        # An ACL forbids reading or changing the mailbox: logged in, the mailbox is closed.
        return Reason.MAILBOX_UNAVAILABLE
    enhanced = enhanced_code(words)
    if enhanced is not None and kind not in _JMAP_KNOWN:
        basic = SMTP_PERMANENT if enhanced.startswith("5") else SMTP_TRANSIENT
        return smtp_reply(basic, words, "send")
    return Reason.PROTOCOL_ERROR


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

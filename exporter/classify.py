"""Map what servers and sockets say to one failure reason.

SMTP replies are read by their enhanced status code first (``5.7.8``), then their basic code,
because providers reuse basic codes: 550 can mean a full mailbox or basic auth switched off.
IMAP answers are read by their response code (``[AUTHENTICATIONFAILED]``), then their text.
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Literal

from exporter.outcome import Reason

SmtpStage = Literal["greeting", "tls", "auth", "send"]
ImapStage = Literal["greeting", "tls", "auth", "select", "mailbox"]

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_IMAP_CODE = re.compile(r"^\s*\[([A-Z][A-Z0-9-]*)")

_SMTP_AUTH_REJECTED = {"5.7.3", "5.7.8", "5.7.9", "5.7.30", "5.7.57", "5.7.139"}
_THROTTLE_WORDS = ("too many", "maximum number of connections", "rate limit", "try again later")

_IMAP_AUTH_REJECTED = {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "CONTACTADMIN"}
_IMAP_MAILBOX = {"OVERQUOTA", "NONEXISTENT", "NOPERM", "TRYCREATE", "INUSE"}


def enhanced_code(message: str) -> str | None:
    """The RFC 3463 code a reply text starts with, as ``x.y.z``, if any."""
    match = _ENHANCED.match(message)
    return ".".join(match.groups()) if match else None


def smtp_reply(code: int, message: str, stage: SmtpStage) -> Reason:
    """Classify a negative SMTP reply received during ``stage``."""
    enhanced = enhanced_code(message) or ""
    lowered = message.lower()
    if code == 421 or enhanced == "4.3.2" or "too many" in lowered:
        return Reason.THROTTLED
    if enhanced in _SMTP_AUTH_REJECTED:
        return Reason.AUTH_REJECTED
    if stage == "auth":
        if code == 454 or enhanced.startswith("4."):
            return Reason.AUTH_TEMPORARY
        return Reason.AUTH_REJECTED
    if stage == "send":
        if code in (530, 534, 535):
            return Reason.AUTH_REJECTED
        if enhanced.startswith(("5.1.", "4.1.")) or enhanced in ("5.2.2", "4.2.2"):
            return Reason.MAILBOX_UNAVAILABLE
        return Reason.SEND_REJECTED
    if stage == "greeting" and code == 554:
        return Reason.CONNECT_REFUSED
    if stage == "tls":
        return Reason.TLS
    return Reason.PROTOCOL_ERROR


def imap_response_code(text: str) -> str | None:
    """The bracketed response code an IMAP status text starts with, if any."""
    match = _IMAP_CODE.match(text)
    return match.group(1) if match else None


def imap_reply(result: str, text: str, stage: ImapStage) -> Reason:
    """Classify a tagged ``NO``/``BAD`` (or a ``BYE``) received during ``stage``."""
    code = imap_response_code(text) or ""
    lowered = text.lower()
    if code == "LIMIT" or any(word in lowered for word in _THROTTLE_WORDS):
        return Reason.THROTTLED
    if result == "BYE":
        if code == "UNAVAILABLE":
            return Reason.THROTTLED
        return Reason.CONNECT_REFUSED if stage == "greeting" else Reason.NETWORK
    if code == "SERVERBUG" or result == "BAD":
        return Reason.PROTOCOL_ERROR
    if code in _IMAP_AUTH_REJECTED:
        return Reason.AUTH_REJECTED
    if code == "UNAVAILABLE":
        return Reason.AUTH_TEMPORARY if stage == "auth" else Reason.THROTTLED
    if code in _IMAP_MAILBOX or stage in ("select", "mailbox"):
        return Reason.MAILBOX_UNAVAILABLE
    if stage == "auth":
        return Reason.AUTH_REJECTED
    if stage == "greeting":
        return Reason.CONNECT_REFUSED
    if stage == "tls":
        return Reason.TLS
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

"""Reading a bounce that a probe message caused.

A message is believed to be a bounce in two forms only, both written by a mail system, and
only through the header of the message it returns:

- an RFC 3464 delivery status report (``multipart/report; report-type=delivery-status``):
  its ``message/delivery-status`` part says what happened to each recipient (``Status:
  5.1.1``, ``Action: failed``, ``Diagnostic-Code: smtp; 550 5.1.1 ...``), and it returns the
  message's header (``text/rfc822-headers``) or the whole message (``message/rfc822``).
  Postfix, Sendmail, Exchange and Gmail write this form.
- qmail's failure notice (qmail writes no report): from ``MAILER-DAEMON``, beginning
  ``Hi. This is the qmail-send program at``, the reasons, then the message itself after
  ``--- Below this line is a copy of the message.``

The probe id is read from the returned header only: never from the report's prose, nor from
the report's own header. Whoever a message comes from, a person's message quoting or
forwarding a probe is no bounce. The caller still verifies the id.

A message that cannot be read within bounds (too many MIME parts, too deeply nested), or that
the email package cannot make sense of, is no bounce either: it is skipped with a log line
naming the bound or the error, never the message's content. Pure but for that line.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import Compat32
from email.utils import parseaddr
from typing import Final

from exporter.message import PROBE_HEADER

log = logging.getLogger(__name__)

MAX_REPORT: Final = 256 * 1024
"""Bytes of a report read: the quoted header and the status come first."""
MAX_TYPED_PARTS: Final = 64
"""Content-Type fields a report may carry. Each level of MIME nesting needs one, and the
email package parses nesting by recursion: thousands of levels exhaust the stack."""
MAX_MULTIPARTS: Final = 8
"""``multipart`` types a report may declare. The email package checks every line against the
boundary of every enclosing multipart, so its time grows with their number (a real report
has two or three)."""
MAX_FIELD: Final = 4096
"""Characters of a header field's value read: the email package parses parameters in time
quadratic in a field's length."""
MAX_TEXT: Final = 500
"""Characters of the diagnostic kept."""
PERMANENT: Final = 500
"""Reply codes from here on are permanent failures (RFC 5321 4.2.1)."""

REPORT_TYPE: Final = "delivery-status"
STATUS_PART: Final = "message/delivery-status"
RETURNED_HEADER: Final = "text/rfc822-headers"
RETURNED_MESSAGE: Final = "message/rfc822"
QMAIL_GREETING: Final = "Hi. This is the qmail-send program at "
QMAIL_COPY: Final = "--- Below this line is a copy of the message."
MAILER_DAEMON: Final = "mailer-daemon"

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([245]\d\d)\b")
_QMAIL_STATUS = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_QMAIL_REMOTE = re.compile(r"Remote host said: ([245]\d\d)\b")
_TYPE_FIELD = re.compile(rb"(?:^|[\r\n])content-type[ \t]*:", re.IGNORECASE)
_MULTIPART_FIELD = re.compile(rb"(?:^|[\r\n])content-type[ \t]*:\s*multipart", re.IGNORECASE)


@dataclass(frozen=True)
class Bounce:
    """What a report says about one probe message."""

    probe_id: str
    status: str
    """The enhanced status code (``5.1.1``), or "" if the report gives none."""
    code: int
    """The SMTP reply code the remote server gave, or one implied by the status class."""
    text: str
    """The diagnostic in the server's own words (or the report's, if it quotes none)."""
    failed: bool
    """Delivery failed for good (a 5.x status or ``Action: failed``), rather than a delay or
    a relay notice."""


class _Unreadable(Exception):
    """A message beyond the bounds this reader keeps to; the text names the bound."""


class _BoundedFields(Compat32):
    """compat32, but a header field's value is read as plain text of at most
    :data:`MAX_FIELD` characters (8-bit bytes as UTF-8, undecodable ones as U+FFFD)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        text = str(value)[:MAX_FIELD]
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace")


_POLICY: Final = _BoundedFields()


def read(raw: bytes) -> Bounce | None:
    """The bounce ``raw`` is, if it is one in a form believed (see the module docstring) and
    returns a header carrying a probe id; else None. Never raises."""
    try:
        return _read(raw[:MAX_REPORT])
    except _Unreadable as bound:
        reason = str(bound)
    except Exception as error:  # hostile input: whatever the email package raises on it
        reason = f"the email package raised {type(error).__name__}"
    log.warning("a message that mentions a probe id was skipped as unreadable: %s", reason)
    return None


def _read(raw: bytes) -> Bounce | None:
    if len(_TYPE_FIELD.findall(raw)) > MAX_TYPED_PARTS:
        raise _Unreadable(f"more than {MAX_TYPED_PARTS} Content-Type fields")
    if len(_MULTIPART_FIELD.findall(raw)) > MAX_MULTIPARTS:
        raise _Unreadable(f"more than {MAX_MULTIPARTS} multipart types")
    message = message_from_bytes(raw, policy=_POLICY)
    if message.get(PROBE_HEADER) is not None:
        return None  # the probe itself, or a copy: a report is not the probe
    if message.get_content_type() == "multipart/report":
        return _from_report(message)
    return _from_qmail(message)


def _from_report(message: Message) -> Bounce | None:
    """An RFC 3464 report: its parts are read one level down, where RFC 3464 puts them."""
    if _param(message, "report-type") != REPORT_TYPE:
        return None
    parts = _children(message)
    probe_id: str | None = None
    fields: dict[str, str] = {}
    for part in parts:
        kind = part.get_content_type()
        if kind == RETURNED_HEADER and probe_id is None:
            probe_id = _probe_id(HeaderParser(policy=_POLICY).parsestr(_text(part).lstrip()))
        elif kind == RETURNED_MESSAGE and probe_id is None:
            returned = _children(part)
            probe_id = _probe_id(returned[0]) if returned else None
        elif kind == STATUS_PART and not fields:
            fields = _recipient_fields(part)
    if probe_id is None:
        return None
    diagnostic = fields.get("diagnostic-code", "")
    if ";" in diagnostic:
        diagnostic = diagnostic.split(";", 1)[1]
    text = " ".join(diagnostic.split()) or _explanation(parts)
    status = _first_status(fields.get("status", "")) or _first_status(text)
    reply = _REPLY_CODE.search(diagnostic)
    code = int(reply.group(1)) if reply else _implied_code(status)
    action = fields.get("action", "").lower()
    failed = action == "failed" or (not action and code >= PERMANENT)
    return Bounce(probe_id=probe_id, status=status, code=code, text=text[:MAX_TEXT], failed=failed)


def _from_qmail(message: Message) -> Bounce | None:
    """qmail's failure notice: sent only once qmail has given up, so always a failure."""
    if message.is_multipart() or not _from_mailer_daemon(message):
        return None
    lines = [line.rstrip() for line in _text(message).lstrip().splitlines()]
    if not lines or not lines[0].startswith(QMAIL_GREETING) or QMAIL_COPY not in lines:
        return None
    copy = lines.index(QMAIL_COPY)
    returned = "\n".join(lines[copy + 1 :]).lstrip()
    if not returned.lower().startswith("return-path:"):
        return None  # qmail puts the envelope sender first
    probe_id = _probe_id(HeaderParser(policy=_POLICY).parsestr(returned))
    if probe_id is None:
        return None
    reasons = lines[lines.index("") + 1 : copy] if "" in lines[:copy] else []
    text = " ".join(" ".join(reasons).split())
    qmail_status = _QMAIL_STATUS.search(text)
    remote = _QMAIL_REMOTE.search(text)
    said = text[remote.end() :] if remote else ""
    status = qmail_status.group(1) if qmail_status else _first_status(said)
    code = int(remote.group(1)) if remote else _implied_code(status)
    return Bounce(probe_id=probe_id, status=status, code=code, text=text[:MAX_TEXT], failed=True)


def _from_mailer_daemon(message: Message) -> bool:
    """Whether the From address is MAILER-DAEMON's (the whole local part, not a mention)."""
    address = parseaddr(str(message.get("From", "")))[1]
    return address.rpartition("@")[0].lower() == MAILER_DAEMON


def _children(part: Message) -> list[Message]:
    """The parts one level down (a ``message/rfc822`` part's is the returned message)."""
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if part.is_multipart() else []


def _param(message: Message, name: str) -> str:
    value = message.get_param(name)
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    return str(value or "").strip().lower()


def _probe_id(header: Message) -> str | None:
    """The probe id a (returned) header carries, whitespace and folding removed."""
    value = header.get(PROBE_HEADER)
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def _recipient_fields(part: Message) -> dict[str, str]:
    """The first recipient's fields of a ``message/delivery-status`` part, names lower-cased:
    the email package reads its blocks (per message, then per recipient) as headers."""
    blocks = _children(part)
    for block in blocks[1:] or blocks:
        if block.get("Status"):
            return {name.lower(): " ".join(str(value).split()) for name, value in block.items()}
    return {}


def _explanation(parts: list[Message]) -> str:
    """The report's human-readable part (its first), as text: plain, or the plain text of
    an alternative."""
    first = parts[:1]
    for candidate in (*first, *(child for part in first for child in _children(part))):
        if candidate.get_content_type() == "text/plain":
            return " ".join(_text(candidate).split())[:MAX_TEXT]
    return ""


def _implied_code(status: str) -> int:
    """The reply code a status's class implies, for reports that quote none."""
    return {"2": 250, "4": 450}.get(status[:1], 550)


def _first_status(text: str) -> str:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else ""


def _text(part: Message) -> str:
    """A leaf part's content as text, in its charset where Python knows it as one, else as
    UTF-8 (``unknown-8bit`` and its like are common in reports); undecodable bytes as
    U+FFFD."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown, no text encoding, or strict-only (idna)
        return payload.decode("utf-8", "replace")

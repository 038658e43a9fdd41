"""Reading a delivery status notification (a bounce) that a probe message caused.

A bounce refers to the message it reports on by quoting its header: RFC 3464 reports
(``multipart/report; report-type=delivery-status``) carry it in a ``text/rfc822-headers`` or
``message/rfc822`` part and say what happened in a ``message/delivery-status`` part
(``Status: 5.1.1``, ``Diagnostic-Code: smtp; 550 5.1.1 ...``). Exchange's and Gmail's
non-delivery reports follow that form; older or odder ones put the quoted header and the
status in plain text, which is read as a fallback. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from typing import Final

from exporter.message import PROBE_HEADER

MAX_REPORT: Final = 256 * 1024
PERMANENT: Final = 500
"""Reply codes from here on are permanent failures (RFC 5321 4.2.1)."""
"""Bytes of a report read: the quoted header and the status come first."""

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([245]\d\d)\b")
_QUOTED_ID = re.compile(rf"^{re.escape(PROBE_HEADER)}:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


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


def read(raw: bytes) -> Bounce | None:
    """The bounce ``raw`` reports, if it is one and quotes a probe id; else None."""
    message = message_from_bytes(raw[:MAX_REPORT], policy=policy.compat32)
    if not _is_report(message) and not _from_a_mail_system(message):
        return None
    probe_id = _quoted_probe_id(message, raw)
    if probe_id is None:
        return None
    fields = _delivery_status(message)
    diagnostic = fields.get("diagnostic-code", "")
    if ";" in diagnostic:
        diagnostic = diagnostic.split(";", 1)[1]
    text = " ".join(diagnostic.split()) or _plain_text(message)
    status_field = fields.get("status", "")
    status = _first_status(status_field) or _first_status(text)
    reply = _REPLY_CODE.search(diagnostic)
    if reply is not None:
        code = int(reply.group(1))
    elif status:
        code = {"5": 550, "4": 450, "2": 250}[status[0]]
    else:
        code = 550
    if not status and not reply and not _is_report(message):
        return None
    action = fields.get("action", "").lower()
    failed = action == "failed" or (not action and code >= PERMANENT)
    return Bounce(probe_id=probe_id, status=status, code=code, text=text[:500], failed=failed)


def _is_report(message: Message) -> bool:
    return message.get_content_type() == "multipart/report"


def _from_a_mail_system(message: Message) -> bool:
    """Whether a message that is no RFC 3464 report still comes from a mail system: the null
    sender, or a mailer daemon or postmaster (older MTAs' plain-text bounces)."""
    sender = f"{message.get('Return-Path', '')} {message.get('From', '')}".lower()
    return "<>" in sender or "mailer-daemon" in sender or "postmaster" in sender


def _quoted_probe_id(message: Message, raw: bytes) -> str | None:
    """The probe id in the quoted header of the reported message (never this message's own
    header: a report is not the probe)."""
    if message.get(PROBE_HEADER):
        return None
    for part in message.walk():
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822-headers"):
            found = _QUOTED_ID.search(_text(part))
            if found:
                return found.group(1)
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            for quoted in inner if isinstance(inner, list) else []:
                if isinstance(quoted, Message) and quoted.get(PROBE_HEADER):
                    return str(quoted.get(PROBE_HEADER)).strip()
    found = _QUOTED_ID.search(raw[:MAX_REPORT].decode("utf-8", errors="replace"))
    return found.group(1) if found else None


def _delivery_status(message: Message) -> dict[str, str]:
    """The first recipient's fields of the ``message/delivery-status`` part, lower-cased."""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if isinstance(blocks, list):
            for block in blocks[1:] or blocks:
                if isinstance(block, Message) and block.get("Status"):
                    return {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
        text = _text(part)
        fields = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in text.splitlines())
            if value
        )
        return fields
    return {}


def _plain_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return " ".join(_text(part).split())[:500]
    return ""


def _first_status(text: str) -> str:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else ""


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return str(part.get_payload())

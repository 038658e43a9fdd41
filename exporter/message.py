"""The probe message: what the exporter sends to itself, and how it recognises it."""

from __future__ import annotations

import secrets
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Final

PROBE_HEADER: Final = "X-Mailbox-Probe-Id"


def new_probe_id() -> str:
    """A fresh id: 24 hex digits, an IMAP atom that never needs quoting or encoding."""
    return secrets.token_hex(12)


def build(*, target: str, mail_from: str, mail_to: str, probe_id: str) -> bytes:
    """A small plain-text message that says what it is, and asks for no auto-replies."""
    message = EmailMessage(policy=SMTP)
    message["From"] = mail_from
    message["To"] = mail_to
    message["Subject"] = f"mailbox-exporter probe {probe_id}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{probe_id}@mailbox-exporter.invalid>"
    message[PROBE_HEADER] = probe_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(
        f"This message checks that mail reaches this mailbox (target {target}).\n"
        "mailbox-exporter deletes it as soon as it arrives; it needs no action.\n"
    )
    return message.as_bytes()

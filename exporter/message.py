"""The probe message: what the exporter sends to itself, and how it recognises it."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Final

PROBE_HEADER: Final = "X-Mailbox-Probe-Id"


KEY_BYTES: Final = 32
NONCE_LENGTH: Final = 16
MAC_LENGTH: Final = 24
LATE_ARRIVAL_WINDOW: Final = 7 * 24 * 3600.0
"""How long after it was made a probe id still verifies (seconds): a message that arrives
later, or an id replayed later, is a lookalike, left alone."""
CLOCK_SKEW: Final = 300.0
"""How far in the future an id's time may lie and still verify: replicas sharing a key may
disagree on the time by this much."""
_HEX = re.compile(r"[0-9a-f]+")
"""Ids are lower-case hex: anything else (a forged header) fails before the comparison."""
_TIME_DIGITS: Final = 8
MAX_LINE: Final = 998
"""RFC 5322's limit: header fields carrying an id stay on one line, as the fast path writes
them, so that every reader sees the id whole."""
"""Seconds since the epoch in hex: eight digits last until 2106."""


class ProbeIds:
    """Makes and checks probe ids: ``PREFIX.TIME.NONCE.MAC``.

    PREFIX names the key (so a search finds this exporter's messages and no one else's), TIME
    is when the id was made (seconds since the epoch, hex) and MAC is an HMAC over the target
    name, TIME and NONCE. Only an exporter holding the key can make an id that verifies, so a
    message is deleted only if this exporter provably sent it to this target, within
    :data:`LATE_ARRIVAL_WINDOW`. The key is random (:mod:`exporter.probekey`): nothing in an id
    is a function of a mailbox's credentials. Ids are IMAP atoms: they never need quoting or
    encoding.
    """

    def __init__(self, key: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self.key = key if key is not None else secrets.token_bytes(KEY_BYTES)
        self.prefix = hmac.new(self.key, b"mailbox-exporter prefix", hashlib.sha256).hexdigest()[
            :12
        ]
        self._clock = clock

    def new(self, target: str) -> str:
        made = f"{int(self._clock()):0{_TIME_DIGITS}x}"
        nonce = secrets.token_hex(NONCE_LENGTH // 2)
        return f"{self.prefix}.{made}.{nonce}.{self._mac(target, made, nonce)}"

    def verify(self, probe_id: str, target: str) -> bool:
        """Whether this exporter made ``probe_id`` for ``target``, within the window."""
        parts = probe_id.split(".")
        if len(parts) != 4:
            return False
        prefix, made, nonce, mac = parts
        if not (
            prefix == self.prefix
            and len(made) == _TIME_DIGITS
            and len(nonce) == NONCE_LENGTH
            and len(mac) == MAC_LENGTH
            and _HEX.fullmatch(made + nonce + mac) is not None
            and hmac.compare_digest(mac, self._mac(target, made, nonce))
        ):
            return False
        age = self._clock() - int(made, 16)
        return -CLOCK_SKEW <= age <= LATE_ARRIVAL_WINDOW

    def _mac(self, target: str, made: str, nonce: str) -> str:
        message = f"{target}\0{made}\0{nonce}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:MAC_LENGTH]


_POLICY: Final = SMTP.clone(max_line_length=MAX_LINE)


def build(*, target: str, mail_from: str, mail_to: str, probe_id: str) -> bytes:
    """A small plain-text message that says what it is, and asks for no auto-replies."""
    fields = (target, mail_from, mail_to, probe_id)
    if all(value.isascii() and len(value) < 400 for value in fields):
        return _from_template(target, mail_from, mail_to, probe_id)
    message = EmailMessage(policy=_POLICY)
    message["From"] = mail_from
    message["To"] = mail_to
    message["Subject"] = subject(probe_id)
    message["Date"] = formatdate(usegmt=True)
    for name, value in headers(probe_id):
        message[name] = value
    message.set_content(body(target))
    return message.as_bytes()


def subject(probe_id: str) -> str:
    return f"mailbox-exporter probe {probe_id}"


def headers(probe_id: str) -> tuple[tuple[str, str], ...]:
    """The header fields that mark a probe message, beyond From, To, Subject and Date."""
    return (
        ("Message-ID", f"<{probe_id}@mailbox-exporter.invalid>"),
        (PROBE_HEADER, probe_id),
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
    )


def body(target: str) -> str:
    return (
        f"This message checks that mail reaches this mailbox (target {target}).\n"
        "mailbox-exporter deletes it as soon as it arrives; it needs no action.\n"
    )


def _from_template(target: str, mail_from: str, mail_to: str, probe_id: str) -> bytes:
    """The same message as the email package builds, written out directly: building it with
    the email package costs more CPU than the rest of a round trip together. ASCII only."""
    text = body(target).replace("\n", "\r\n")
    return (
        f"From: {mail_from}\r\n"
        f"To: {mail_to}\r\n"
        f"Subject: {subject(probe_id)}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers(probe_id))
        + 'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 7bit\r\n"
        "MIME-Version: 1.0\r\n"
        "\r\n"
        f"{text}"
    ).encode("ascii")

"""The probe message: what the exporter sends to itself, and how it recognises it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import Final

PROBE_HEADER: Final = "X-Mailbox-Probe-Id"


KEY_BYTES: Final = 32
NONCE_LENGTH: Final = 16
MAC_LENGTH: Final = 24
_HEX = re.compile(r"[0-9a-f]+")
"""Ids are lower-case hex: anything else (a forged header) fails before the comparison."""


class ProbeIds:
    """Makes and checks probe ids: ``PREFIX.NONCE.MAC``.

    PREFIX names the key (so a search finds this exporter's messages and no one else's), and
    MAC is an HMAC over the target name and NONCE. Only an exporter holding the key can make
    an id that verifies, so a message is deleted only if this exporter provably sent it to
    this target. Ids are IMAP atoms: they never need quoting or encoding.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(KEY_BYTES)
        self.prefix = hashlib.sha256(b"mailbox-exporter probe key " + self.key).hexdigest()[:12]

    def new(self, target: str) -> str:
        nonce = secrets.token_hex(NONCE_LENGTH // 2)
        return f"{self.prefix}.{nonce}.{self._mac(target, nonce)}"

    def verify(self, probe_id: str, target: str) -> bool:
        prefix, _, rest = probe_id.partition(".")
        nonce, _, mac = rest.partition(".")
        return (
            prefix == self.prefix
            and len(nonce) == NONCE_LENGTH
            and len(mac) == MAC_LENGTH
            and _HEX.fullmatch(nonce + mac) is not None
            and hmac.compare_digest(mac, self._mac(target, nonce))
        )

    def _mac(self, target: str, nonce: str) -> str:
        message = f"{target}\0{nonce}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:MAC_LENGTH]


KDF_COST: Final = 2**14
"""scrypt's cost (N) when a key is derived from a target's secrets: about 50 ms once per
target, so that the probe ids a mailbox shows make guessing a weak password slow."""
KDF_BLOCK_SIZE: Final = 8
KDF_SALT: Final = b"mailbox-exporter probe key\0"


def derived_key(target: str, secrets: Iterable[str]) -> bytes:
    """The key of a target's probe ids, derived from its configured secrets: the same in every
    process and replica that runs the same configuration, so that a probe sent before a
    restart still verifies and is cleaned. Slow on purpose (scrypt)."""
    material = "\0".join(sorted(secrets)).encode()
    return hashlib.scrypt(
        material,
        salt=KDF_SALT + target.encode(),
        n=KDF_COST,
        r=KDF_BLOCK_SIZE,
        p=1,
        dklen=KEY_BYTES,
        maxmem=256 * KDF_COST * KDF_BLOCK_SIZE,
    )


class ProbeKeys:
    """Where each target's probe-id key comes from: ``global.probe_key_file`` if configured
    (one key for every target), else derived from the target's secrets. A target without any
    secret gets a key of this process only."""

    def __init__(self, fixed: ProbeIds | None) -> None:
        self.fixed = fixed
        self._derived: dict[tuple[str, str], ProbeIds] = {}

    async def ids(self, target: str, secrets: Iterable[str]) -> ProbeIds:
        if self.fixed is not None:
            return self.fixed
        values = tuple(sorted(secrets))
        digest = hashlib.sha256("\0".join(values).encode()).hexdigest()
        found = self._derived.get((target, digest))
        if found is None:
            key = await asyncio.to_thread(derived_key, target, values) if values else None
            found = self._derived.setdefault((target, digest), ProbeIds(key))
        return found


def load_key(path: Path) -> bytes:
    """The key in ``path``, made (random, readable by the owner only) if the file is missing.

    Raises OSError or ValueError with a message fit for the user.
    """
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        key = secrets.token_bytes(KEY_BYTES)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(key.hex() + "\n")
        os.replace(temporary, path)
        return key
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} does not hold a hex key") from None
    if len(key) < 16:
        raise ValueError(f"{path} holds a key shorter than 16 bytes")
    return key


def build(*, target: str, mail_from: str, mail_to: str, probe_id: str) -> bytes:
    """A small plain-text message that says what it is, and asks for no auto-replies."""
    fields = (target, mail_from, mail_to, probe_id)
    if all(value.isascii() and len(value) < 400 for value in fields):
        return _from_template(target, mail_from, mail_to, probe_id)
    message = EmailMessage(policy=SMTP)
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

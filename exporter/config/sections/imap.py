"""The ``imap`` section: the mailbox watched over IMAP (:mod:`exporter.transports.imap`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from exporter.config.model import ServerConfig, TlsMode
from exporter.config.reader import Reader, Section, join
from exporter.config.sections.server import SERVER_KEYS, read_server


@dataclass(frozen=True)
class ImapConfig(ServerConfig):
    mailbox: str = "INBOX"
    idle: bool | None = None
    """True: watch with IDLE only; False: poll only; None (unset): poll for the first seconds
    after sending, then IDLE (see :class:`exporter.transports.imap.ImapReceiver`)."""
    poll_interval: float = 1.0


KEYS: Final = (*SERVER_KEYS, "mailbox", "idle", "poll_interval")
PORTS: Final[dict[TlsMode, int]] = {"starttls": 143, "implicit": 993, "none": 143}


def read_section(r: Reader, data: dict[str, Any], path: str) -> ImapConfig:
    return ImapConfig(
        **read_server(r, data, path, "imap", default_tls="implicit", ports=PORTS),
        mailbox=r.get(data, "mailbox", path, r.string, "INBOX"),
        idle=None if data.get("idle") is None else r.boolean(data["idle"], join(path, "idle")),
        poll_interval=r.get(data, "poll_interval", path, r.duration, 1.0),
    )


SECTION: Final = Section(KEYS, read_section, receives=True)

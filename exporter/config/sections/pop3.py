"""The ``pop3`` section: the mailbox watched over POP3 (:mod:`exporter.transports.pop3`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from exporter.config.model import ServerConfig, TlsMode
from exporter.config.reader import Reader, Section
from exporter.config.sections.server import SERVER_KEYS, read_server

POLL_INTERVAL: Final = 2.0
"""Default longest pause between polls. POP3 shows the mailbox as it was at login, so each
poll is a fresh login: twice IMAP's default pause keeps the logins few."""


@dataclass(frozen=True)
class Pop3Config(ServerConfig):
    poll_interval: float = POLL_INTERVAL


KEYS: Final = (*SERVER_KEYS, "poll_interval")
PORTS: Final[dict[TlsMode, int]] = {"starttls": 110, "implicit": 995, "none": 110}
"""RFC 1939 (110) and RFC 8314 (995, POP3 over TLS)."""


def read_section(r: Reader, data: dict[str, Any], path: str) -> Pop3Config:
    return Pop3Config(
        **read_server(r, data, path, "pop3", default_tls="implicit", ports=PORTS),
        poll_interval=r.get(data, "poll_interval", path, r.duration, POLL_INTERVAL),
    )


SECTION: Final = Section(KEYS, read_section, receives=True)

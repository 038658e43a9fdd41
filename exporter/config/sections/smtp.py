"""The ``smtp`` section: submission with a login (:mod:`exporter.transports.smtp`)."""

from __future__ import annotations

from typing import Any, Final

from exporter.config.model import ServerConfig, TlsMode
from exporter.config.reader import Reader, Section
from exporter.config.sections.server import SERVER_KEYS, read_server

KEYS: Final = SERVER_KEYS
PORTS: Final[dict[TlsMode, int]] = {"starttls": 587, "implicit": 465, "none": 25}


def read_section(r: Reader, data: dict[str, Any], path: str) -> ServerConfig:
    return ServerConfig(**read_server(r, data, path, "smtp", default_tls="starttls", ports=PORTS))


SECTION: Final = Section(KEYS, read_section, sends=True)

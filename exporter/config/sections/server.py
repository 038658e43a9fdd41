"""What the sections of mail protocols with a login share (``smtp``, ``imap``, ``pop3``):
host, port, TLS mode, the account and its password or OAuth2 credentials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.config.model import TlsMode
from exporter.config.reader import Reader, join

SERVER_KEYS = (
    "host",
    "port",
    "tls",
    "username",
    "password",
    "password_file",
    "password_env",
    "oauth2",
    "tls_config",
)


def read_server(
    r: Reader,
    data: dict[str, Any],
    path: str,
    protocol: str,
    *,
    default_tls: TlsMode,
    ports: Mapping[TlsMode, int],
) -> dict[str, Any]:
    """The :class:`~exporter.config.model.ServerConfig` fields; ``ports`` by TLS mode are the
    protocol's defaults, ``protocol`` picks the OAuth2 preset's scope."""
    tls: TlsMode = r.get(data, "tls", path, r.tls, default_tls)
    oauth2 = None
    if data.get("oauth2") is not None:
        if any(key in data for key in ("password", "password_file", "password_env")):
            raise r.fail(path, "set either a password or oauth2, not both")
        oauth2 = r.oauth2(data["oauth2"], join(path, "oauth2"), protocol)
    return {
        "host": r.get(data, "host", path, r.string),
        "port": r.get(data, "port", path, r.port, ports[tls]),
        "tls": tls,
        "username": r.get(data, "username", path, r.string),
        "password": None if oauth2 else r.secret(data, path),
        "oauth2": oauth2,
        "tls_config": r.tls_config(data.get("tls_config"), join(path, "tls_config")),
    }

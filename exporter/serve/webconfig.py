"""``--web.config.file``: HTTPS and basic authentication, in Prometheus' exporter-toolkit format.

    tls_server_config:
      cert_file: /etc/mailbox-exporter/tls.crt
      key_file: /etc/mailbox-exporter/tls.key
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt hash

Every endpoint but ``/-/healthy`` then asks for a user. Checking a bcrypt hash takes tens of
milliseconds of CPU, so it runs in a worker thread (the event loop keeps probing), and a
successful check is remembered for the same credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web

from exporter.config import ConfigError

OPEN_PATHS = frozenset({"/-/healthy"})
"""Reachable without credentials, so that container and load-balancer health checks work."""

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "min_version")
_TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config")


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    async def allows(self, header: str | None) -> bool:
        """Whether an Authorization header carries a configured user and password."""
        if not self.users:
            return True
        credentials = _basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        if hashed is None:
            return False
        fingerprint = hashlib.sha256(user.encode() + b"\0" + password.encode() + hashed).digest()
        if any(hmac.compare_digest(fingerprint, known) for known in self._verified):
            return True
        async with self._checks:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        if ok:
            self._verified.add(fingerprint)
        return ok


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def middleware(config: WebConfig) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS or await config.allows(request.headers.get("Authorization")):
            return await handler(request)
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="mailbox-exporter"'},
        )

    return authenticate


def load(path: str | Path) -> WebConfig:
    """Read and check a web configuration file; :class:`ConfigError` names the problem."""
    file = Path(path)
    try:
        data: Any = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError("", f"cannot read {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML in {file}: {exc}") from None
    _known(data, "", _TOP_KEYS)
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls is not None:
        _known(tls, "tls_server_config", _TLS_KEYS)
        config.tls = _tls(tls, file.parent)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError("basic_auth_users", "expected a mapping of user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"basic_auth_users.{user}", "expected a bcrypt hash ($2y$...)")
        config.users[str(user)] = hashed.encode()
    return config


def _known(data: Any, path: str, keys: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping")
    for key in data:
        if key not in keys:
            raise ConfigError(
                f"{path}.{key}" if path else str(key),
                f"unknown or unsupported key; supported: {', '.join(keys)}",
            )


def _tls(data: dict[str, Any], base: Path) -> ssl.SSLContext:
    def file(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"tls_server_config.{key}", "required")
        return str(Path(value) if Path(value).is_absolute() else base / value)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if data.get("min_version") == "TLS13" else ssl.TLSVersion.TLSv1_2
    )
    try:
        context.load_cert_chain(file("cert_file"), file("key_file"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "tls_server_config", f"cannot load the certificate and key: {exc}"
        ) from None
    if data.get("client_ca_file"):
        try:
            context.load_verify_locations(file("client_ca_file"))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls_server_config.client_ca_file", f"cannot load: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context

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
import hashlib
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import bcrypt
import yaml
from aiohttp import web

from exporter.config import ConfigError

OPEN_PATHS = frozenset({"/-/healthy"})
"""Reachable without credentials, so that container and load-balancer health checks work."""
MAX_PASSWORD: Final = 72
"""Bytes of a password bcrypt can check. A longer one is refused (401) rather than cut:
bcrypt would read only its first 72 bytes, so two passwords sharing them would both pass."""
MAX_FILE: Final = 1024 * 1024
"""Bytes of a web configuration file read, as for the main configuration: thousands of users
fit in far less."""
CHECKS_AT_ONCE: Final = 2
"""bcrypt checks running at once in worker threads: each takes tens of milliseconds of CPU."""
MAX_COST: Final = 16
"""The highest bcrypt cost accepted: checking a cost-16 hash takes seconds of CPU, and each
step up doubles it (31 would take days), so a stranger trying names and passwords could hold
the checks up for everyone."""
BCRYPT_HASH = re.compile(
    r"\$2[aby]\$(0[4-9]|1[0-6])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}"
)
"""A bcrypt hash as htpasswd and Prometheus' tools write it: version, cost, 22 characters of
salt (16 bytes: the last character carries 2 bits, hence 4 choices) and 31 of hash. bcrypt
refuses any other salt at the first login, as an error rather than a refusal."""
TLS_VERSIONS: Final = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "min_version")
_TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config")


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CHECKS_AT_ONCE))

    async def allows(self, header: str | None) -> bool:
        """Whether an Authorization header carries a configured user and password; any
        header that does not, however malformed, is simply refused."""
        if not self.users:
            return True
        credentials = basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        secret = password.encode()
        if hashed is None or len(secret) > MAX_PASSWORD:
            return False
        fingerprint = hashlib.sha256(user.encode() + b"\0" + secret + hashed).digest()
        if any(hmac.compare_digest(fingerprint, known) for known in self._verified):
            return True
        async with self._checks:
            try:
                ok = await asyncio.to_thread(bcrypt.checkpw, secret, hashed)
            except ValueError:  # what bcrypt says of a password or hash it cannot check
                return False
        if ok:
            self._verified.add(fingerprint)
        return ok


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The user and password of a ``Basic`` Authorization header (RFC 7617); None for any
    other header: another scheme, bad base64, no colon, or text that is not UTF-8."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True).decode("utf-8")
    except ValueError:  # non-ASCII header text, bad base64 (binascii.Error), not UTF-8
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
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read {file}: {exc.strerror}") from None
    if len(raw) > MAX_FILE:
        raise ConfigError("", f"{file} is larger than {MAX_FILE:,} bytes")
    try:
        data: Any = yaml.safe_load(raw.decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError("", f"{file} is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        # The problem and its line, without PyYAML's quote of the line: it may hold a hash.
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not YAML"
        line = mark.line + 1 if mark else None
        raise ConfigError("", f"invalid YAML in {file}: {problem}", line) from None
    except yaml.YAMLError as exc:  # a character YAML does not allow: its code, not the text
        first = (str(exc).splitlines() or ["not YAML"])[0]
        raise ConfigError("", f"invalid YAML in {file}: {first}") from None
    except (ValueError, OverflowError, RecursionError):
        # A value YAML resolves to and Python cannot hold (a date such as 2024-13-01), or
        # nesting deeper than the parser goes; the value itself may be a secret.
        raise ConfigError("", f"{file} holds a value that cannot be read") from None
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
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(
                f"basic_auth_users.{_shown(user)}",
                f"expected a bcrypt hash ($2y$, a cost from 04 to {MAX_COST}, 53 characters "
                "of salt and hash)",
            )
        name = str(user)
        if ":" in name or not name.isprintable():
            raise ConfigError(
                f"basic_auth_users.{_shown(user)}",
                "a user name cannot hold a colon or control characters (RFC 7617: Basic "
                "authentication cannot carry them)",
            )
        config.users[name] = hashed.encode()
    return config


def _shown(key: object) -> str:
    """A key as it can be shown: control characters and lone surrogates escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(key))


def _known(data: Any, path: str, keys: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping")
    for key in data:
        if key not in keys:
            raise ConfigError(
                f"{path}.{_shown(key)}" if path else _shown(key),
                f"unknown or unsupported key; supported: {', '.join(keys)}",
            )


def _tls(data: dict[str, Any], base: Path) -> ssl.SSLContext:
    def file(key: str) -> str:
        value = data.get(key)
        if value is None:
            raise ConfigError(f"tls_server_config.{key}", "required")
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(f"tls_server_config.{key}", "expected a file name")
        return str(Path(value) if Path(value).is_absolute() else base / value)

    version = data.get("min_version", "TLS12")
    if not isinstance(version, str) or version not in TLS_VERSIONS:
        raise ConfigError(
            "tls_server_config.min_version", f"expected one of {', '.join(TLS_VERSIONS)}"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[version]
    try:
        context.load_cert_chain(file("cert_file"), file("key_file"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "tls_server_config", f"cannot load the certificate and key: {exc}"
        ) from None
    if data.get("client_ca_file") is not None:
        try:
            context.load_verify_locations(file("client_ca_file"))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls_server_config.client_ca_file", f"cannot load: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context

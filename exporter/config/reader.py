"""What every section reader of the configuration shares: typed access to the parsed document
that names the key path and line of every mistake (with did-you-mean for unknown keys), the
credential readers, and the :class:`Section` contract by which a transport's own module reads
its section (:mod:`exporter.config.sections`)."""

from __future__ import annotations

import difflib
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exporter.config.document import Lines
from exporter.config.model import (
    TLS_MODES,
    ConfigError,
    OAuth2Config,
    Secret,
    TlsConfig,
    TlsMode,
    TransportConfig,
)
from exporter.outcome import Check

# Every pattern is matched with fullmatch: "$" would also match before a final line break.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
ADDRESS = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")
_BREAKS = re.compile("[\r\n\0]")
MAX_KEY_FILE = 64 * 1024
"""Largest secret, certificate, private key or service-account file read."""


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as ``30s``, ``2m``, ``1m30s`` or ``500ms``."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"expected a duration such as 30s, 2m or 1h30m, got {text!r}")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


T = TypeVar("T")
_CHECKS: Final[dict[str, Check]] = {check.value: check for check in Check}
"""Each check by its name: looked up for every check of every target."""


class Reader:
    """Typed access to the parsed document that reports the key path of every mistake."""

    def __init__(self, lines: Lines, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.lines = lines
        self.base_dir = base_dir
        self.environ = environ

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(printable(path), message, self.lines.of(path))

    def mapping(self, value: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {kind(value)}")
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                known = ", ".join(sorted(allowed))
                raise self.fail(join(path, key), f"unknown key{suggestion}; known keys: {known}")
        return value

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: Callable[..., T],
        default: T | None = None,
    ) -> T:
        value = data.get(key)
        if value is None:
            if default is None:
                raise self.fail(join(path, key), "required")
            return default
        return kind(value, join(path, key))

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {kind(value)}")
        if _BREAKS.search(value):
            raise self.fail(path, "must not contain line breaks or NUL")
        return value

    def port(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {kind(value)}")
        if not 1 <= value <= 65535:
            raise self.fail(path, f"expected a port from 1 to 65535, got {value}")
        return value

    def positive_int(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, f"expected a positive integer, got {value!r}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {kind(value)}")
        return value

    def duration(self, value: Any, path: str) -> float:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a duration such as 30s or 2m, got {kind(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        if seconds <= 0:
            raise self.fail(path, "must be longer than zero")
        return seconds

    def tls(self, value: Any, path: str) -> TlsMode:
        if value not in TLS_MODES:
            raise self.fail(path, f"expected one of {', '.join(TLS_MODES)}, got {value!r}")
        return cast(TlsMode, value)

    def address(self, value: Any, path: str) -> str:
        text = self.string(value, path)
        if not ADDRESS.fullmatch(text):
            raise self.fail(
                path, f"expected a mail address such as probe@example.com, got {text!r}"
            )
        return text

    def name(self, value: Any, path: str) -> str:
        text = self.string(value, path) if not isinstance(value, int | float) else str(value)
        if not NAME.fullmatch(text):
            raise self.fail(
                path,
                "expected 1 to 63 letters, digits or '_.:-', starting with a letter or digit, "
                f"got {text!r}",
            )
        return text

    def checks(self, value: Any, path: str) -> tuple[Check, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a non-empty list of checks, got {kind(value)}")
        result: list[Check] = []
        for index, item in enumerate(value):
            check = _CHECKS.get(item) if isinstance(item, str) else None
            if check is None:
                known = list(_CHECKS)
                hint = difflib.get_close_matches(str(item), known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail(
                    f"{path}[{index}]",
                    f"unknown check {item!r}{suggestion}; known: {', '.join(known)}",
                )
            if check in result:
                raise self.fail(f"{path}[{index}]", f"check {item!r} listed twice")
            result.append(check)
        return tuple(result)

    def secret(
        self, data: Mapping[str, Any], path: str, name: str = "password", required: bool = True
    ) -> Secret | None:
        """``name``, ``name_file`` or ``name_env``: exactly one when required, else at most one."""
        keys = (name, f"{name}_file", f"{name}_env")
        given = [key for key in keys if key in data]
        if len(given) > 1 or (required and not given):
            what = "none" if not given else ", ".join(given)
            raise self.fail(path, f"set exactly one of {', '.join(keys)} (found {what})")
        if not given:
            return None
        key = given[0]
        key_path = join(path, key)
        if key == name:
            value = data[key]
            if not isinstance(value, str) or not value:
                # Never echo what was given: it may be the secret, mistyped.
                raise self.fail(key_path, "expected a non-empty string (quote it)")
            return Secret(value)
        value = self.string(data[key], key_path)
        if key.endswith("_env"):
            if value not in self.environ:
                raise self.fail(key_path, f"environment variable {value} is not set")
            return Secret(self.environ[value])
        file = self.file(value, key_path)
        try:
            with file.open("rb") as stream:
                content = stream.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise self.fail(key_path, f"cannot read {file}: {exc.strerror}") from None
        if len(content) > MAX_KEY_FILE:
            raise self.fail(key_path, f"{file} is larger than {MAX_KEY_FILE:,} bytes")
        try:
            return Secret(content.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            raise self.fail(key_path, f"{file} is not UTF-8 text") from None

    def file(self, value: str, path: str) -> Path:
        """A path from the file, relative to the file's directory."""
        return Path(value) if Path(value).is_absolute() else self.base_dir / value

    def tls_config(self, value: Any, path: str) -> TlsConfig:
        if value is None:
            return NO_TLS_CONFIG
        data = self.mapping(value, path, TLS_CONFIG_KEYS)
        ca_file = None
        if data.get("ca_file") is not None:
            ca_path = join(path, "ca_file")
            ca = self.file(self.string(data["ca_file"], ca_path), ca_path)
            try:
                ssl.create_default_context(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                raise self.fail(
                    ca_path, f"cannot load CA certificates from {ca}: {detail}"
                ) from None
            ca_file = str(ca)
        min_version = data.get("min_version", "TLS12")
        if min_version not in ("TLS12", "TLS13"):
            raise self.fail(
                join(path, "min_version"), f"expected TLS12 or TLS13, got {min_version!r}"
            )
        return TlsConfig(
            ca_file=ca_file,
            server_name=self.get(data, "server_name", path, self.string, "") or None,
            min_version=min_version,
            insecure_skip_verify=self.get(data, "insecure_skip_verify", path, self.boolean, False),
        )

    def oauth2(self, value: Any, path: str, protocol: str) -> OAuth2Config:
        data = self.mapping(value, path, OAUTH2_KEYS)
        provider = data.get("provider")
        if provider is not None and (
            not isinstance(provider, str) or provider not in OAUTH2_PRESETS
        ):
            raise self.fail(
                join(path, "provider"),
                f"expected one of {', '.join(OAUTH2_PRESETS)}, got {provider!r}",
            )
        preset = OAUTH2_PRESETS.get(provider or "", {})
        grant = data.get("grant", preset.get("grant", "client_credentials"))
        if grant not in ("client_credentials", "refresh_token"):
            raise self.fail(
                join(path, "grant"), f"expected client_credentials or refresh_token, got {grant!r}"
            )
        token_url = preset.get("token_url", "")
        if provider == "microsoft":
            tenant = self.get(data, "tenant", path, self.string)
            token_url = token_url.format(tenant=tenant)
        elif "tenant" in data:
            raise self.fail(join(path, "tenant"), "only used with provider: microsoft")
        token_url = self.get(data, "token_url", path, self.string, token_url or None)
        if not token_url.startswith(("https://", "http://")):
            raise self.fail(join(path, "token_url"), f"expected an http(s) URL, got {token_url!r}")
        scope = preset.get(f"scope_{grant}_{protocol}", preset.get(f"scope_{grant}", ""))
        scope = self.get(data, "scope", path, self.string, scope or None)
        client_secret = self.secret(data, path, "client_secret", grant == "client_credentials")
        refresh_token = self.secret(data, path, "refresh_token", grant == "refresh_token")
        return OAuth2Config(
            token_url=token_url,
            scope=scope,
            grant=grant,
            client_id=self.get(data, "client_id", path, self.string),
            client_secret=client_secret,
            refresh_token=refresh_token,
        )


TLS_CONFIG_KEYS = ("ca_file", "server_name", "min_version", "insecure_skip_verify")
NO_TLS_CONFIG: Final = TlsConfig()
"""A section without ``tls_config``: the system's CA certificates, TLS 1.2 or later (one
object for every such section)."""
OAUTH2_KEYS = (
    "provider",
    "tenant",
    "token_url",
    "scope",
    "grant",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "refresh_token",
    "refresh_token_file",
    "refresh_token_env",
)
OAUTH2_PRESETS: dict[str, dict[str, str]] = {
    "microsoft": {
        "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "grant": "client_credentials",
        "scope_client_credentials": "https://outlook.office365.com/.default",
        "scope_refresh_token_imap": (
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
        ),
        "scope_refresh_token_smtp": "https://outlook.office.com/SMTP.Send offline_access",
        "scope_refresh_token_pop3": (
            "https://outlook.office.com/POP.AccessAsUser.All offline_access"
        ),
    },
    "google": {
        "token_url": "https://oauth2.googleapis.com/token",
        "grant": "refresh_token",
        "scope_refresh_token": "https://mail.google.com/",
        "scope_client_credentials": "https://mail.google.com/",
    },
}


@dataclass(frozen=True)
class Section:
    """A transport's section of a target: its keys, its reader, and what it can do in a
    round trip. Each transport's module under :mod:`exporter.config.sections` has one."""

    keys: tuple[str, ...]
    read: Callable[[Reader, dict[str, Any], str], TransportConfig]
    sends: bool = False
    receives: bool = False


def url(r: Reader, data: dict[str, Any], key: str, path: str, default: str) -> str:
    """An http(s) URL without a trailing slash."""
    value = r.get(data, key, path, r.string, default)
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
        raise r.fail(join(path, key), f"expected an http(s) URL without a query, got {value!r}")
    return value.rstrip("/")


def read_small(r: Reader, data: dict[str, Any], key: str, path: str) -> bytes:
    """The content of the file named by ``data[key]``, at most :data:`MAX_KEY_FILE` bytes."""
    key_path = join(path, key)
    file = r.file(r.string(data[key], key_path), key_path)
    try:
        with file.open("rb") as stream:
            content = stream.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise r.fail(key_path, f"cannot read {file}: {exc.strerror}") from None
    if len(content) > MAX_KEY_FILE:
        raise r.fail(key_path, f"{file} is larger than {MAX_KEY_FILE:,} bytes")
    return content


def rsa_private_key(r: Reader, pem: bytes, key_path: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise r.fail(key_path, "expected an unencrypted private key in PEM") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise r.fail(key_path, "expected an RSA private key (tokens are signed with RS256)")
    return key


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def printable(path: str) -> str:
    """A key path as it can be shown: a line break or control character in a key, escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in path)


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__

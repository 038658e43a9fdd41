"""Configuration: a YAML file of targets, read into frozen dataclasses.

Every error names the key path and the line it stands on, so a mail admin can fix the file
without reading code: ``line 12: targets[2].imap.port: expected an integer``.
Secrets are read when the file is loaded (a reload picks up rotated ones) and are held in
:class:`Secret`, which never prints its value.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exporter.config import budget
from exporter.config.checks import CHECKS
from exporter.config.document import MAX_BYTES, Lines, parse_document
from exporter.config.model import (
    GRAPH_CLOUDS,
    MAX_CONCURRENT_PROBES,
    TLS_MODES,
    Config,
    ConfigError,
    DkimKey,
    GmailConfig,
    GoogleStatus,
    GraphConfig,
    ImapConfig,
    LoginBackoff,
    MicrosoftStatus,
    MxConfig,
    NationalCloud,
    OAuth2Config,
    OnDemand,
    ProviderStatus,
    Schedule,
    Secret,
    ServerConfig,
    SigningKey,
    Target,
    TlsConfig,
    TlsMode,
    TransportConfig,
)
from exporter.outcome import Check

# Every pattern is matched with fullmatch: "$" would also match before a final line break.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_ADDRESS = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")
_DEFAULT_PORTS = {
    ("smtp", "starttls"): 587,
    ("smtp", "implicit"): 465,
    ("smtp", "none"): 25,
    ("imap", "starttls"): 143,
    ("imap", "implicit"): 993,
    ("imap", "none"): 143,
}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as ``30s``, ``2m``, ``1m30s`` or ``500ms``."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"expected a duration such as 30s, 2m or 1h30m, got {text!r}")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# --- validation ---------------------------------------------------------------------------------

T = TypeVar("T")


class _Reader:
    """Typed access to the parsed document that reports the key path of every mistake."""

    def __init__(self, lines: Lines, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.lines = lines
        self.base_dir = base_dir
        self.environ = environ

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(_printable(path), message, self.lines.of(path))

    def mapping(self, value: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                known = ", ".join(sorted(allowed))
                raise self.fail(_join(path, key), f"unknown key{suggestion}; known keys: {known}")
        return value

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: Callable[..., T],
        default: T | None = None,
    ) -> T:
        child = _join(path, key)
        if key not in data or data[key] is None:
            if default is None:
                raise self.fail(child, "required")
            return default
        return kind(data[key], child)

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        if any(ch in value for ch in "\r\n\0"):
            raise self.fail(path, "must not contain line breaks or NUL")
        return value

    def port(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_kind(value)}")
        if not 1 <= value <= 65535:
            raise self.fail(path, f"expected a port from 1 to 65535, got {value}")
        return value

    def positive_int(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, f"expected a positive integer, got {value!r}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_kind(value)}")
        return value

    def duration(self, value: Any, path: str) -> float:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a duration such as 30s or 2m, got {_kind(value)}")
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
        if not _ADDRESS.fullmatch(text):
            raise self.fail(
                path, f"expected a mail address such as probe@example.com, got {text!r}"
            )
        return text

    def name(self, value: Any, path: str) -> str:
        text = self.string(value, path) if not isinstance(value, int | float) else str(value)
        if not _NAME.fullmatch(text):
            raise self.fail(
                path,
                "expected 1 to 63 letters, digits or '_.:-', starting with a letter or digit, "
                f"got {text!r}",
            )
        return text

    def checks(self, value: Any, path: str) -> tuple[Check, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a non-empty list of checks, got {_kind(value)}")
        known = [c.value for c in Check]
        result: list[Check] = []
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if item not in known:
                hint = difflib.get_close_matches(str(item), known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail(
                    item_path, f"unknown check {item!r}{suggestion}; known: {', '.join(known)}"
                )
            if Check(item) in result:
                raise self.fail(item_path, f"check {item!r} listed twice")
            result.append(Check(item))
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
        key_path = _join(path, key)
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
        data = self.mapping(value, path, TLS_CONFIG_KEYS)
        ca_file = None
        if data.get("ca_file") is not None:
            ca_path = _join(path, "ca_file")
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
                _join(path, "min_version"), f"expected TLS12 or TLS13, got {min_version!r}"
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
                _join(path, "provider"),
                f"expected one of {', '.join(OAUTH2_PRESETS)}, got {provider!r}",
            )
        preset = OAUTH2_PRESETS.get(provider or "", {})
        grant = data.get("grant", preset.get("grant", "client_credentials"))
        if grant not in ("client_credentials", "refresh_token"):
            raise self.fail(
                _join(path, "grant"), f"expected client_credentials or refresh_token, got {grant!r}"
            )
        token_url = preset.get("token_url", "")
        if provider == "microsoft":
            tenant = self.get(data, "tenant", path, self.string)
            token_url = token_url.format(tenant=tenant)
        elif "tenant" in data:
            raise self.fail(_join(path, "tenant"), "only used with provider: microsoft")
        token_url = self.get(data, "token_url", path, self.string, token_url or None)
        if not token_url.startswith(("https://", "http://")):
            raise self.fail(_join(path, "token_url"), f"expected an http(s) URL, got {token_url!r}")
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
TLS_CONFIG_KEYS = ("ca_file", "server_name", "min_version", "insecure_skip_verify")
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
    },
    "google": {
        "token_url": "https://oauth2.googleapis.com/token",
        "grant": "refresh_token",
        "scope_refresh_token": "https://mail.google.com/",
        "scope_client_credentials": "https://mail.google.com/",
    },
}
IMAP_KEYS = (*SERVER_KEYS, "mailbox", "idle", "poll_interval")
RESERVED_LABELS = frozenset(
    {
        "target",
        "check",
        "phase",
        "reason",
        "protocol",
        "version",
        "le",
        "method",
        "result",
        "job",
        "instance",
    }
)
"""Label names of the exporter's per-target series, and those Prometheus adds when it
scrapes: a static label of the same name would clash in joins with ``mailbox_target_info``."""
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,62}")
MAX_LABEL_VALUE = 128
"""Characters of a label value: a static label names a provider, region or team."""
TOP_KEYS = ("global", "defaults", "targets", "provider_status")
GLOBAL_KEYS = ("max_concurrent_probes", "probe_key_file", "on_demand", "login_backoff")
ON_DEMAND_KEYS = ("roundtrip_every", "login_every")
LOGIN_BACKOFF_KEYS = ("after", "initial", "max")


def _on_demand(r: _Reader, value: Any) -> OnDemand:
    data = r.mapping(value, "global.on_demand", ON_DEMAND_KEYS)
    default = OnDemand()
    return OnDemand(
        roundtrip_every=r.get(
            data, "roundtrip_every", "global.on_demand", r.duration, default.roundtrip_every
        ),
        login_every=r.get(data, "login_every", "global.on_demand", r.duration, default.login_every),
    )


def _login_backoff(r: _Reader, value: Any) -> LoginBackoff:
    path = "global.login_backoff"
    data = r.mapping(value, path, LOGIN_BACKOFF_KEYS)
    default = LoginBackoff()
    backoff = LoginBackoff(
        after=r.get(data, "after", path, r.positive_int, default.after),
        initial=r.get(data, "initial", path, r.duration, default.initial),
        maximum=r.get(data, "max", path, r.duration, default.maximum),
    )
    if backoff.maximum < backoff.initial:
        raise r.fail(_join(path, "max"), "must not be shorter than initial")
    return backoff


def _server(r: _Reader, data: dict[str, Any], path: str, protocol: str) -> dict[str, Any]:
    tls = r.get(data, "tls", path, r.tls, "starttls" if protocol == "smtp" else "implicit")
    oauth2 = None
    if data.get("oauth2") is not None:
        if any(key in data for key in ("password", "password_file", "password_env")):
            raise r.fail(path, "set either a password or oauth2, not both")
        oauth2 = r.oauth2(data["oauth2"], _join(path, "oauth2"), protocol)
    return {
        "host": r.get(data, "host", path, r.string),
        "port": r.get(data, "port", path, r.port, _DEFAULT_PORTS[(protocol, tls)]),
        "tls": tls,
        "username": r.get(data, "username", path, r.string),
        "password": None if oauth2 else r.secret(data, path),
        "oauth2": oauth2,
        "tls_config": r.tls_config(data.get("tls_config"), _join(path, "tls_config")),
    }


def _smtp(r: _Reader, data: dict[str, Any], path: str) -> ServerConfig:
    return ServerConfig(**_server(r, data, path, "smtp"))


def _imap(r: _Reader, data: dict[str, Any], path: str) -> ImapConfig:
    return ImapConfig(
        **_server(r, data, path, "imap"),
        mailbox=r.get(data, "mailbox", path, r.string, "INBOX"),
        idle=None if data.get("idle") is None else r.boolean(data["idle"], _join(path, "idle")),
        poll_interval=r.get(data, "poll_interval", path, r.duration, 1.0),
    )


GRAPH_URL = GRAPH_CLOUDS["global"].graph + "/v1.0"
MICROSOFT_APP_KEYS = (
    "tenant",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "certificate_file",
    "private_key_file",
    "graph_url",
    "login_url",
    "scope",
    "tls_config",
)
"""An Entra app's settings, for the graph section and for Service Health."""
GRAPH_KEYS = ("mailbox", *MICROSOFT_APP_KEYS, "cloud", "search", "poll_interval")
GMAIL_URL = "https://gmail.googleapis.com"
GMAIL_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GMAIL_KEYS = (
    "mailbox",
    "service_account_file",
    "oauth2",
    "api_url",
    "token_url",
    "scope",
    "poll_interval",
    "tls_config",
)
MAX_KEY_FILE = 64 * 1024
"""Largest certificate, private key or service-account file read."""


def _url(r: _Reader, data: dict[str, Any], key: str, path: str, default: str) -> str:
    """An http(s) URL without a trailing slash."""
    value = r.get(data, key, path, r.string, default)
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
        raise r.fail(_join(path, key), f"expected an http(s) URL without a query, got {value!r}")
    return value.rstrip("/")


def _read_small(r: _Reader, data: dict[str, Any], key: str, path: str) -> bytes:
    key_path = _join(path, key)
    file = r.file(r.string(data[key], key_path), key_path)
    try:
        with file.open("rb") as stream:
            content = stream.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise r.fail(key_path, f"cannot read {file}: {exc.strerror}") from None
    if len(content) > MAX_KEY_FILE:
        raise r.fail(key_path, f"{file} is larger than {MAX_KEY_FILE:,} bytes")
    return content


def _private_key(r: _Reader, pem: bytes, key_path: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise r.fail(key_path, "expected an unencrypted private key in PEM") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise r.fail(key_path, "expected an RSA private key (tokens are signed with RS256)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _certificate_key(r: _Reader, data: dict[str, Any], path: str) -> SigningKey:
    """``certificate_file`` and ``private_key_file``: the key that signs client assertions,
    named by the certificate's SHA-256 and SHA-1 thumbprints."""
    if not {"certificate_file", "private_key_file"} <= data.keys():
        raise r.fail(path, "set both certificate_file and private_key_file")
    cert_path = _join(path, "certificate_file")
    try:
        certificate = x509.load_pem_x509_certificate(_read_small(r, data, "certificate_file", path))
    except ValueError:
        raise r.fail(cert_path, "expected a certificate in PEM") from None
    key_pem = _read_small(r, data, "private_key_file", path)
    private_key = _private_key(r, key_pem, _join(path, "private_key_file"))
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if private_key.public_key().public_bytes(
        encoding, public
    ) != certificate.public_key().public_bytes(encoding, public):
        raise r.fail(_join(path, "private_key_file"), "is not the key of certificate_file")
    return SigningKey(
        private_key=Secret(key_pem.decode("ascii", errors="replace")),
        headers=(
            ("x5t#S256", _b64url(certificate.fingerprint(hashes.SHA256()))),
            ("x5t", _b64url(certificate.fingerprint(hashes.SHA1()))),
        ),
    )


def _microsoft_app(
    r: _Reader,
    data: dict[str, Any],
    path: str,
    tls_config: TlsConfig,
    cloud: NationalCloud = GRAPH_CLOUDS["global"],
) -> OAuth2Config:
    """An Entra app's app-only credentials: a client secret or a certificate (client
    assertion), for Graph (mail, or Service Health); the login host and the scope default to
    ``cloud``'s."""
    tenant = r.get(data, "tenant", path, r.string)
    login_url = _url(r, data, "login_url", path, cloud.login)
    secret_keys = ("client_secret", "client_secret_file", "client_secret_env")
    certificate = any(key in data for key in ("certificate_file", "private_key_file"))
    if certificate and any(key in data for key in secret_keys):
        raise r.fail(path, "set either a client secret or certificate_file, not both")
    return OAuth2Config(
        token_url=f"{login_url}/{tenant}/oauth2/v2.0/token",
        scope=r.get(data, "scope", path, r.string, cloud.graph + "/.default"),
        grant="client_credentials",
        client_id=r.get(data, "client_id", path, r.string),
        client_secret=None if certificate else r.secret(data, path, "client_secret"),
        refresh_token=None,
        signing_key=_certificate_key(r, data, path) if certificate else None,
        tls_config=tls_config,
    )


def _graph(r: _Reader, data: dict[str, Any], path: str) -> GraphConfig:
    tls_config = r.tls_config(data.get("tls_config"), _join(path, "tls_config"))
    if "search" in data:
        raise r.fail(
            _join(path, "search"),
            "is no longer used: probes are found by reading the newest messages and their "
            "headers; remove it",
        )
    cloud = data.get("cloud", "global")
    if cloud not in GRAPH_CLOUDS:
        known = ", ".join(GRAPH_CLOUDS)
        raise r.fail(_join(path, "cloud"), f"expected one of {known}, got {cloud!r}")
    settings = GRAPH_CLOUDS[cloud]
    return GraphConfig(
        username=r.get(data, "mailbox", path, r.address),
        graph_url=_url(r, data, "graph_url", path, settings.graph + "/v1.0"),
        oauth2=_microsoft_app(r, data, path, tls_config, settings),
        tls_config=tls_config,
        poll_interval=r.get(data, "poll_interval", path, r.duration, 2.0),
        cloud=cloud,
    )


def _service_account(
    r: _Reader, data: dict[str, Any], path: str, mailbox: str, scope: str
) -> OAuth2Config:
    """A service account's JSON key file: a JWT bearer grant acting for ``mailbox``."""
    key_path = _join(path, "service_account_file")
    try:
        account = json.loads(_read_small(r, data, "service_account_file", path))
    except ValueError:
        raise r.fail(key_path, "expected a service account's JSON key file") from None
    if not isinstance(account, dict) or account.get("type") != "service_account":
        raise r.fail(key_path, 'expected a JSON key file with "type": "service_account"')
    for field in ("client_email", "private_key"):
        if not isinstance(account.get(field), str) or not account[field]:
            raise r.fail(key_path, f"the key file has no {field}")
    pem = str(account["private_key"])
    _private_key(r, pem.encode(), key_path)
    key_id = account.get("private_key_id")
    token_url = account.get("token_uri") if isinstance(account.get("token_uri"), str) else None
    return OAuth2Config(
        token_url=_url(r, data, "token_url", path, token_url or GOOGLE_TOKEN_URL),
        scope=scope,
        grant="jwt_bearer",
        client_id=str(account["client_email"]),
        client_secret=None,
        refresh_token=None,
        signing_key=SigningKey(
            Secret(pem), (("kid", key_id),) if isinstance(key_id, str) and key_id else ()
        ),
        subject=mailbox,
    )


def _gmail(r: _Reader, data: dict[str, Any], path: str) -> GmailConfig:
    tls_config = r.tls_config(data.get("tls_config"), _join(path, "tls_config"))
    mailbox = r.get(data, "mailbox", path, r.address)
    scope = r.get(data, "scope", path, r.string, GMAIL_SCOPE)
    if ("service_account_file" in data) == ("oauth2" in data):
        raise r.fail(path, "set exactly one of service_account_file, oauth2")
    if "oauth2" in data:
        if "token_url" in data:
            raise r.fail(_join(path, "token_url"), "set it in oauth2 (used with a service account)")
        oauth2_path = _join(path, "oauth2")
        given = r.mapping(data["oauth2"], oauth2_path, OAUTH2_KEYS)
        oauth2 = r.oauth2(
            {"provider": "google", "grant": "refresh_token", "scope": scope, **given},
            oauth2_path,
            "gmail",
        )
        if oauth2.grant != "refresh_token":
            raise r.fail(_join(oauth2_path, "grant"), "the Gmail API takes refresh_token here")
    else:
        oauth2 = _service_account(r, data, path, mailbox, scope)
    return GmailConfig(
        username=mailbox,
        api_url=_url(r, data, "api_url", path, GMAIL_URL) + "/gmail/v1",
        oauth2=replace(oauth2, tls_config=tls_config),
        tls_config=tls_config,
        poll_interval=r.get(data, "poll_interval", path, r.duration, 2.0),
    )


MX_KEYS = ("mail_from", "resolver", "port", "tls", "tls_config", "dkim")
DKIM_KEYS = ("domain", "selector", "private_key_file")
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")
"""Labels joined by dots, so that a name splits into labels one way only: an optional dot
after each label let a long invalid name be tried in exponentially many splits."""


def _resolver(r: _Reader, value: Any, path: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` (``[ADDRESS]:PORT`` for IPv6) of a DNS server."""
    text = r.string(value, path)
    host, port = text, "53"
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise r.fail(
            path, f"expected an IP address and optional port such as 10.0.0.53:53, got {text!r}"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise r.fail(path, f"expected a port from 1 to 65535, got {port!r}")
    return host, int(port)


def _dkim(r: _Reader, value: Any, path: str) -> DkimKey:
    """The DKIM signing domain, selector and RSA key (kept as PKCS#1 PEM, which dkimpy reads)."""
    data = r.mapping(value, path, DKIM_KEYS)
    names: dict[str, str] = {}
    for key in ("domain", "selector"):
        names[key] = r.get(data, key, path, r.string)
        if not _DNS_NAME.fullmatch(names[key]):
            raise r.fail(_join(path, key), f"expected a DNS name, got {names[key]!r}")
    r.get(data, "private_key_file", path, r.string)
    pem = _read_small(r, data, "private_key_file", path)
    key_path = _join(path, "private_key_file")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise r.fail(key_path, f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private, rsa.RSAPrivateKey) or private.key_size < 1024:
        raise r.fail(key_path, "expected an RSA key of at least 1024 bits")
    traditional = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return DkimKey(
        domain=names["domain"].rstrip("."),
        selector=names["selector"],
        private_key=Secret(traditional.decode("ascii")),
    )


def _mx(r: _Reader, data: dict[str, Any], path: str) -> MxConfig:
    starttls = data.get("tls", "required")
    if starttls not in ("required", "opportunistic"):
        raise r.fail(_join(path, "tls"), f"expected required or opportunistic, got {starttls!r}")
    return MxConfig(
        username=r.get(data, "mail_from", path, r.address, ""),
        resolver=(
            _resolver(r, data["resolver"], _join(path, "resolver"))
            if data.get("resolver") is not None
            else None
        ),
        port=r.get(data, "port", path, r.port, 25),
        starttls=starttls,
        tls_config=r.tls_config(data.get("tls_config"), _join(path, "tls_config")),
        dkim=_dkim(r, data["dkim"], _join(path, "dkim")) if data.get("dkim") is not None else None,
    )


PROVIDER_STATUS_KEYS = ("interval", "timeout", "max_incidents", "microsoft", "google")
MICROSOFT_STATUS_KEYS = (*MICROSOFT_APP_KEYS, "services")
GOOGLE_STATUS_KEYS = ("feed_url", "services", "tls_config")
MICROSOFT_SERVICES = ("Exchange Online", "Microsoft 365 suite")
GOOGLE_SERVICES = ("Gmail",)
GOOGLE_STATUS_URL = "https://www.google.com/appsstatus/dashboard/incidents.json"
MIN_STATUS_INTERVAL = 60.0
"""Status pages are read at most once a minute: Graph's Service Communications API allows an
app 240 requests a minute and 800 an hour per tenant."""


def _services(
    r: _Reader, data: dict[str, Any], path: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = data.get("services")
    if value is None:
        return default
    key_path = _join(path, "services")
    if not isinstance(value, list) or not value:
        raise r.fail(key_path, f"expected a non-empty list of service names, got {_kind(value)}")
    return tuple(r.string(item, f"{key_path}[{index}]") for index, item in enumerate(value))


def _microsoft_status(r: _Reader, data: dict[str, Any], path: str) -> MicrosoftStatus:
    """Service Health over Graph: the graph section's credentials, without a mailbox."""
    tls_config = r.tls_config(data.get("tls_config"), _join(path, "tls_config"))
    return MicrosoftStatus(
        graph_url=_url(r, data, "graph_url", path, GRAPH_URL),
        oauth2=_microsoft_app(r, data, path, tls_config),
        tls_config=tls_config,
        services=_services(r, data, path, MICROSOFT_SERVICES),
    )


def _provider_status(r: _Reader, value: Any) -> ProviderStatus | None:
    """``provider_status``: absent, nothing is read."""
    if value is None:
        return None
    path = "provider_status"
    data = r.mapping(value, path, PROVIDER_STATUS_KEYS)
    if data.get("microsoft") is None and data.get("google") is None:
        raise r.fail(path, "configure microsoft, google or both")
    default = ProviderStatus()
    interval = r.get(data, "interval", path, r.duration, default.interval)
    if interval < MIN_STATUS_INTERVAL:
        raise r.fail(_join(path, "interval"), "must be at least 1m (the providers' rate limits)")
    timeout = r.get(data, "timeout", path, r.duration, min(default.timeout, interval))
    if timeout > interval:
        raise r.fail(_join(path, "timeout"), "must not be longer than the interval")
    microsoft = google = None
    if data.get("microsoft") is not None:
        where = _join(path, "microsoft")
        microsoft = _microsoft_status(
            r, r.mapping(data["microsoft"], where, MICROSOFT_STATUS_KEYS), where
        )
    if data.get("google") is not None:
        where = _join(path, "google")
        google_data = r.mapping(data["google"], where, GOOGLE_STATUS_KEYS)
        google = GoogleStatus(
            feed_url=_url(r, google_data, "feed_url", where, GOOGLE_STATUS_URL),
            tls_config=r.tls_config(google_data.get("tls_config"), _join(where, "tls_config")),
            services=_services(r, google_data, where, GOOGLE_SERVICES),
        )
    return ProviderStatus(
        interval=interval,
        timeout=timeout,
        max_incidents=r.get(data, "max_incidents", path, r.positive_int, default.max_incidents),
        microsoft=microsoft,
        google=google,
    )


@dataclass(frozen=True)
class Section:
    """A transport's section of a target: its keys, its reader, and what it can do in a
    round trip."""

    keys: tuple[str, ...]
    read: Callable[[_Reader, dict[str, Any], str], TransportConfig]
    sends: bool = False
    receives: bool = False


SECTIONS: dict[str, Section] = {
    "smtp": Section(SERVER_KEYS, _smtp, sends=True),
    "imap": Section(IMAP_KEYS, _imap, receives=True),
    "graph": Section(GRAPH_KEYS, _graph, sends=True, receives=True),
    "gmail": Section(GMAIL_KEYS, _gmail, sends=True, receives=True),
    "mx": Section(MX_KEYS, _mx, sends=True),
}
"""Every transport's configuration section, by the key it has in a target."""

TARGET_KEYS = (
    "name",
    *SECTIONS,
    "sender",
    "receiver",
    "from",
    "to",
    "checks",
    "interval",
    "timeout",
    "labels",
    "authserv_id",
)
DEFAULT_KEYS = tuple(k for k in TARGET_KEYS if k != "name")


def _role(r: _Reader, data: dict[str, Any], path: str, key: str, default: str) -> str:
    """``sender`` or ``receiver``: the name of a transport that can play that role."""
    able = [name for name, s in SECTIONS.items() if (s.sends if key == "sender" else s.receives)]
    value = data.get(key, default)
    if value not in able:
        raise r.fail(_join(path, key), f"expected one of {', '.join(able)}, got {value!r}")
    return str(value)


def _default_role(sections: Mapping[str, TransportConfig], usual: str, *, sends: bool) -> str:
    """``usual`` (smtp, imap) if configured, else the only configured section able to."""
    able = [
        name for name in sections if (SECTIONS[name].sends if sends else SECTIONS[name].receives)
    ]
    return usual if usual in sections or len(able) != 1 else able[0]


def _target(r: _Reader, raw: Any, defaults: dict[str, Any], path: str) -> Target:
    data = r.mapping(raw, path, TARGET_KEYS)
    merged = {**defaults, **data}
    name = r.get(merged, "name", path, r.name)
    sections: dict[str, TransportConfig] = {}
    for key, spec in SECTIONS.items():
        base = r.mapping(defaults.get(key), _join("defaults", key), spec.keys)
        values = {**base, **r.mapping(data.get(key), _join(path, key), spec.keys)}
        if values or isinstance(data.get(key), dict) or isinstance(defaults.get(key), dict):
            sections[key] = spec.read(r, values, _join(path, key))
    probe = Target(
        name=name,
        checks=(),
        schedules={},
        mail_from="",
        mail_to="",
        sender=_role(r, merged, path, "sender", _default_role(sections, "smtp", sends=True)),
        receiver=_role(r, merged, path, "receiver", _default_role(sections, "imap", sends=False)),
        labels=_labels(r, defaults.get("labels"), data.get("labels"), path),
        authserv_id=r.get(merged, "authserv_id", path, r.string, "") or None,
        **sections,  # type: ignore[arg-type]
    )
    checks = r.get(merged, "checks", path, r.checks, _default_checks(probe, sections))
    if not checks:
        raise r.fail(path, f"configure at least one of {', '.join(SECTIONS)}")
    for index, check in enumerate(checks):
        for needed in CHECKS[check].needs(probe):
            if needed not in sections:
                listed = _join(path, f"checks[{index}]") if "checks" in data else path
                raise ConfigError(
                    _join(path, needed), f"required by the {check} check", r.lines.of(listed)
                )
    needs_mail = Check.ROUNDTRIP in checks
    sender = sections.get(probe.sender)
    receiver = sections.get(probe.receiver)
    mail_from = _mail_address(
        r, merged, path, "from", sender.username if sender else "", needs_mail
    )
    mail_to = _mail_address(
        r, merged, path, "to", receiver.username if receiver else "", needs_mail
    )
    hosted = sender is not None and budget.cap_of(sender) is not None
    return replace(
        probe,
        checks=checks,
        schedules=_schedules(r, merged, path, checks, hosted),
        mail_from=mail_from,
        mail_to=mail_to,
    )


def _default_checks(target: Target, sections: Mapping[str, TransportConfig]) -> tuple[Check, ...]:
    """Every check whose transports the target has: smtp + imap run all three."""
    return tuple(
        check
        for check, spec in CHECKS.items()
        if all(needed in sections for needed in spec.needs(target))
    )


def _labels(r: _Reader, defaults: Any, own: Any, path: str) -> dict[str, str]:
    """``labels``: static label names and values, the defaults' merged with the target's.

    Names as Prometheus takes them (not ``__``-prefixed, none of the exporter's own); values
    any text that UTF-8 can carry (the exposition escapes backslashes, quotes and line
    breaks), so that no configuration can break ``/metrics``.
    """
    labels: dict[str, str] = {}
    for where, value in (("defaults.labels", defaults), (_join(path, "labels"), own)):
        if value is None:
            continue
        if not isinstance(value, dict):
            raise r.fail(where, f"expected a mapping of label names to values, got {_kind(value)}")
        for key, item in value.items():
            name = str(key)
            key_path = _join(where, name)
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise r.fail(
                    key_path,
                    "expected a Prometheus label name: up to 63 of [a-zA-Z0-9_], not starting "
                    "with a digit or __",
                )
            if name in RESERVED_LABELS:
                raise r.fail(key_path, f"{name} is a label of the exporter's own metrics")
            if not isinstance(item, str | int | float) or isinstance(item, bool) or not str(item):
                raise r.fail(key_path, "expected a non-empty string")
            text = str(item)
            if len(text) > MAX_LABEL_VALUE:
                raise r.fail(key_path, f"longer than {MAX_LABEL_VALUE} characters")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise r.fail(key_path, "not valid Unicode text (a lone surrogate escape)") from None
            labels[name] = text
    return labels


def _schedules(
    r: _Reader, data: dict[str, Any], path: str, checks: tuple[Check, ...], hosted: bool
) -> dict[Check, Schedule]:
    """``interval`` and ``timeout`` are a duration for every check, or a mapping by check.

    A round trip sending as an account with a published cap (``hosted``) runs less often by
    default: see :mod:`.budget`."""
    per_check: dict[str, dict[Check, float]] = {}
    for key in ("interval", "timeout"):
        value, key_path = data.get(key), _join(path, key)
        if isinstance(value, dict):
            per_check[key] = {
                Check(name): r.duration(item, _join(key_path, name))
                for name, item in r.mapping(value, key_path, [c.value for c in Check]).items()
                if item is not None
            }
        elif value is not None:
            per_check[key] = dict.fromkeys(Check, r.duration(value, key_path))
        else:
            per_check[key] = {}
    schedules: dict[Check, Schedule] = {}
    for check in checks:
        default = CHECKS[check].schedule
        if hosted and check is Check.ROUNDTRIP:
            default = replace(default, interval=budget.HOSTED_ROUNDTRIP_INTERVAL)
        interval = per_check["interval"].get(check, default.interval)
        timeout = per_check["timeout"].get(check, min(default.timeout, interval))
        if timeout > interval:
            key_path = _join(path, "timeout")
            raise r.fail(
                key_path,
                f"{format_duration(timeout)} for {check} is longer than its interval "
                f"{format_duration(interval)}",
            )
        schedules[check] = Schedule(interval, timeout)
    return schedules


def _mail_address(
    r: _Reader, data: dict[str, Any], path: str, key: str, username: str, needed: bool
) -> str:
    if data.get(key) is not None:
        return r.address(data[key], _join(path, key))
    if _ADDRESS.fullmatch(username) or not needed:
        return username
    raise r.fail(
        _join(path, key), "required for the roundtrip check (the username is not an address)"
    )


def parse(
    text: str,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "",
) -> Config:
    """Validate a configuration document; raise :class:`ConfigError` at the first mistake."""
    data, lines = parse_document(text)
    r = _Reader(lines, base_dir or Path.cwd(), os.environ if environ is None else environ)
    top = r.mapping(data, "", TOP_KEYS)
    glob = r.mapping(top.get("global"), "global", GLOBAL_KEYS)
    defaults = r.mapping(top.get("defaults"), "defaults", DEFAULT_KEYS)
    raw_targets = top.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise r.fail("targets", "expected a non-empty list of targets")
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_targets):
        target = _target(r, raw, defaults, f"targets[{index}]")
        if target.name in seen:
            raise r.fail(
                f"targets[{index}].name",
                f"duplicate target name {target.name!r} (also targets[{seen[target.name]}])",
            )
        seen[target.name] = index
        targets.append(target)
    config = Config(
        targets=tuple(targets),
        max_concurrent_probes=r.get(
            glob, "max_concurrent_probes", "global", r.positive_int, MAX_CONCURRENT_PROBES
        ),
        on_demand=_on_demand(r, glob.get("on_demand")),
        login_backoff=_login_backoff(r, glob.get("login_backoff")),
        provider_status=_provider_status(r, top.get("provider_status")),
        probe_key_file=(
            str(
                r.file(
                    r.string(glob["probe_key_file"], "global.probe_key_file"),
                    "global.probe_key_file",
                )
            )
            if glob.get("probe_key_file") is not None
            else None
        ),
        source=source,
    )
    over = budget.problem(config)
    if over is not None:
        raise r.fail(*over)
    return config


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read {file}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError("", f"{file} is larger than {MAX_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("", f"{file} is not UTF-8 text") from None
    return parse(text, base_dir=file.resolve().parent, environ=environ, source=str(file))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _printable(path: str) -> str:
    """A key path as it can be shown: a line break or control character in a key, escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in path)


def _kind(value: Any) -> str:
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

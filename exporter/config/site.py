"""``global.location`` and ``global.maintenance``: where this exporter probes from, the status
pages of the other locations, and the Alertmanager whose silences the status page shows as
planned maintenance.

The location's name describes the exporter on its status page only: Prometheus adds the
location label at scrape time (docs/alerting.md#locations), and a label the exporter set on
its own series would come out as ``exported_location``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from exporter.config.model import Secret, TlsConfig, revealed
from exporter.config.reader import Reader, join, kind

LOCATION_KEYS: Final = ("name", "label", "peers")
MAINTENANCE_KEYS: Final = (
    "alertmanager_url",
    "interval",
    "timeout",
    "basic_auth",
    "authorization",
    "tls_config",
)
BASIC_AUTH_KEYS: Final = ("username", "password", "password_file", "password_env")
AUTHORIZATION_KEYS: Final = ("credentials", "credentials_file", "credentials_env")
DEFAULT_LABEL: Final = "location"
"""The label name the mixin's ``locationLabel`` has by default."""
MAX_PEERS: Final = 32
"""Other locations linked from the status page."""
MAX_URL: Final = 2048
"""Characters of a configured URL."""
MIN_INTERVAL: Final = 1.0
"""Alertmanager is read at most this often (seconds): its silences change by hand."""
DEFAULT_INTERVAL: Final = 60.0
DEFAULT_TIMEOUT: Final = 10.0
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,62}")


@dataclass(frozen=True)
class Peer:
    """Another location watching the same mailboxes, and its exporter's status page."""

    name: str
    url: str


@dataclass(frozen=True)
class Location:
    """Where this exporter probes from, as its status page says."""

    name: str
    label: str = DEFAULT_LABEL
    """The label name Prometheus gives the location (the silences' matchers use it)."""
    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True)
class Maintenance:
    """The Alertmanager whose active silences the status page shows, and how to read it."""

    url: str
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    tls_config: TlsConfig = field(default_factory=TlsConfig)
    username: str = ""
    password: Secret | None = None
    """With ``username``: HTTP basic authentication."""
    token: Secret | None = None
    """A bearer token (``authorization.credentials``)."""

    def secrets(self) -> set[str]:
        return revealed(self.password, self.token)


def http_url(r: Reader, value: Any, path: str) -> str:
    """An http(s) URL with a host and no credentials in it (a page or log would show them)."""
    text = r.string(value, path).strip()
    if len(text) > MAX_URL:
        raise r.fail(path, f"longer than {MAX_URL} characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise r.fail(path, "not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.fail(path, f"expected an http:// or https:// URL, got {text[:80]!r}")
    if parts.username is not None or parts.password is not None:
        raise r.fail(path, "must not hold credentials (user:password@); use basic_auth")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise r.fail(path, "must not contain spaces or control characters")
    return text


def read_location(r: Reader, value: Any) -> Location | None:
    """``global.location``: absent, the status page names no location."""
    if value is None:
        return None
    path = "global.location"
    data = r.mapping(value, path, LOCATION_KEYS)
    name = r.get(data, "name", path, r.name)
    label = r.get(data, "label", path, r.string, DEFAULT_LABEL)
    if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
        raise r.fail(
            join(path, "label"),
            "expected a Prometheus label name: up to 63 of [a-zA-Z0-9_], not starting with a "
            "digit or __",
        )
    peers: list[Peer] = []
    raw = data.get("peers")
    where = join(path, "peers")
    if raw is not None:
        if not isinstance(raw, dict):
            raise r.fail(where, f"expected a mapping of location names to URLs, got {kind(raw)}")
        if len(raw) > MAX_PEERS:
            raise r.fail(where, f"more than {MAX_PEERS} locations")
        for key, url in raw.items():
            key_path = join(where, str(key))
            peer = r.name(key, key_path)
            if peer == name:
                raise r.fail(key_path, "is this exporter's own location (global.location.name)")
            peers.append(Peer(peer, http_url(r, url, key_path)))
    return Location(name=name, label=label, peers=tuple(peers))


def read_maintenance(r: Reader, value: Any) -> Maintenance | None:
    """``global.maintenance``: absent, no Alertmanager is read."""
    if value is None:
        return None
    path = "global.maintenance"
    data = r.mapping(value, path, MAINTENANCE_KEYS)
    where = join(path, "alertmanager_url")
    url = http_url(r, r.get(data, "alertmanager_url", path, r.string), where)
    if urlsplit(url).query or urlsplit(url).fragment:
        raise r.fail(where, "expected Alertmanager's base URL, without a query")
    interval = r.get(data, "interval", path, r.duration, DEFAULT_INTERVAL)
    if interval < MIN_INTERVAL:
        raise r.fail(join(path, "interval"), f"must be at least {MIN_INTERVAL:g}s")
    timeout = r.get(data, "timeout", path, r.duration, min(DEFAULT_TIMEOUT, interval))
    if timeout > interval:
        raise r.fail(join(path, "timeout"), "must not be longer than the interval")
    username, password, token = "", None, None
    if data.get("basic_auth") is not None:
        where = join(path, "basic_auth")
        auth = r.mapping(data["basic_auth"], where, BASIC_AUTH_KEYS)
        username = r.get(auth, "username", where, r.string)
        password = r.secret(auth, where, "password")
    if data.get("authorization") is not None:
        where = join(path, "authorization")
        if username:
            raise r.fail(where, "set basic_auth or authorization, not both")
        auth = r.mapping(data["authorization"], where, AUTHORIZATION_KEYS)
        token = r.secret(auth, where, "credentials")
    for secret, where in ((password, "basic_auth"), (token, "authorization")):
        if secret is not None and not secret.reveal().isprintable():
            # Never echo it: it is the secret.
            raise r.fail(join(path, where), "holds a line break or control character")
    return Maintenance(
        url=url.rstrip("/"),
        interval=interval,
        timeout=timeout,
        tls_config=r.tls_config(data.get("tls_config"), join(path, "tls_config")),
        username=username,
        password=password,
        token=token,
    )

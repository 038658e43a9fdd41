"""The configuration as the exporter uses it: frozen dataclasses, validated by :mod:`.load`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from exporter.outcome import Check

TlsMode = Literal["starttls", "implicit", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("starttls", "implicit", "none")
TlsVersion = Literal["TLS12", "TLS13"]
OAuth2Grant = Literal["client_credentials", "refresh_token"]
MAX_CONCURRENT_PROBES = 32
"""Probes in flight at once, unless ``global.max_concurrent_probes`` says otherwise."""


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"line {line}: " if line else ""
        super().__init__(f"{where}{path}: {message}" if path else f"{where}{message}")
        self.path = path
        self.line = line


class Secret:
    """A credential that stays out of logs, reprs and error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def revealed(*secrets: Secret | None) -> set[str]:
    """The values of the secrets that are set, to keep out of anything shown."""
    return {secret.reveal() for secret in secrets if secret is not None} - {""}


@dataclass(frozen=True)
class TlsConfig:
    """How to verify the server, in the terms of Prometheus' ``tls_config``."""

    ca_file: str | None = None
    server_name: str | None = None
    min_version: TlsVersion = "TLS12"
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class OAuth2Config:
    """Where and how to get an access token for SASL XOAUTH2."""

    token_url: str
    scope: str
    grant: OAuth2Grant
    client_id: str
    client_secret: Secret | None
    refresh_token: Secret | None

    def secrets(self) -> set[str]:
        return revealed(self.client_secret, self.refresh_token)


@dataclass(frozen=True)
class ServerConfig:
    """How to reach and log in to one mail protocol's server: a password, or OAuth2."""

    host: str
    port: int
    tls: TlsMode
    username: str
    password: Secret | None
    oauth2: OAuth2Config | None
    tls_config: TlsConfig

    def secrets(self) -> set[str]:
        return revealed(self.password) | (self.oauth2.secrets() if self.oauth2 else set())


@dataclass(frozen=True)
class ImapConfig(ServerConfig):
    mailbox: str = "INBOX"
    idle: bool = True
    poll_interval: float = 1.0


@dataclass(frozen=True)
class Schedule:
    """How often one check runs, and how long one probe of it may take."""

    interval: float
    timeout: float


@dataclass(frozen=True)
class Target:
    """One mailbox to watch: how to reach it, what to check, and how often.

    A round trip sends through the ``sender`` transport and watches through the ``receiver``
    transport; each transport's settings are in the field of its name (``smtp``, ``imap``).
    """

    name: str
    checks: tuple[Check, ...]
    schedules: Mapping[Check, Schedule]
    mail_from: str
    mail_to: str
    sender: str = "smtp"
    receiver: str = "imap"
    smtp: ServerConfig | None = None
    imap: ImapConfig | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    """Static labels of the target, such as ``provider``, exported on ``mailbox_target_info``."""

    def interval(self, check: Check) -> float:
        return self.schedules[check].interval

    def timeout(self, check: Check) -> float:
        return self.schedules[check].timeout

    def sections(self) -> dict[str, ServerConfig]:
        """The transports configured for this target, by name."""
        return {
            item.name: value
            for item in fields(self)
            if isinstance(value := getattr(self, item.name), ServerConfig)
        }

    def section(self, name: str) -> ServerConfig:
        """The settings of transport ``name``; configuration loading made sure it is there."""
        found = self.sections().get(name)
        if found is None:
            raise LookupError(f"target {self.name} has no {name} section")
        return found

    def secrets(self) -> tuple[str, ...]:
        """Every credential of the target, to keep out of anything shown."""
        return tuple(set().union(*(s.secrets() for s in self.sections().values())))


@dataclass(frozen=True)
class OnDemand:
    """How often ``GET /probe`` may really probe one target: each on-demand round trip sends
    mail through the monitored account, each login check is a login."""

    roundtrip_every: float = 60.0
    login_every: float = 10.0


@dataclass(frozen=True)
class LoginBackoff:
    """After ``after`` refusals in a row of the same credentials, logins with them wait
    ``initial`` seconds, then twice as long after each further refusal, up to ``maximum``: so
    that the monitor never locks the account out."""

    after: int = 3
    initial: float = 60.0
    maximum: float = 900.0


@dataclass(frozen=True)
class Config:
    targets: tuple[Target, ...]
    max_concurrent_probes: int = MAX_CONCURRENT_PROBES
    probe_key_file: str | None = None
    on_demand: OnDemand = field(default_factory=OnDemand)
    login_backoff: LoginBackoff = field(default_factory=LoginBackoff)
    source: str = field(default="", compare=False)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

"""The configuration as the exporter uses it: frozen dataclasses, validated by :mod:`.load`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from exporter.outcome import Check

if TYPE_CHECKING:
    from exporter.config.sections.ews import EwsConfig as EwsConfig
    from exporter.config.sections.gmail import GmailConfig as GmailConfig
    from exporter.config.sections.graph import GRAPH_CLOUDS as GRAPH_CLOUDS
    from exporter.config.sections.graph import GraphCloud as GraphCloud
    from exporter.config.sections.graph import GraphConfig as GraphConfig
    from exporter.config.sections.graph import NationalCloud as NationalCloud
    from exporter.config.sections.imap import ImapConfig as ImapConfig
    from exporter.config.sections.jmap import JmapConfig as JmapConfig
    from exporter.config.sections.mx import DkimKey as DkimKey
    from exporter.config.sections.mx import MxConfig as MxConfig
    from exporter.config.sections.mx import MxTls as MxTls
    from exporter.config.sections.pop3 import Pop3Config as Pop3Config
    from exporter.config.site import Location, Maintenance

TlsMode = Literal["starttls", "implicit", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("starttls", "implicit", "none")
TlsVersion = Literal["TLS12", "TLS13"]
OAuth2Grant = Literal["client_credentials", "refresh_token", "jwt_bearer"]
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


AssertionAlgorithm = Literal["RS256", "PS256"]


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs JWT assertions (RFC 7523), and the header fields that name it
    to the token endpoint (a certificate's ``x5t``/``x5t#S256``, or a key id ``kid``)."""

    private_key: Secret
    """The key in PEM."""
    headers: tuple[tuple[str, str], ...] = ()
    algorithm: AssertionAlgorithm = "RS256"
    """The JWS algorithm (RFC 7518): RSASSA-PKCS1-v1_5 (``RS256``, what Google's service
    accounts take) or RSASSA-PSS (``PS256``, what Microsoft documents for certificates)."""
    not_after: float | None = None
    """When the certificate registered for the key expires (seconds since 1970), if known."""

    def secrets(self) -> set[str]:
        """The PEM, and each line of it, so that a partial leak is caught too."""
        pem = self.private_key.reveal()
        lines = {line.strip() for line in pem.splitlines() if len(line.strip()) >= 16}
        return revealed(self.private_key) | {line for line in lines if "-----" not in line}


@dataclass(frozen=True)
class OAuth2Config:
    """Where and how to get an access token: for SASL XOAUTH2, or for a mail API.

    ``client_credentials`` authenticates the client with ``client_secret`` or, when
    ``signing_key`` is set, with a signed client assertion (RFC 7523 section 2.2, as
    Microsoft's certificate credentials); ``jwt_bearer`` sends a signed assertion as the grant
    itself (RFC 7523 section 2.1, as Google's service accounts), ``client_id`` being its
    issuer and ``subject`` the user it acts for.
    """

    token_url: str
    scope: str
    grant: OAuth2Grant
    client_id: str
    client_secret: Secret | None
    refresh_token: Secret | None
    signing_key: SigningKey | None = None
    subject: str = ""
    tls_config: TlsConfig | None = None
    """How to verify the token endpoint; None: the system's trust store."""
    client_secret_expires: float | None = None
    """When the client secret expires, where the configuration states it (seconds since
    1970): an expired secret is the commonest way app-only monitoring breaks."""

    def credential_expires(self) -> float | None:
        """When the credential the client authenticates with expires, where known: the
        certificate's notAfter, or the client secret's stated expiry."""
        if self.signing_key is not None and self.signing_key.not_after is not None:
            return self.signing_key.not_after
        return self.client_secret_expires

    def secrets(self) -> set[str]:
        signed = self.signing_key.secrets() if self.signing_key else set()
        return revealed(self.client_secret, self.refresh_token) | signed


class TransportConfig:
    """What every transport section of a target has: the account it uses, how to verify
    the servers it talks to, and the credentials to keep out of anything shown."""

    username: str
    tls_config: TlsConfig
    if TYPE_CHECKING:

        @property
        def host(self) -> str: ...
        @property
        def port(self) -> int: ...
        @property
        def tls(self) -> TlsMode: ...
        @property
        def oauth2(self) -> OAuth2Config | None: ...

    def secrets(self) -> set[str]:
        raise NotImplementedError


class ApiEndpoint:
    """Host, port and TLS mode of an API transport, read from its base URL."""

    def _base(self) -> str:
        raise NotImplementedError

    @property
    def host(self) -> str:
        return urlsplit(self._base()).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self._base())
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls(self) -> TlsMode:
        """HTTPS is TLS from the first byte."""
        return "implicit" if urlsplit(self._base()).scheme == "https" else "none"


@dataclass(frozen=True)
class ServerConfig(TransportConfig):
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
class Schedule:
    """How often one check runs, and how long one probe of it may take."""

    interval: float
    timeout: float


@dataclass(frozen=True)
class Target:
    """One mailbox to watch: how to reach it, what to check, and how often.

    A round trip sends through the ``sender`` transport and watches through the ``receiver``
    transport; each transport's settings are in the field of its name (``smtp``, ``imap``,
    ``graph``, ``gmail``, ``mx``, ``pop3``).
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
    graph: GraphConfig | None = None
    gmail: GmailConfig | None = None
    mx: MxConfig | None = None
    pop3: Pop3Config | None = None
    ews: EwsConfig | None = None
    jmap: JmapConfig | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    """Static labels of the target, such as ``provider``, exported on ``mailbox_target_info``."""
    authserv_id: str | None = None
    """The receiving server's authserv-id (RFC 8601): the ``Authentication-Results`` fields
    it adds to the probe are read for verdicts; None: none are read."""

    def interval(self, check: Check) -> float:
        return self.schedules[check].interval

    def timeout(self, check: Check) -> float:
        return self.schedules[check].timeout

    def sections(self) -> dict[str, TransportConfig]:
        """The transports configured for this target, by name."""
        return {
            name: value
            for name in _TARGET_FIELDS
            if isinstance(value := getattr(self, name), TransportConfig)
        }

    def section(self, name: str) -> TransportConfig:
        """The settings of transport ``name``; configuration loading made sure it is there."""
        found = self.sections().get(name)
        if found is None:
            raise LookupError(f"target {self.name} has no {name} section")
        return found

    def secrets(self) -> tuple[str, ...]:
        """Every credential of the target, to keep out of anything shown."""
        return tuple(set().union(*(s.secrets() for s in self.sections().values())))


_TARGET_FIELDS: tuple[str, ...] = tuple(item.name for item in fields(Target))
"""Worked out once: :meth:`Target.sections` is asked of every target several times when a
configuration is checked."""


@dataclass(frozen=True)
class OnDemand:
    """How often ``GET /probe`` may really probe one target: each on-demand round trip sends
    mail through the monitored account, each login check is a login."""

    roundtrip_every: float = 300.0
    """Counted in every account's sending budget (:mod:`exporter.config.budget`)."""
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
class MicrosoftStatus:
    """Microsoft 365 Service Health read over Microsoft Graph with an app-only token (the
    application permission ``ServiceHealth.Read.All``)."""

    graph_url: str
    oauth2: OAuth2Config
    tls_config: TlsConfig
    services: tuple[str, ...]
    """Service names as Service Health spells them (``Exchange Online``)."""


@dataclass(frozen=True)
class GoogleStatus:
    """The Google Workspace Status Dashboard's public JSON feed (no credentials)."""

    feed_url: str
    tls_config: TlsConfig
    services: tuple[str, ...]
    """Product names as the feed spells them (``Gmail``)."""


@dataclass(frozen=True)
class ProviderStatus:
    """Which providers' status pages to read, how often, and how long one fetch may take."""

    interval: float = 300.0
    timeout: float = 30.0
    max_incidents: int = 20
    microsoft: MicrosoftStatus | None = None
    google: GoogleStatus | None = None


@dataclass(frozen=True)
class Config:
    targets: tuple[Target, ...]
    max_concurrent_probes: int = MAX_CONCURRENT_PROBES
    probe_key_file: str | None = None
    on_demand: OnDemand = field(default_factory=OnDemand)
    login_backoff: LoginBackoff = field(default_factory=LoginBackoff)
    provider_status: ProviderStatus | None = None
    """Provider status pages to read; None: none (the default)."""
    location: Location | None = None
    """Where this exporter probes from, for its status page (``global.location``)."""
    maintenance: Maintenance | None = None
    """The Alertmanager whose silences the status page shows (``global.maintenance``)."""
    source: str = field(default="", compare=False)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def longest_interval(self) -> float:
        """The longest interval of any check (0 with no targets)."""
        return max(
            (s.interval for t in self.targets for s in t.schedules.values()), default=0.0
        )

    def longest_timeout(self) -> float:
        """The longest any probe of this configuration may take (0 with no targets)."""
        return max(
            (s.timeout for t in self.targets for s in t.schedules.values()), default=0.0
        )


_SECTION_NAMES: Mapping[str, str] = {
    "ImapConfig": "imap",
    "GraphConfig": "graph",
    "GraphCloud": "graph",
    "GRAPH_CLOUDS": "graph",
    "NationalCloud": "graph",
    "GmailConfig": "gmail",
    "MxConfig": "mx",
    "MxTls": "mx",
    "DkimKey": "mx",
}
"""Names of the transports' own section modules (:mod:`exporter.config.sections`), still
importable from here; they are imported on first use, as those modules build on this one."""


def __getattr__(name: str) -> Any:
    module = _SECTION_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"exporter.config.sections.{module}"), name)

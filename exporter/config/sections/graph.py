"""The ``graph`` section: a Microsoft 365 mailbox over Microsoft Graph
(:mod:`exporter.transports.graph`), and the Entra app credentials that Service Health reads
with too."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from exporter.config.model import (
    ApiEndpoint,
    AssertionAlgorithm,
    OAuth2Config,
    Secret,
    SigningKey,
    TlsConfig,
    TransportConfig,
)
from exporter.config.reader import Reader, Section, join, read_small, rsa_private_key, url

GraphCloud = Literal["global", "usgov", "usgov-dod", "china"]


@dataclass(frozen=True)
class NationalCloud:
    """Where a Microsoft cloud's Graph and identity platform are, and what its Graph offers
    (Microsoft Learn: "Microsoft Graph national cloud deployments"; each API page's table of
    national cloud deployments)."""

    graph: str
    """Graph's root: the API is ``{graph}/v1.0``, the app-only scope ``{graph}/.default``."""
    login: str
    """The identity platform's root (the token endpoint's host)."""
    permanent_delete: bool
    """Whether ``message: permanentDelete`` exists there (the global service only)."""


GRAPH_CLOUDS: Mapping[GraphCloud, NationalCloud] = {
    "global": NationalCloud(
        "https://graph.microsoft.com", "https://login.microsoftonline.com", True
    ),
    "usgov": NationalCloud("https://graph.microsoft.us", "https://login.microsoftonline.us", False),
    "usgov-dod": NationalCloud(
        "https://dod-graph.microsoft.us", "https://login.microsoftonline.us", False
    ),
    "china": NationalCloud(
        "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn", False
    ),
}
"""The Microsoft clouds a ``graph`` section can name: the global service, US Government L4
(GCC High), US Government L5 (DoD) and China operated by 21Vianet."""


@dataclass(frozen=True)
class GraphConfig(ApiEndpoint, TransportConfig):
    """A mailbox in Microsoft 365 reached over Microsoft Graph with an app-only token."""

    username: str
    """The mailbox (``mailbox`` in the file): its address or user principal name."""
    graph_url: str
    """The Graph API's base, version included (``https://graph.microsoft.com/v1.0``)."""
    oauth2: OAuth2Config
    tls_config: TlsConfig
    poll_interval: float = 2.0
    cloud: GraphCloud = "global"
    """The Microsoft cloud the tenant lives in: the default endpoints and scope, and how probes
    are deleted (``permanentDelete`` where it exists)."""

    def _base(self) -> str:
        return self.graph_url

    def secrets(self) -> set[str]:
        return self.oauth2.secrets()


GRAPH_URL = GRAPH_CLOUDS["global"].graph + "/v1.0"
MICROSOFT_APP_KEYS = (
    "tenant",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "client_secret_expires",
    "certificate_file",
    "private_key_file",
    "assertion_algorithm",
    "graph_url",
    "login_url",
    "scope",
    "tls_config",
)
"""An Entra app's settings, for the graph section and for Service Health."""
KEYS: Final = ("mailbox", *MICROSOFT_APP_KEYS, "cloud", "search", "poll_interval")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


ASSERTION_ALGORITHMS: Final[tuple[AssertionAlgorithm, ...]] = ("PS256", "RS256")
"""How a client assertion can be signed. Microsoft's certificate credentials page documents
PS256 with the certificate's SHA-256 thumbprint (``x5t#S256``), the first, the default; RS256
with the SHA-1 thumbprint (``x5t``) is what it documented before, kept for tenants or proxies
that still expect it."""
THUMBPRINT_HEADER: Final[Mapping[AssertionAlgorithm, str]] = {
    "PS256": "x5t#S256",
    "RS256": "x5t",
}
"""The header that names the certificate in an assertion signed with each algorithm."""


def assertion_algorithm(r: Reader, data: dict[str, Any], path: str) -> AssertionAlgorithm:
    """``assertion_algorithm``: one of :data:`ASSERTION_ALGORITHMS`."""
    key_path = join(path, "assertion_algorithm")
    value = data.get("assertion_algorithm", ASSERTION_ALGORITHMS[0])
    for algorithm in ASSERTION_ALGORITHMS:
        if value == algorithm:
            return algorithm
    known = ", ".join(ASSERTION_ALGORITHMS)
    raise r.fail(key_path, f"expected one of {known}, got {value!r}")


def certificate_key(r: Reader, data: dict[str, Any], path: str) -> SigningKey:
    """``certificate_file`` and ``private_key_file``: the key that signs client assertions
    with ``assertion_algorithm``, named by the certificate's thumbprint that goes with it
    (:data:`THUMBPRINT_HEADER`)."""
    if not {"certificate_file", "private_key_file"} <= data.keys():
        raise r.fail(path, "set both certificate_file and private_key_file")
    cert_path = join(path, "certificate_file")
    try:
        certificate = x509.load_pem_x509_certificate(read_small(r, data, "certificate_file", path))
    except ValueError:
        raise r.fail(cert_path, "expected a certificate in PEM") from None
    key_pem = read_small(r, data, "private_key_file", path)
    private_key = rsa_private_key(r, key_pem, join(path, "private_key_file"))
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if private_key.public_key().public_bytes(
        encoding, public
    ) != certificate.public_key().public_bytes(encoding, public):
        raise r.fail(join(path, "private_key_file"), "is not the key of certificate_file")
    algorithm = assertion_algorithm(r, data, path)
    digest = hashes.SHA256() if algorithm == "PS256" else hashes.SHA1()
    return SigningKey(
        private_key=Secret(key_pem.decode("ascii", errors="replace")),
        headers=((THUMBPRINT_HEADER[algorithm], b64url(certificate.fingerprint(digest))),),
        algorithm=algorithm,
        not_after=certificate.not_valid_after_utc.timestamp(),
    )


def microsoft_app(
    r: Reader,
    data: dict[str, Any],
    path: str,
    tls_config: TlsConfig,
    cloud: NationalCloud = GRAPH_CLOUDS["global"],
) -> OAuth2Config:
    """An Entra app's app-only credentials: a client secret or a certificate (client
    assertion), for Graph (mail, or Service Health); the login host and the scope default to
    ``cloud``'s."""
    tenant = r.get(data, "tenant", path, r.string)
    login_url = url(r, data, "login_url", path, cloud.login)
    secret_keys = ("client_secret", "client_secret_file", "client_secret_env")
    certificate = any(key in data for key in ("certificate_file", "private_key_file"))
    if certificate and any(key in data for key in (*secret_keys, "client_secret_expires")):
        raise r.fail(path, "set either a client secret or certificate_file, not both")
    if "assertion_algorithm" in data and not certificate:
        raise r.fail(
            join(path, "assertion_algorithm"),
            "applies to certificate credentials only: set certificate_file",
        )
    return OAuth2Config(
        token_url=f"{login_url}/{tenant}/oauth2/v2.0/token",
        scope=r.get(data, "scope", path, r.string, cloud.graph + "/.default"),
        grant="client_credentials",
        client_id=r.get(data, "client_id", path, r.string),
        client_secret=None if certificate else r.secret(data, path, "client_secret"),
        refresh_token=None,
        signing_key=certificate_key(r, data, path) if certificate else None,
        tls_config=tls_config,
        client_secret_expires=(
            None
            if data.get("client_secret_expires") is None
            else expiry(r, data["client_secret_expires"], join(path, "client_secret_expires"))
        ),
    )


def expiry(r: Reader, value: Any, path: str) -> float:
    """``client_secret_expires``: the date (or date and time, UTC unless it says otherwise)
    the Entra admin center shows for the secret, as seconds since 1970."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            when = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise r.fail(
                path, "expected a date such as 2027-03-01 (or 2027-03-01T12:00:00Z)"
            ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def read_section(r: Reader, data: dict[str, Any], path: str) -> GraphConfig:
    tls_config = r.tls_config(data.get("tls_config"), join(path, "tls_config"))
    if "search" in data:
        raise r.fail(
            join(path, "search"),
            "is no longer used: probes are found by reading the newest messages and their "
            "headers; remove it",
        )
    cloud = data.get("cloud", "global")
    if cloud not in GRAPH_CLOUDS:
        known = ", ".join(GRAPH_CLOUDS)
        raise r.fail(join(path, "cloud"), f"expected one of {known}, got {cloud!r}")
    settings = GRAPH_CLOUDS[cloud]
    return GraphConfig(
        username=r.get(data, "mailbox", path, r.address),
        graph_url=url(r, data, "graph_url", path, settings.graph + "/v1.0"),
        oauth2=microsoft_app(r, data, path, tls_config, settings),
        tls_config=tls_config,
        poll_interval=r.get(data, "poll_interval", path, r.duration, 2.0),
        cloud=cloud,
    )


SECTION: Final = Section(KEYS, read_section, sends=True, receives=True)

"""The ``ews`` section: a mailbox on Exchange Server (2016, 2019, Subscription Edition) reached
over Exchange Web Services (:mod:`exporter.transports.ews`), with NTLM, Basic or OAuth2."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from exporter.config.model import (
    ApiEndpoint,
    OAuth2Config,
    Secret,
    TlsConfig,
    TransportConfig,
    revealed,
)
from exporter.config.reader import Reader, Section, join, url
from exporter.config.sections.graph import MICROSOFT_APP_KEYS, microsoft_app

EwsAuth = Literal["ntlm", "basic", "oauth2"]
AUTH_KINDS: Final[tuple[EwsAuth, ...]] = ("ntlm", "basic", "oauth2")
"""How the exporter signs in: NTLM (Exchange's default for EWS on premises), Basic (over
HTTPS only), or an app-only OAuth2 token (hybrid modern authentication)."""
Disposition = Literal["SendAndSaveCopy", "SendOnly"]
SEND_MODES: Final[Mapping[str, Disposition]] = {
    "send_and_save_copy": "SendAndSaveCopy",
    "send_only": "SendOnly",
}
"""``send_mode`` in the file, and the ``MessageDisposition`` of ``CreateItem`` it stands for
(MS-OXWSCORE): with a copy kept in Sent Items (deleted by the round trip), or none."""
POLL_INTERVAL: Final = 2.0
"""Default longest pause between two looks into the Inbox."""
OAUTH2_KEYS: Final = tuple(
    key for key in MICROSOFT_APP_KEYS if key not in ("graph_url", "tls_config")
)
"""An Entra app's settings, read as the ``graph`` section reads them; the section's own
``url`` and ``tls_config`` stand for Graph's."""
KEYS: Final = (
    "mailbox",
    "url",
    "auth",
    "username",
    "password",
    "password_file",
    "password_env",
    "oauth2",
    "send_mode",
    "poll_interval",
    "tls_config",
)
EWS_PATH: Final = "/EWS/Exchange.asmx"


@dataclass(frozen=True)
class EwsConfig(ApiEndpoint, TransportConfig):
    """A mailbox on Exchange Server over EWS."""

    username: str
    """The mailbox (``mailbox`` in the file): its primary SMTP address."""
    url: str
    """The EWS endpoint, ``https://mail.example.com/EWS/Exchange.asmx``."""
    auth: EwsAuth
    login: str
    """The account that signs in with NTLM or Basic (``DOMAIN\\user`` or a UPN); empty with
    OAuth2, where the app acts for the mailbox (``ExchangeImpersonation``)."""
    password: Secret | None
    oauth2: OAuth2Config | None
    tls_config: TlsConfig
    send_mode: Disposition = "SendOnly"
    poll_interval: float = POLL_INTERVAL

    def _base(self) -> str:
        return self.url

    def secrets(self) -> set[str]:
        return revealed(self.password) | (self.oauth2.secrets() if self.oauth2 else set())


def _auth(r: Reader, data: dict[str, Any], path: str) -> EwsAuth:
    """``auth``: one of :data:`AUTH_KINDS`, NTLM by default."""
    value = data.get("auth", AUTH_KINDS[0])
    for kind in AUTH_KINDS:
        if value == kind:
            return kind
    raise r.fail(join(path, "auth"), f"expected one of {', '.join(AUTH_KINDS)}, got {value!r}")


def _send_mode(r: Reader, data: dict[str, Any], path: str) -> Disposition:
    """``send_mode``: one of :data:`SEND_MODES`; by default no copy in Sent Items, as the
    Graph sender keeps none: nothing is left to clean up if a copy is slow to appear."""
    value = data.get("send_mode", "send_only")
    if value not in SEND_MODES:
        known = ", ".join(SEND_MODES)
        raise r.fail(join(path, "send_mode"), f"expected one of {known}, got {value!r}")
    return SEND_MODES[value]


def _without_userinfo(r: Reader, data: dict[str, Any], path: str) -> None:
    """A url naming an account (``https://user:password@host/...``) is refused, before anything
    would repeat it: its password would be no secret the exporter knows to hide, and the
    HTTP client would send it as Basic authentication besides the configured one."""
    value = data.get("url")
    try:
        named = isinstance(value, str) and "@" in urlsplit(value).netloc
    except ValueError:
        return  # the url reader says what is wrong with it
    if named:
        raise r.fail(
            join(path, "url"), "the url names no account or password: use username and password"
        )


def read_section(r: Reader, data: dict[str, Any], path: str) -> EwsConfig:
    tls_config = r.tls_config(data.get("tls_config"), join(path, "tls_config"))
    _without_userinfo(r, data, path)
    endpoint = url(r, data, "url", path, r.get(data, "url", path, r.string))
    auth = _auth(r, data, path)
    if auth == "basic" and urlsplit(endpoint).scheme != "https" and not _loopback(endpoint):
        raise r.fail(join(path, "auth"), "basic sends the password as it is: use an https url")
    oauth2: OAuth2Config | None = None
    password: Secret | None = None
    login = ""
    if auth == "oauth2":
        if any(key in data for key in ("username", "password", "password_file", "password_env")):
            raise r.fail(path, "auth oauth2 takes no username or password: set oauth2")
        app = r.mapping(r.get(data, "oauth2", path, _present), join(path, "oauth2"), OAUTH2_KEYS)
        oauth2 = microsoft_app(r, app, join(path, "oauth2"), tls_config)
        if "scope" not in app:
            parts = urlsplit(endpoint)
            oauth2 = replace(oauth2, scope=f"{parts.scheme}://{parts.netloc}/.default")
    else:
        if "oauth2" in data:
            raise r.fail(join(path, "oauth2"), "only used with auth: oauth2")
        login = r.get(data, "username", path, r.string)
        password = r.secret(data, path)
    return EwsConfig(
        username=r.get(data, "mailbox", path, r.address),
        url=endpoint,
        auth=auth,
        login=login,
        password=password,
        oauth2=oauth2,
        tls_config=tls_config,
        send_mode=_send_mode(r, data, path),
        poll_interval=r.get(data, "poll_interval", path, r.duration, POLL_INTERVAL),
    )


def _present(value: Any, path: str) -> Any:
    return value


def _loopback(endpoint: str) -> bool:
    """A test server on this host: Basic over plain HTTP never leaves the machine."""
    return urlsplit(endpoint).hostname in ("127.0.0.1", "::1", "localhost")


SECTION: Final = Section(KEYS, read_section, sends=True, receives=True)

"""The ``gmail`` section: a Gmail or Google Workspace mailbox over the Gmail API
(:mod:`exporter.transports.gmail`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Final

from exporter.config.model import (
    ApiEndpoint,
    OAuth2Config,
    Secret,
    SigningKey,
    TlsConfig,
    TransportConfig,
)
from exporter.config.reader import (
    OAUTH2_KEYS,
    Reader,
    Section,
    join,
    read_small,
    rsa_private_key,
    url,
)


@dataclass(frozen=True)
class GmailConfig(ApiEndpoint, TransportConfig):
    """A Gmail or Google Workspace mailbox reached over the Gmail API."""

    username: str
    """The mailbox (``mailbox`` in the file): the user the API acts for."""
    api_url: str
    """The API's base, version included (``https://gmail.googleapis.com/gmail/v1``)."""
    oauth2: OAuth2Config
    tls_config: TlsConfig
    poll_interval: float = 2.0

    def _base(self) -> str:
        return self.api_url

    def secrets(self) -> set[str]:
        return self.oauth2.secrets()


GMAIL_URL = "https://gmail.googleapis.com"
GMAIL_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
KEYS: Final = (
    "mailbox",
    "service_account_file",
    "oauth2",
    "api_url",
    "token_url",
    "scope",
    "poll_interval",
    "tls_config",
)


def service_account(
    r: Reader, data: dict[str, Any], path: str, mailbox: str, scope: str
) -> OAuth2Config:
    """A service account's JSON key file: a JWT bearer grant acting for ``mailbox``."""
    key_path = join(path, "service_account_file")
    try:
        account = json.loads(read_small(r, data, "service_account_file", path))
    except ValueError:
        raise r.fail(key_path, "expected a service account's JSON key file") from None
    if not isinstance(account, dict) or account.get("type") != "service_account":
        raise r.fail(key_path, 'expected a JSON key file with "type": "service_account"')
    for field in ("client_email", "private_key"):
        if not isinstance(account.get(field), str) or not account[field]:
            raise r.fail(key_path, f"the key file has no {field}")
    pem = str(account["private_key"])
    rsa_private_key(r, pem.encode(), key_path)
    key_id = account.get("private_key_id")
    token_url = account.get("token_uri") if isinstance(account.get("token_uri"), str) else None
    return OAuth2Config(
        token_url=url(r, data, "token_url", path, token_url or GOOGLE_TOKEN_URL),
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


def read_section(r: Reader, data: dict[str, Any], path: str) -> GmailConfig:
    tls_config = r.tls_config(data.get("tls_config"), join(path, "tls_config"))
    mailbox = r.get(data, "mailbox", path, r.address)
    scope = r.get(data, "scope", path, r.string, GMAIL_SCOPE)
    if ("service_account_file" in data) == ("oauth2" in data):
        raise r.fail(path, "set exactly one of service_account_file, oauth2")
    if "oauth2" in data:
        if "token_url" in data:
            raise r.fail(join(path, "token_url"), "set it in oauth2 (used with a service account)")
        oauth2_path = join(path, "oauth2")
        given = r.mapping(data["oauth2"], oauth2_path, OAUTH2_KEYS)
        oauth2 = r.oauth2(
            {"provider": "google", "grant": "refresh_token", "scope": scope, **given},
            oauth2_path,
            "gmail",
        )
        if oauth2.grant != "refresh_token":
            raise r.fail(join(oauth2_path, "grant"), "the Gmail API takes refresh_token here")
    else:
        oauth2 = service_account(r, data, path, mailbox, scope)
    return GmailConfig(
        username=mailbox,
        api_url=url(r, data, "api_url", path, GMAIL_URL) + "/gmail/v1",
        oauth2=replace(oauth2, tls_config=tls_config),
        tls_config=tls_config,
        poll_interval=r.get(data, "poll_interval", path, r.duration, 2.0),
    )


SECTION: Final = Section(KEYS, read_section, sends=True, receives=True)

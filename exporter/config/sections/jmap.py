"""The ``jmap`` section: a mailbox reached over JMAP (RFC 8620, RFC 8621;
:mod:`exporter.transports.jmap`), with a password (HTTP Basic) or an API token (Bearer)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from exporter.config.model import Secret, ServerConfig, revealed
from exporter.config.reader import Reader, Section, join, url

POLL_INTERVAL: Final = 2.0
"""Default longest pause between looks when the server pushes no changes."""
WELL_KNOWN: Final = "/.well-known/jmap"
"""Where a server's session resource is found when ``url`` names only the server (RFC 8620,
section 2.2)."""
KEYS: Final = (
    "url",
    "username",
    "password",
    "password_file",
    "password_env",
    "token",
    "token_file",
    "token_env",
    "tls_config",
    "poll_interval",
    "push",
)


@dataclass(frozen=True)
class JmapConfig(ServerConfig):
    """A JMAP account: its session resource, and a password or an API token.

    ``host``, ``port`` and ``tls`` are read from ``url`` (what the status page and the
    certificate checks show); ``oauth2`` is always None: the token is one the provider issued
    for the account (Fastmail's API tokens), sent as it is.
    """

    url: str = ""
    """The session resource (``https://host/.well-known/jmap`` or the provider's own)."""
    token: Secret | None = None
    poll_interval: float = POLL_INTERVAL
    push: bool = True
    """Whether to wait for the server's push (EventSource, RFC 8620 section 7.3) where it
    offers it; looks are polled otherwise, and always while push is not working."""

    def authorization(self) -> str:
        """The ``Authorization`` header's value."""
        if self.token is not None:
            return "Bearer " + self.token.reveal()
        return "Basic " + basic(self.username, self.password)

    def secrets(self) -> set[str]:
        """The password, the token, and the Basic credentials they make (base64 of
        ``user:password``), which is as good as the password."""
        found = revealed(self.password, self.token)
        if self.password is not None and self.password.reveal():
            found.add(basic(self.username, self.password))
        return found


def basic(username: str, password: Secret | None) -> str:
    """HTTP Basic credentials (RFC 7617): base64 of ``user:password`` in UTF-8."""
    secret = "" if password is None else password.reveal()
    return base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")


def session_url(value: str) -> str:
    """``url`` as given, or the well-known session resource of a bare server URL."""
    return value if urlsplit(value).path not in ("", "/") else value.rstrip("/") + WELL_KNOWN


def read_section(r: Reader, data: dict[str, Any], path: str) -> JmapConfig:
    given = [key for key in KEYS if key.startswith(("password", "token")) and key in data]
    if len({key.split("_")[0] for key in given}) != 1:
        what = "none" if not given else ", ".join(given)
        raise r.fail(path, f"set a password or a token (found {what})")
    password = r.secret(data, path, "password", required=False)
    token = r.secret(data, path, "token", required=False)
    if data.get("url") is None:
        raise r.fail(join(path, "url"), "required")
    address = session_url(url(r, data, "url", path, ""))
    parts = urlsplit(address)
    https = parts.scheme == "https"
    if "@" in parts.netloc:
        raise r.fail(join(path, "url"), "must not hold credentials: use username and password")
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        raise r.fail(join(path, "url"), f"expected a port from 1 to 65535 in {address!r}") from None
    return JmapConfig(
        host=parts.hostname or "",
        port=port,
        tls="implicit" if https else "none",
        username=r.get(data, "username", path, r.string),
        password=password,
        oauth2=None,
        tls_config=r.tls_config(data.get("tls_config"), join(path, "tls_config")),
        url=address,
        token=token,
        poll_interval=r.get(data, "poll_interval", path, r.duration, POLL_INTERVAL),
        push=r.get(data, "push", path, r.boolean, True),
    )


SECTION: Final = Section(KEYS, read_section, sends=True, receives=True)

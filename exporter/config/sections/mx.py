"""The ``mx`` section: delivery to a domain's MX hosts as a mail server sends
(:mod:`exporter.transports.mx`)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exporter.config.model import (
    OAuth2Config,
    Secret,
    TlsConfig,
    TlsMode,
    TransportConfig,
    revealed,
)
from exporter.config.reader import Reader, Section, join, read_small

MxTls = Literal["required", "opportunistic"]


@dataclass(frozen=True)
class DkimKey:
    """How the ``mx`` sender signs the probe (DKIM, RFC 6376): the signing domain ``d=``, the
    selector ``s=`` whose public key is published at ``SELECTOR._domainkey.DOMAIN``, and the
    private key in PEM."""

    domain: str
    selector: str
    private_key: Secret


@dataclass(frozen=True)
class MxConfig(TransportConfig):
    """Delivery to the recipient domain's MX hosts, as a mail server sends: no login.

    ``resolver`` is the DNS server asked, as (address, port); None: the system's. ``port`` is
    the port of every MX host (25 but in tests).
    """

    username: str
    """The envelope sender, MAIL FROM (``mail_from`` in the file): where bounces go, the domain
    SPF checks; empty: the target's ``from``."""
    resolver: tuple[str, int] | None
    port: int
    starttls: MxTls
    tls_config: TlsConfig
    dkim: DkimKey | None = None

    @property
    def host(self) -> str:
        """None fixed: the MX hosts are looked up at each probe."""
        return ""

    @property
    def tls(self) -> TlsMode:
        return "starttls"

    @property
    def oauth2(self) -> OAuth2Config | None:
        return None

    def secrets(self) -> set[str]:
        return revealed(self.dkim.private_key) if self.dkim else set()


KEYS: Final = ("mail_from", "resolver", "port", "tls", "tls_config", "dkim")
DKIM_KEYS = ("domain", "selector", "private_key_file")
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")
"""Labels joined by dots, so that a name splits into labels one way only: an optional dot
after each label let a long invalid name be tried in exponentially many splits."""


def resolver(r: Reader, value: Any, path: str) -> tuple[str, int]:
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


def dkim(r: Reader, value: Any, path: str) -> DkimKey:
    """The DKIM signing domain, selector and RSA key (kept as PKCS#1 PEM, which dkimpy reads)."""
    data = r.mapping(value, path, DKIM_KEYS)
    names: dict[str, str] = {}
    for key in ("domain", "selector"):
        names[key] = r.get(data, key, path, r.string)
        if not _DNS_NAME.fullmatch(names[key]):
            raise r.fail(join(path, key), f"expected a DNS name, got {names[key]!r}")
    r.get(data, "private_key_file", path, r.string)
    pem = read_small(r, data, "private_key_file", path)
    key_path = join(path, "private_key_file")
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


def read_section(r: Reader, data: dict[str, Any], path: str) -> MxConfig:
    starttls = data.get("tls", "required")
    if starttls not in ("required", "opportunistic"):
        raise r.fail(join(path, "tls"), f"expected required or opportunistic, got {starttls!r}")
    return MxConfig(
        username=r.get(data, "mail_from", path, r.address, ""),
        resolver=(
            resolver(r, data["resolver"], join(path, "resolver"))
            if data.get("resolver") is not None
            else None
        ),
        port=r.get(data, "port", path, r.port, 25),
        starttls=starttls,
        tls_config=r.tls_config(data.get("tls_config"), join(path, "tls_config")),
        dkim=dkim(r, data["dkim"], join(path, "dkim")) if data.get("dkim") is not None else None,
    )


SECTION: Final = Section(KEYS, read_section, sends=True)

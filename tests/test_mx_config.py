"""The mx section and authserv_id as configuration: defaults, and mistakes named by their place."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exporter.config import ConfigError, parse
from exporter.config.model import MxConfig

BASE = """
targets:
  - name: inbound
    sender: mx
    from: probe@sender.test
    to: monitor@example.test
    imap: {host: imap.example.test, username: monitor@example.test, password: pw}
"""


def _mx(text: str, base_dir: Path | None = None) -> MxConfig:
    target = parse(BASE + text, base_dir=base_dir).targets[0]
    assert isinstance(target.mx, MxConfig)
    return target.mx


def test_defaults() -> None:
    target = parse(BASE + "    mx: {}\n    authserv_id: mx.example.test\n").targets[0]
    assert target.mx is not None and target.authserv_id == "mx.example.test"
    assert (target.mx.port, target.mx.starttls, target.mx.resolver) == (25, "required", None)
    assert target.mx.username == "" and target.mail_from == "probe@sender.test"
    assert parse(BASE + "    mx: {port: 25}\n").targets[0].authserv_id is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_resolver(value: str, expected: tuple[str, int]) -> None:
    assert _mx(f"    mx: {{resolver: '{value}'}}\n").resolver == expected


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ("{resolver: dns.example.test}", "targets[0].mx.resolver"),
        ("{resolver: '10.0.0.53:99999'}", "targets[0].mx.resolver"),
        ("{tls: starttls}", "targets[0].mx.tls"),
        ("{mail_from: nobody}", "targets[0].mx.mail_from"),
        ("{dkim: {domain: sender.test, selector: sel}}", "targets[0].mx.dkim.private_key_file"),
        ("{password: x}", "targets[0].mx.password"),
    ],
)
def test_mistakes_are_named_by_their_place(section: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(BASE + f"    mx: {section}\n")
    assert caught.value.path == where


def test_dkim_key_is_read_as_rsa_and_kept_secret(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    mx = _mx(
        "    mx: {dkim: {domain: sender.test, selector: sel, private_key_file: dkim.pem}}\n",
        tmp_path,
    )
    assert mx.dkim is not None and mx.dkim.selector == "sel"
    assert mx.dkim.private_key.reveal().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert mx.dkim.private_key.reveal() in mx.secrets()
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="RSA"):
        _mx(
            "    mx: {dkim: {domain: sender.test, selector: sel, private_key_file: ec.pem}}\n",
            tmp_path,
        )

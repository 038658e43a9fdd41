"""The ``mx`` sender against real servers on loopback: dnsmasq serves the zone (two MX hosts,
the first one down), real Postfix takes the probe on its MX port with STARTTLS, real Dovecot
delivers it; opendkim, opendmarc and policyd-spf on that Postfix add Authentication-Results,
whose verdicts the round trip reads."""

from __future__ import annotations

import base64
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exporter import probes
from exporter.config import Target, parse
from exporter.outcome import Check, Phase, Reason
from exporter.probes import roundtrip
from exporter.probes.context import ProbeContext
from exporter.result import ProbeResult
from exporter.transports import ProbeMessage
from testing.dns import DnsServer
from testing.mailstack import MailStack, MailUser, TlsFiles
from testing.milters import Milters

pytestmark = pytest.mark.services  # DNS, milters and a stack of its own

SENDER = "sender.test"
AUTHSERV_ID = "mx.example.test"
SPF = "v=spf1 ip4:127.0.0.1 -all"
DOWN = "127.0.0.2"
"""Where the first MX host points: on loopback, but nothing listens there (refused at once)."""


def _public_key(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@dataclass
class Inbound:
    """The zone, the receiving checks and the stack, with what a target needs of them."""

    dns: DnsServer
    milters: Milters
    stack: MailStack
    directory: Path
    dkim_record: str

    def zone(self) -> None:
        dns = self.dns
        dns.mx.clear()
        dns.mx["example.test"] = [(10, "mx1.example.test"), (20, "mx2.example.test")]
        dns.a.update({"mx1.example.test": DOWN, "mx2.example.test": "127.0.0.1"})
        dns.txt[SENDER] = SPF
        dns.txt[f"sel._domainkey.{SENDER}"] = self.dkim_record
        dns.txt[f"_dmarc.{SENDER}"] = "v=DMARC1; p=reject"
        dns.apply()


@pytest.fixture(scope="module")
def inbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbound]:
    directory = tmp_path_factory.mktemp("mx")
    assert _refused(DOWN)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert = ca.issue_cert("mx1.example.test", "mx2.example.test", "mail.example.test")
    tls = TlsFiles.write(
        directory / "tls", cert.private_key_and_cert_chain_pem.bytes(), cert.private_key_pem.bytes()
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with DnsServer(directory / "dns") as dns:
        setup = Inbound(dns, None, None, directory, _public_key(key))  # type: ignore[arg-type]
        setup.zone()
        with Milters(directory / "milters", dns, AUTHSERV_ID) as milters:
            setup.milters = milters
            with MailStack(
                directory / "stack",
                tls=tls,
                mx=True,
                mx_milters=milters.milters,
                mx_policy=milters.policy,
            ) as stack:
                setup.stack = stack
                yield setup


def _refused(address: str) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, 1)) == 111  # ECONNREFUSED


@pytest.fixture
def user(inbound: Inbound) -> MailUser:
    return inbound.stack.add_user(f"mx{secrets.token_hex(3)}", "pw-" + secrets.token_hex(8))


def target(inbound: Inbound, user: MailUser, mx: str = "", to: str = "") -> Target:
    stack, directory = inbound.stack, inbound.directory
    text = f"""
targets:
  - name: inbound
    sender: mx
    receiver: imap
    from: probe@{SENDER}
    to: {to or user.address}
    timeout: 15s
    authserv_id: {AUTHSERV_ID}
    mx:
      resolver: {inbound.dns.address}
      port: {stack.mx_port}
      tls_config: {{ca_file: {directory / "ca.pem"}}}
      dkim: {{domain: {SENDER}, selector: sel, private_key_file: {directory / "dkim.pem"}}}
{mx}
    imap:
      host: 127.0.0.1
      port: {stack.imap_port}
      tls: none
      username: {user.address}
      password: {user.password}
"""
    return parse(text).targets[0]


async def _run(target: Target, context: ProbeContext, limit: float = 10) -> ProbeResult:
    return await probes.run(target, Check.ROUNDTRIP, context, time_limit=limit, transcript=True)


async def test_delivered_through_the_second_mx_with_starttls_and_passing_checks(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    result = await _run(target(inbound, user), context)
    assert result.success, (result, "\n".join(result.transcript))
    assert {Phase.MX_LOOKUP, Phase.MX_CONNECT, Phase.MX_TLS, Phase.MX_SEND} <= set(result.phases)
    transcript = "\n".join(result.transcript)
    assert f"mx1.example.test [{DOWN}]" in transcript  # tried first, refused
    assert result.found.tls["mx"].version.startswith("TLSv1.")
    assert result.found.authentication == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert inbound.stack.message_files(user) == []  # cleaned up


async def test_no_mx_records_and_no_domain_fail_as_dns_in_the_lookup(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    inbound.dns.mx.pop("example.test")
    inbound.dns.apply()
    try:
        no_mx = await _run(target(inbound, user), context)
    finally:
        inbound.zone()
    assert (no_mx.reason, no_mx.phase) == (Reason.DNS, Phase.MX_LOOKUP)
    assert "example.test" in no_mx.detail
    nowhere = await _run(target(inbound, user, to="someone@nowhere.test"), context)
    assert (nowhere.reason, nowhere.phase) == (Reason.DNS, Phase.MX_LOOKUP)
    assert "NXDOMAIN" in nowhere.detail


async def test_a_421_from_the_mx_is_its_reason_with_the_host(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    inbound.stack.refuse_mx("421 4.3.2 Service shutting down for maintenance")
    try:
        result = await _run(target(inbound, user), context)
    finally:
        inbound.stack.refuse_mx(None)
    assert (result.reason, result.phase) == (Reason.UNAVAILABLE, Phase.MX_SEND)
    assert "mx2.example.test [127.0.0.1]" in result.detail
    assert "421 4.3.2" in result.detail  # Postfix: "<unknown[127.0.0.1]>: Client host rejected:"
    assert "Service shutting down for maintenance" in result.detail


async def test_an_mx_without_starttls_fails_unless_opportunistic(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    inbound.stack.mx_starttls(False)
    try:
        required = await _run(target(inbound, user), context)
        opportunistic = await _run(target(inbound, user, mx="      tls: opportunistic"), context)
    finally:
        inbound.stack.mx_starttls(True)
    assert (required.reason, required.phase) == (Reason.TLS, Phase.MX_TLS)
    assert "mx2.example.test" in required.detail and "STARTTLS" in required.detail
    assert opportunistic.success, opportunistic
    assert "mx" not in opportunistic.found.tls


async def test_a_certificate_for_another_name_fails_as_tls(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    inbound.dns.mx["example.test"] = [(10, "elsewhere.example.test")]
    inbound.dns.a["elsewhere.example.test"] = "127.0.0.1"
    inbound.dns.apply()
    try:
        result = await _run(target(inbound, user), context)
    finally:
        inbound.zone()
    assert (result.reason, result.phase) == (Reason.TLS, Phase.MX_TLS)
    assert "elsewhere.example.test" in result.detail and "certificate" in result.detail


async def test_a_broken_dkim_key_then_spf_record_fail_their_verdicts(
    inbound: Inbound, user: MailUser, context: ProbeContext
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inbound.dns.txt[f"sel._domainkey.{SENDER}"] = _public_key(other)
    inbound.dns.apply()
    try:
        dkim_broken = await _run(target(inbound, user), context)
        inbound.dns.txt[SENDER] = "v=spf1 ip4:192.0.2.1 -all"
        inbound.dns.apply()
        both_broken = await _run(target(inbound, user), context)
    finally:
        inbound.zone()
    assert dkim_broken.success and both_broken.success
    assert dkim_broken.found.authentication == {"spf": "pass", "dkim": "fail", "dmarc": "pass"}
    assert both_broken.found.authentication == {"spf": "fail", "dkim": "fail", "dmarc": "fail"}


async def test_authentication_results_forged_by_the_sender_are_ignored(
    inbound: Inbound, user: MailUser, context: ProbeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = (
        f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom={SENDER};\r\n"
        f" dkim=pass header.d={SENDER}; dmarc=pass header.from={SENDER}\r\n"
        "Authentication-Results: evil.example; dkim=fail; spf=fail; dmarc=fail\r\n"
    ).encode()
    compose = roundtrip.compose

    def forging(target: Target, probe_id: str) -> ProbeMessage:
        probe = compose(target, probe_id)
        return replace(probe, raw=forged + probe.raw)

    monkeypatch.setattr(roundtrip, "compose", forging)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inbound.dns.txt[f"sel._domainkey.{SENDER}"] = _public_key(other)
    inbound.dns.txt[SENDER] = "v=spf1 ip4:192.0.2.1 -all"
    inbound.dns.apply()
    try:
        result = await _run(target(inbound, user), context)
    finally:
        inbound.zone()
    assert result.success, result
    assert result.found.authentication == {"spf": "fail", "dkim": "fail", "dmarc": "fail"}

"""TLS on both protocols and both modes, against real Postfix and Dovecot, with trustme."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from exporter import config, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from exporter.serve.metrics import render
from exporter.state import Store
from testing.mailstack import MailStack, MailUser, TlsFiles
from testing.targets import probe_files

pytestmark = pytest.mark.services  # stacks of its own

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _files(directory: Path, leaf: trustme.LeafCert) -> TlsFiles:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return TlsFiles.write(directory, chain, leaf.private_key_pem.bytes())


def _stack(factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[tuple[MailStack, MailUser]]:
    stack = MailStack(factory.mktemp("tlsstack"), tls=tls)
    user = stack.add_user("tls", "pw-tls-1")
    with stack:
        yield stack, user


@pytest.fixture(scope="module")
def valid(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MailStack, MailUser, trustme.LeafCert]]:
    leaf = ca.issue_cert("localhost", "127.0.0.1", not_after=NOW + datetime.timedelta(days=40))
    for stack, user in _stack(tmp_path_factory, _files(tmp_path_factory.mktemp("v"), leaf)):
        yield stack, user, leaf


def _target(
    stack: MailStack, user: MailUser, ca_file: Path, smtp_tls: str, imap_tls: str, extra: str = ""
) -> Target:
    smtp_port = stack.smtps_port if smtp_tls == "implicit" else stack.smtp_port
    imap_port = stack.imaps_port if imap_tls == "implicit" else stack.imap_port
    tls_config = f"tls_config: {{ca_file: {ca_file}{extra}}}"
    return config.parse(
        "targets:\n"
        "  - name: tls\n"
        "    interval: 10s\n"
        "    timeout: 10s\n"
        f"    smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: {smtp_tls}, "
        f"username: {user.address}, password: {user.password}, {tls_config}}}\n"
        f"    imap: {{host: 127.0.0.1, port: {imap_port}, tls: {imap_tls}, "
        f"username: {user.address}, password: {user.password}, {tls_config}}}\n"
    ).targets[0]


def _not_after(leaf: trustme.LeafCert) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    return cert.not_valid_after_utc.timestamp()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_valid_certificates_pass_and_are_measured(
    valid: tuple[MailStack, MailUser, trustme.LeafCert],
    ca_file: Path,
    mode: str,
    context: ProbeContext,
) -> None:
    stack, user, leaf = valid
    target = _target(stack, user, ca_file, mode, mode)
    results = {check: await probes.run(target, check, context) for check in target.checks}
    for check, result in results.items():
        assert result.success, (check, result)
    assert Phase.SMTP_TLS in results[Check.SMTP_LOGIN].phases
    assert Phase.IMAP_TLS in results[Check.IMAP_LOGIN].phases
    assert probe_files(stack, user) == []
    for protocol in ("smtp", "imap"):
        session = results[Check.ROUNDTRIP].found.tls[protocol]
        assert session.version in ("TLSv1.2", "TLSv1.3")
        assert session.not_after == _not_after(leaf)

    store = Store()
    store.configure(config.Config(targets=(target,)))
    for result in results.values():
        store.record(result)
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(render(store))
        for sample in family.samples
    }
    for protocol in ("smtp", "imap"):
        labels = {("target", "tls"), ("protocol", protocol)}
        expiry = samples[("mailbox_tls_certificate_expiry_timestamp_seconds", frozenset(labels))]
        assert expiry == _not_after(leaf)
        version = results[Check.ROUNDTRIP].found.tls[protocol].version
        assert (
            samples[("mailbox_tls_version_info", frozenset(labels | {("version", version)}))] == 1
        )


BAD_CERTIFICATES = {
    "expired": (
        "certificate has expired",
        {
            "not_before": NOW - datetime.timedelta(days=30),
            "not_after": NOW - datetime.timedelta(days=1),
        },
    ),
    "wrong host name": ("mismatch", {"names": ("mail.elsewhere.example",)}),
    "self-signed": ("self-signed certificate", {}),
}


@pytest.mark.parametrize("problem", list(BAD_CERTIFICATES))
async def test_bad_certificates_fail_with_tls_in_the_tls_phase(
    ca: trustme.CA,
    ca_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
    problem: str,
    context: ProbeContext,
) -> None:
    expected, options = BAD_CERTIFICATES[problem]
    if problem == "self-signed":
        other = trustme.CA()
        files = TlsFiles.write(
            tmp_path_factory.mktemp("ss"), other.cert_pem.bytes(), other.private_key_pem.bytes()
        )
    else:
        names = options.pop("names", ("localhost", "127.0.0.1"))
        leaf = ca.issue_cert(*names, **options)  # type: ignore[arg-type]
        files = _files(tmp_path_factory.mktemp("bad"), leaf)
    for stack, user in _stack(tmp_path_factory, files):
        for mode in ("starttls", "implicit"):
            target = _target(stack, user, ca_file, mode, mode)
            for check, phase in (
                (Check.SMTP_LOGIN, Phase.SMTP_TLS),
                (Check.IMAP_LOGIN, Phase.IMAP_TLS),
                (Check.ROUNDTRIP, Phase.IMAP_TLS),
            ):
                result = await probes.run(target, check, context)
                assert (result.reason, result.phase) == (Reason.TLS, phase), (mode, result)
                assert expected in result.detail, result.detail


async def test_insecure_skip_verify_connects_and_still_reads_the_expiry(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory, ca_file: Path, context: ProbeContext
) -> None:
    leaf = ca.issue_cert(
        "mail.elsewhere.example",
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW - datetime.timedelta(days=1),
    )
    for stack, user in _stack(tmp_path_factory, _files(tmp_path_factory.mktemp("in"), leaf)):
        target = _target(
            stack, user, ca_file, "implicit", "implicit", ", insecure_skip_verify: true"
        )
        result = await probes.run(target, Check.IMAP_LOGIN, context)
        assert result.success, result
        assert result.found.tls["imap"].not_after == _not_after(leaf)


async def test_starttls_configured_but_not_offered(
    mailstack: MailStack, user: MailUser, ca_file: Path, context: ProbeContext
) -> None:
    target = _target(mailstack, user, ca_file, "starttls", "starttls")
    for check, phase in ((Check.SMTP_LOGIN, Phase.SMTP_TLS), (Check.IMAP_LOGIN, Phase.IMAP_TLS)):
        result = await probes.run(target, check, context)
        assert (result.reason, result.phase) == (Reason.TLS, phase), result
        assert "does not offer STARTTLS" in result.detail


async def test_the_configured_server_name_is_the_one_verified(
    valid: tuple[MailStack, MailUser, trustme.LeafCert], ca_file: Path, context: ProbeContext
) -> None:
    stack, user, _ = valid
    target = _target(
        stack, user, ca_file, "implicit", "implicit", ", server_name: mail.elsewhere.example"
    )
    result = await probes.run(target, Check.IMAP_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.TLS, Phase.IMAP_TLS)
    target = replace(
        target,
        imap=replace(
            target.imap, tls_config=replace(target.imap.tls_config, server_name="localhost")
        ),
    )
    assert (await probes.run(target, Check.IMAP_LOGIN, context)).success

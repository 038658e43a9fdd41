"""Credentials that expire: the app certificate's notAfter and a client secret's stated expiry
are read from the configuration and exported, so that an alert warns two weeks ahead."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.config import ConfigError
from exporter.config.sections.graph import GraphConfig
from exporter.serve import metrics
from exporter.state import Store
from testing.simulators.graph import self_signed_certificate

APP = "    graph: {tenant: t, client_id: c, mailbox: m@x.org, %s}\n"


def _graph(text: str) -> GraphConfig:
    section = config.parse("targets:\n  - name: t\n" + APP % text).targets[0].section("graph")
    assert isinstance(section, GraphConfig)
    return section


def test_the_certificates_not_after_is_its_expiry(tmp_path: Path) -> None:
    key, cert = self_signed_certificate()
    (tmp_path / "app.key").write_bytes(key)
    (tmp_path / "app.crt").write_bytes(cert)
    section = _graph(
        f"certificate_file: {tmp_path / 'app.crt'}, private_key_file: {tmp_path / 'app.key'}"
    )
    not_after = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    assert section.oauth2.credential_expires() == not_after


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2027-03-01", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),
        ("'2027-03-01T12:30:00+02:00'", dt.datetime(2027, 3, 1, 10, 30, tzinfo=dt.UTC)),
    ],
)
def test_a_client_secrets_stated_expiry(written: str, expected: dt.datetime) -> None:
    section = _graph(f"client_secret: s, client_secret_expires: {written}")
    assert section.oauth2.credential_expires() == expected.timestamp()
    assert _graph("client_secret: s").oauth2.credential_expires() is None


def test_a_wrong_expiry_is_refused_with_its_place() -> None:
    with pytest.raises(ConfigError, match=r"line 3: targets\[0\]\.graph\.client_secret_expires"):
        _graph("client_secret: s, client_secret_expires: next spring")


def test_the_expiry_is_exported_for_each_transport_that_states_one() -> None:
    parsed = config.parse(
        "targets:\n  - name: t\n"
        + APP % "client_secret: s, client_secret_expires: 2027-03-01"
        + "  - name: u\n"
        + APP % "client_secret: s"
    )
    store = Store()
    store.configure(parsed)
    families = {
        sample.labels["target"]: sample.value
        for family in text_string_to_metric_families(metrics.render(store))
        for sample in family.samples
        if sample.name == "mailbox_credential_expiry_timestamp_seconds"
    }
    assert families == {"t": dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp()}
    store.configure(config.parse("targets:\n  - name: t\n" + APP % "client_secret: s"))
    assert "mailbox_credential_expiry_timestamp_seconds{" not in metrics.render(store)

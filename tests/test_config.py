"""Configuration: valid files load with their defaults; every mistake names its place."""

from __future__ import annotations

import copy
import importlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter import config
from exporter.config import ConfigError, Secret, parse_duration
from exporter.outcome import Check
from testing.simulators.graph import self_signed_certificate

GOOD = """
global:
  max_concurrent_probes: 8
defaults:
  interval: 2m
  timeout: 45s
  smtp: {host: smtp.example.com, username: probe@example.com, password: s3cret-smtp}
  imap: {host: imap.example.com, username: probe@example.com, password_env: IMAP_PW}
targets:
  - name: corp
  - name: other
    checks: [imap_login]
    imap: {host: other.example.com, port: 1143, tls: none, mailbox: Probes}
"""


def test_a_good_file_loads_with_defaults() -> None:
    cfg = config.parse(GOOD, environ={"IMAP_PW": "s3cret-imap"})
    assert cfg.max_concurrent_probes == 8
    corp, other = cfg.targets
    assert corp.name == "corp"
    assert corp.checks == (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN)
    assert {c: (corp.interval(c), corp.timeout(c)) for c in corp.checks} == dict.fromkeys(
        corp.checks, (120, 45)
    )
    assert (corp.smtp.port, corp.smtp.tls) == (587, "starttls")
    assert (corp.imap.port, corp.imap.tls, corp.imap.mailbox) == (993, "implicit", "INBOX")
    assert corp.mail_from == corp.mail_to == "probe@example.com"
    assert corp.imap.password.reveal() == "s3cret-imap"
    assert other.checks == (Check.IMAP_LOGIN,)
    assert (other.imap.host, other.imap.port, other.imap.tls) == ("other.example.com", 1143, "none")
    assert other.imap.mailbox == "Probes"


def test_schedules_default_by_check_and_can_be_set_by_check() -> None:
    base = TARGET.replace(
        "name: a", "name: a\n    interval: {smtp_login: 10s}\n    timeout: {roundtrip: 50s}"
    )
    target = config.parse(base).targets[0]
    schedules = {c: (target.interval(c), target.timeout(c)) for c in target.checks}
    assert schedules == {
        Check.ROUNDTRIP: (60, 50),
        Check.SMTP_LOGIN: (10, 10),
        Check.IMAP_LOGIN: (30, 15),
    }
    defaults = config.parse(TARGET).targets[0]
    assert {c: (defaults.interval(c), defaults.timeout(c)) for c in defaults.checks} == {
        Check.ROUNDTRIP: (60, 30),
        Check.SMTP_LOGIN: (30, 15),
        Check.IMAP_LOGIN: (30, 15),
    }


def test_secrets_never_print() -> None:
    cfg = config.parse(GOOD, environ={"IMAP_PW": "s3cret-imap"})
    assert "s3cret" not in repr(cfg)
    assert "s3cret" not in str(cfg.targets[0].smtp.password)
    assert Secret("a") == Secret("a")


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "c.yml").write_text(
        "targets:\n"
        "  - name: t\n"
        "    checks: [smtp_login]\n"
        "    smtp: {host: h, username: u, password_file: pw}\n"
        "    imap: {host: h, username: u, password: x}\n"
    )
    cfg = config.load(tmp_path / "c.yml")
    assert cfg.targets[0].smtp.password.reveal() == "from-file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("1m30s", 90)],
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "m", "1x", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


TARGET = (
    "targets:\n"
    "  - name: a\n"
    "    smtp: {host: h, username: u@x.org, password: p}\n"
    "    imap: {host: h, username: u@x.org, password: p}\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            TARGET + "  - name: b\n    smtp: {host: h, username: u@x.org, password: p}\n"
            "    imap: {host: h, port: abc, username: u@x.org, password: p}\n",
            "line 7: targets[1].imap.port: expected an integer, got a string ('abc')",
        ),
        (
            TARGET.replace("name: a", "name: a\n    interval: {smtp: 1m}"),
            "line 3: targets[0].interval.smtp: unknown key; known keys: ews_login, gmail_login, "
            "graph_login, imap_login, ",
        ),
        (
            TARGET.replace("smtp: {host: h, username: u@x.org, password: p}", "smtp: [h]"),
            "line 3: targets[0].smtp: expected a mapping, got a list",
        ),
        (
            TARGET + TARGET[len("targets:\n") :],
            "line 5: targets[1].name: duplicate target name 'a' (also targets[0])",
        ),
        (
            TARGET.replace("name: a", "name: a\n    intervall: 1m"),
            "line 3: targets[0].intervall: unknown key (did you mean 'interval'?)",
        ),
        (
            TARGET.replace("password: p}\n    imap", "password: p, password_env: X}\n    imap"),
            "line 3: targets[0].smtp: set exactly one of password, password_file, password_env "
            "(found password, password_env)",
        ),
        (
            TARGET.replace("host: h, username", "host: h, tls: ssl, username", 1),
            "line 3: targets[0].smtp.tls: expected one of starttls, implicit, none, got 'ssl'",
        ),
        (
            TARGET.replace("name: a", "name: a\n    checks: [roundtrip, smtp_logon]"),
            "targets[0].checks[1]: unknown check 'smtp_logon' (did you mean 'smtp_login'?)",
        ),
        (
            TARGET.replace("name: a", "name: a\n    interval: 10s\n    timeout: 20s"),
            "line 4: targets[0].timeout: 20s for roundtrip is longer than its interval 10s",
        ),
        (
            TARGET.replace("name: a", "name: a\n    interval: 30"),
            "targets[0].interval: expected a duration such as 30s or 2m, got a number (30)",
        ),
        (TARGET.replace("u@x.org", "u"), "targets[0].from: required for the roundtrip check"),
        (
            TARGET.replace("password: p}\n    imap", "password_file: /nonexistent/pw}\n    imap"),
            "line 3: targets[0].smtp.password_file: cannot read /nonexistent/pw",
        ),
        ("targets:\n  - name: a\n    smtp: [\n", "line 4: invalid YAML"),
        ("targets: []\n", "line 1: targets: expected a non-empty list of targets"),
        ("target:\n  - name: a\n", "target: unknown key (did you mean 'targets'?)"),
        (TARGET.replace("name: a", "name: 'a b'"), "targets[0].name: expected 1 to 63 letters"),
        (
            "targets:\n  - name: a\n    imap: {host: h, username: u, password: p}\n"
            "    checks: [imap_login, roundtrip]\n",
            "line 4: targets[0].smtp: required by the roundtrip check",
        ),
        (
            "targets:\n  - name: a\n    imap: {host: h, username: u, password: p}\n"
            "    sender: imap\n",
            "line 4: targets[0].sender: expected one of smtp",
        ),
        ("targets:\n  - name: a\n", "line 2: targets[0]: configure at least one of smtp, imap"),
    ],
)
def test_mistakes_name_their_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert message in str(caught.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"cannot read /nonexistent\.yml"):
        config.load("/nonexistent.yml")


def _key_files(directory: Path) -> None:
    """A certificate and key (graph) and a service-account key file (gmail), as the examples
    name them."""
    key_pem, cert_pem = self_signed_certificate()
    for name in ("app", "graph-app"):
        (directory / f"{name}.crt").write_bytes(cert_pem)
        (directory / f"{name}.key").write_bytes(key_pem)
    account = {"type": "service_account", "client_email": "sa@p.example", "private_key": ""}
    account["private_key"] = key_pem.decode()
    (directory / "service-account.json").write_text(json.dumps(account))


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "mailbox-exporter.yml"
    (tmp_path / "monitor.password").write_text("pw\n")
    (tmp_path / "partner.password").write_text("pw\n")
    _key_files(tmp_path)
    text = example.read_text().replace("/etc/mailbox-exporter/", f"{tmp_path}/")
    cfg = config.parse(
        text,
        base_dir=tmp_path,
        environ={"MONITOR_PASSWORD": "a", "HELPDESK_PW": "b", "GRAPH_CLIENT_SECRET": "c"},
    )
    assert [t.name for t in cfg.targets] == [
        "corp-mail",
        "partner-inbound",
        "helpdesk-logins",
        "m365-graph",
        "workspace-gmail",
        "corp-to-m365",
    ]
    assert cfg.targets[1].imap.tls == "starttls" and cfg.targets[1].imap.port == 143


def test_the_documented_examples_are_valid(tmp_path: Path) -> None:
    """Every YAML block in the docs that configures targets loads (secret files faked)."""
    root = Path(__file__).parent.parent
    blocks = [
        block.split("```", 1)[0]
        for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        for block in path.read_text().split("```yaml\n")[1:]
    ]
    configs = [block for block in blocks if block.startswith(("targets:", "defaults:"))]
    assert len(configs) >= 4
    _key_files(tmp_path)
    for text in configs:
        for name in (
            "monitor.password",
            "m365-client-secret",
            "google-client-secret",
            "google-refresh-token",
            "password",
        ):
            (tmp_path / name).write_text("secret\n")
        cfg = config.parse(
            text.replace("/etc/mailbox-exporter/", f"{tmp_path}/"), base_dir=tmp_path, environ={}
        )
        assert cfg.targets


OAUTH_TARGET = (
    "targets:\n"
    "  - name: a\n"
    "    checks: [smtp_login, imap_login]\n"
    "    smtp: {host: h, username: u@x.org, oauth2: {provider: microsoft, tenant: contoso,"
    " client_id: app, client_secret: s3cr3t-app}}\n"
    "    imap: {host: h, username: u@x.org, oauth2: {provider: google, client_id: app,"
    " client_secret: cs, refresh_token: rt-123}, tls_config: {server_name: imap.x.org,"
    " min_version: TLS13}}\n"
)


def test_oauth2_presets_and_tls_settings() -> None:
    target = config.parse(OAUTH_TARGET).targets[0]
    smtp, imap = target.smtp.oauth2, target.imap.oauth2
    assert smtp is not None and imap is not None
    assert smtp.token_url == "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
    assert (smtp.grant, smtp.scope) == (
        "client_credentials",
        "https://outlook.office365.com/.default",
    )
    assert imap.token_url == "https://oauth2.googleapis.com/token"
    assert (imap.grant, imap.scope) == ("refresh_token", "https://mail.google.com/")
    assert target.smtp.password is None
    assert target.imap.tls_config.server_name == "imap.x.org"
    assert target.imap.tls_config.min_version == "TLS13"
    assert set(target.secrets()) == {"s3cr3t-app", "cs", "rt-123"}
    assert "s3cr3t" not in repr(target)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("oauth2: {provider: microsoft", "password: p, oauth2: {provider: microsoft"),
            "targets[0].smtp: set either a password or oauth2, not both",
        ),
        (("tenant: contoso, ", ""), "targets[0].smtp.oauth2.tenant: required"),
        (
            (" client_secret: s3cr3t-app", " grant: client_credentials"),
            "targets[0].smtp.oauth2: set exactly one of client_secret, client_secret_file, "
            "client_secret_env (found none)",
        ),
        (
            (" refresh_token: rt-123}", " scope: x}"),
            "targets[0].imap.oauth2: set exactly one of refresh_token, refresh_token_file, "
            "refresh_token_env (found none)",
        ),
        (
            ("provider: google", "provider: yahoo"),
            "targets[0].imap.oauth2.provider: expected one of microsoft, google, got 'yahoo'",
        ),
        (
            ("min_version: TLS13", "min_version: TLS11"),
            "targets[0].imap.tls_config.min_version: expected TLS12 or TLS13, got 'TLS11'",
        ),
        (
            ("server_name: imap.x.org", "ca_file: /nonexistent/ca.pem"),
            "targets[0].imap.tls_config.ca_file: cannot load CA certificates from "
            "/nonexistent/ca.pem",
        ),
        (
            ("server_name: imap.x.org", "verify: false"),
            "targets[0].imap.tls_config.verify: unknown key",
        ),
    ],
)
def test_oauth2_and_tls_mistakes(change: tuple[str, str], message: str) -> None:
    text = OAUTH_TARGET.replace(*change)
    assert text != OAUTH_TARGET
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert message in str(caught.value)


def test_target_labels_merge_with_defaults() -> None:
    text = "defaults:\n  labels: {provider: microsoft, region: eu}\n" + TARGET.replace(
        "name: a", "name: a\n    labels: {region: us, tier: 1}"
    )
    assert config.parse(text).targets[0].labels == {
        "provider": "microsoft",
        "region": "us",
        "tier": "1",
    }


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("{target: x}", "targets[0].labels.target: target is a label of the exporter's own"),
        ("{'bad-name': x}", "targets[0].labels.bad-name: expected a Prometheus label name"),
        ("{provider: ''}", "targets[0].labels.provider: expected a non-empty string"),
        ("[provider]", "targets[0].labels: expected a mapping of label names to values"),
    ],
)
def test_bad_target_labels(labels: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(TARGET.replace("name: a", f"name: a\n    labels: {labels}"))
    assert message in str(caught.value)


def test_a_target_runs_the_checks_its_transports_allow() -> None:
    only_imap = config.parse(
        "targets:\n  - name: a\n    imap: {host: h, username: u, password: p}\n"
    ).targets[0]
    assert only_imap.checks == (Check.IMAP_LOGIN,)
    assert only_imap.smtp is None
    both = config.parse(TARGET).targets[0]
    assert both.checks == (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN)
    assert (both.sender, both.receiver) == ("smtp", "imap")


def test_a_mistyped_secret_is_never_echoed() -> None:
    text = "targets:\n  - name: a\n    imap: {host: h, username: u, password: 98765432101}\n"
    with pytest.raises(ConfigError) as caught:
        config.parse(text)
    assert "98765432101" not in str(caught.value)
    assert "targets[0].imap.password" in str(caught.value)


# --- hostile documents --------------------------------------------------------------------------

loader = importlib.import_module("exporter.config.load")
"""The module (``exporter.config.load`` names its function)."""
reader = importlib.import_module("exporter.config.reader")
mx_section = importlib.import_module("exporter.config.sections.mx")
SECRET_KEYS = ("password", "client_secret", "refresh_token")
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "global": loader.GLOBAL_KEYS,
    "defaults": loader.DEFAULT_KEYS,
    "provider_status": loader.PROVIDER_STATUS_KEYS,
    "on_demand": loader.ON_DEMAND_KEYS,
    "login_backoff": loader.LOGIN_BACKOFF_KEYS,
    **{name: section.keys for name, section in loader.SECTIONS.items()},
    "dkim": mx_section.DKIM_KEYS,
    "oauth2": reader.OAUTH2_KEYS,
    "tls_config": reader.TLS_CONFIG_KEYS,
    "microsoft": loader.MICROSOFT_STATUS_KEYS,
    "google": loader.GOOGLE_STATUS_KEYS,
}
WORDS = st.sampled_from(
    [
        *(c.value for c in Check),
        *loader.SECTIONS,
        *("30s", "1m", "10ms", "0s", "24h", "1h30m", "-5s", "30"),
        *("starttls", "implicit", "none", "required", "opportunistic", "header", "subject"),
        *("microsoft", "google", "client_credentials", "refresh_token", "jwt_bearer"),
        *("TLS12", "TLS13", "h", "127.0.0.1", "u@example.org", "a@b\n", "INBOX", "{tenant}"),
        *("https://example.org/x", "http://127.0.0.1:1/t", "ftp://x", "10.0.0.53:53", "[::1]:53"),
        *("example.org", "sel", "Exchange Online", "missing.pem", ".", "", "a\n", "\ud800"),
    ]
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-5, 70_000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | WORDS
    | st.text(max_size=20)
)


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A configuration-shaped structure (known keys, wild values), and the secrets in it."""
    secrets: list[str] = []

    def secret() -> Any:
        value = draw(
            st.text("abcdefXYZ0123456789", min_size=6, max_size=12).map(lambda t: "S3cr3t-" + t)
            | st.integers(10**15, 10**16 - 1)
        )
        secrets.append(str(value))
        return value

    def mapping(keys: tuple[str, ...], depth: int, *always: str) -> dict[str, Any]:
        chosen = draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True))
        if draw(st.integers(0, 9)) == 0:
            chosen.append(draw(st.text(max_size=8)))
        return {key: value(key, depth + 1) for key in (*always, *chosen)}

    def value(key: str, depth: int) -> Any:
        if key in SECRET_KEYS and draw(st.booleans()):
            return secret()
        if depth > 5 or draw(st.integers(0, 9)) == 0:
            return draw(LEAVES | st.lists(LEAVES, max_size=3))
        if key in SECTION_KEYS:
            return mapping(SECTION_KEYS[key], depth)
        if key == "targets":
            count = draw(st.integers(1, 2))
            return [mapping(loader.TARGET_KEYS, depth, "name") for _ in range(count)]
        if key == "checks":
            return draw(st.lists(WORDS, max_size=4))
        if key in ("interval", "timeout"):
            return draw(WORDS | st.dictionaries(WORDS, WORDS, max_size=3))
        if key == "labels":
            names = st.sampled_from(["team", "provider", "target", "__x", "a\n", "1a", "é"])
            return draw(st.dictionaries(names | st.text(max_size=8), LEAVES, max_size=4))
        return draw(LEAVES)

    return mapping(loader.TOP_KEYS, 0, "targets"), secrets


VALID: dict[str, Any] = {
    "global": {
        "max_concurrent_probes": 4,
        "on_demand": {"roundtrip_every": "1m", "login_every": "10s"},
        "login_backoff": {"after": 3, "initial": "1m", "max": "1h"},
    },
    "defaults": {"interval": "2m", "labels": {"team": "mail"}},
    "provider_status": {
        "interval": "5m",
        "microsoft": {"tenant": "t", "client_id": "c", "client_secret": "S3cr3t-ms"},
        "google": {"services": ["Gmail"]},
    },
    "targets": [
        {
            "name": "a",
            "interval": {"roundtrip": "1m", "smtp_login": "30s"},
            "timeout": "20s",
            "labels": {"provider": "microsoft", "region": "eu"},
            "smtp": {"host": "h", "username": "u@example.org", "password": "S3cr3t-pw"},
            "imap": {
                "host": "h",
                "username": "u@example.org",
                "oauth2": {
                    "provider": "microsoft",
                    "tenant": "t",
                    "client_id": "c",
                    "client_secret": "S3cr3t-cs",
                },
                "tls_config": {"server_name": "h", "min_version": "TLS13"},
                "idle": True,
            },
        },
        {
            "name": "b",
            "checks": ["roundtrip", "graph_login"],
            "sender": "graph",
            "receiver": "gmail",
            "graph": {
                "mailbox": "g@example.org",
                "tenant": "t",
                "client_id": "c",
                "client_secret": "S3cr3t-gs",
            },
            "gmail": {
                "mailbox": "g@example.org",
                "oauth2": {"client_id": "c", "refresh_token": "S3cr3t-rt"},
            },
        },
        {
            "name": "c",
            "mx": {"mail_from": "m@example.org", "resolver": "[::1]:53", "tls": "opportunistic"},
            "imap": {"host": "h", "username": "m@example.org", "password": "S3cr3t-mx"},
            "to": "m@example.org",
        },
    ],
}
"""A document that loads, using every section: mutated, it reaches every reader."""


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, item in data.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """:data:`VALID` with a few values replaced, removed or added; and the secrets in it."""
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)[1:]))
        *parents, last = path
        holder = data
        for step in parents:
            holder = holder[step]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and isinstance(holder, dict):
            del holder[last]
        elif action == "add" and isinstance(holder[last], dict):
            holder[last][draw(WORDS | st.sampled_from(SECRET_KEYS))] = draw(LEAVES)
        else:
            holder[last] = draw(LEAVES | st.lists(LEAVES, max_size=2))
    text = yaml.safe_dump(data)
    return data, re.findall(r"S3cr3t-\w+", text)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(documents() | mutated())
@example(({"global": {}}, []))  # no targets key: finding its line looped for ever
@example(
    (
        {
            "targets": [
                {
                    "name": "a",
                    "imap": {
                        "host": "h",
                        "username": "u",
                        "oauth2": {"provider": ["microsoft"], "client_secret": "S3cr3t-list"},
                    },
                }
            ]
        },
        ["S3cr3t-list"],
    )
)
def test_any_configuration_structure_loads_or_names_its_mistake(
    document: tuple[Any, list[str]],
) -> None:
    data, secrets = document
    text = yaml.safe_dump(data, allow_unicode=True)
    with tempfile.TemporaryDirectory() as empty:
        try:
            loaded = config.parse(text, base_dir=Path(empty), environ={})
        except ConfigError as exc:
            message = str(exc)
            for secret in secrets:
                assert secret not in message, (secret, message)
            return
    assert loaded.targets


YAMLISH = st.lists(
    st.sampled_from(
        [
            *("targets:", "\n", "  - ", "    ", "name: ", "a", ": ", "{", "}", "[", "]", ", "),
            *("&a ", "*a", "<<: ", "!!binary ", "!!python/object ", "? ", "|\n", ">\n", "'"),
            *('"\\ud800"', '"\\x00"', "2001-13-01", "1" * 5000, "0x", "~", "-", "#", "\t"),
            *("smtp: ", "imap: ", "host: h", "username: u", "password: ", "labels: ", "%YAML"),
        ]
    )
    | st.text(max_size=5),
    max_size=40,
).map("".join)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(YAMLISH | st.text(max_size=200))
@example("targets: x\ndefaults: {smtp: {password: 2001-13-01}}\n")
@example("? [[1, 2], [3, 4]]\n: x\n")
@example("targets:\n  - name: a\n    mx: {dkim: {domain: " + "a" * 40 + "!, selector: s}}\n")
def test_any_text_loads_or_names_its_mistake(text: str) -> None:
    try:
        config.parse(text, environ={})
    except ConfigError as exc:
        assert str(exc)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(YAMLISH.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200))
def test_any_file_loads_or_names_its_mistake(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        file = Path(directory) / "c.yml"
        file.write_bytes(raw)
        try:
            config.load(file, environ={})
        except ConfigError as exc:
            assert str(exc)

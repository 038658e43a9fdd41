"""``--web.config.file``: HTTPS and basic authentication on the real exporter."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError
from exporter.serve import webconfig
from exporter.serve.webconfig import MAX_PASSWORD, WebConfig, basic_credentials
from testing.exporter_process import free_port
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def web_config(tmp_path: Path) -> tuple[Path, trustme.CA]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    hashed = bcrypt.hashpw(b"right horse battery", bcrypt.gensalt(rounds=10)).decode()
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        "  cert_file: server.pem\n"
        "  key_file: server.pem\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    return path, ca


async def test_https_and_basic_auth(
    tmp_path: Path, mailstack: MailStack, user: MailUser, web_config: tuple[Path, trustme.CA]
) -> None:
    path, ca = web_config
    config = tmp_path / "c.yml"
    config.write_text("targets:\n" + target_yaml(mailstack, user, interval="10m"))
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--web.config.file",
                str(path),
                "--storage.path",
                str(tmp_path / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/-/healthy") as response:
                        assert response.status == 200, "health checks need no credentials"
                        break
                except aiohttp.ClientConnectorError:
                    assert process.poll() is None, log.read_text()
                    await asyncio.sleep(0.1)
            good = {"Authorization": aiohttp.encode_basic_auth("prometheus", "right horse battery")}
            bad = {"Authorization": aiohttp.encode_basic_auth("prometheus", "wrong horse")}
            for path_ in ("/metrics", "/", "/api/v1/status", "/probe?target=local"):
                async with session.get(url + path_) as response:
                    assert response.status == 401, path_
                    assert response.headers["WWW-Authenticate"].startswith("Basic")
                async with session.get(url + path_, headers=bad) as response:
                    assert response.status == 401, path_
            for _ in range(2):
                async with session.get(url + "/metrics", headers=good) as response:
                    assert response.status == 200
                    assert "mailbox_exporter_build_info" in await response.text()
            async with session.post(url + "/-/reload", headers=bad) as response:
                assert response.status == 401
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{port}/metrics"):
                    pass
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth_users:\n  p: plaintext\n", "basic_auth_users.p: expected a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.pem\n",
            "tls_server_config: cannot load the certificate and key",
        ),
        ("tls_server_config:\n  cert_file: a.pem\n", "tls_server_config.key_file: required"),
        ("basic_auth_user:\n  p: x\n", "basic_auth_user: unknown or unsupported key"),
        # bcrypt refuses this salt (its last character carries 2 bits: one of .Oeu) only when
        # a user logs in, as an error: refused here instead.
        (
            "basic_auth_users:\n  p: $2b$04$" + "a" * 22 + "b" * 31 + "\n",
            "basic_auth_users.p: expected a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.pem\n  min_version: TLS11\n",
            "tls_server_config.min_version: expected one of TLS12, TLS13",
        ),
        ("basic_auth_users:\n  p: 2024-13-01\n", "holds a value that cannot be read"),
    ],
)
def test_a_bad_web_config_stops_the_start(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "web.yml").write_text(text)
    (tmp_path / "c.yml").write_text(
        "targets:\n  - name: a\n    checks: [smtp_login]\n"
        "    smtp: {host: h, username: u, password: p}\n"
        "    imap: {host: h, username: u, password: p}\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(tmp_path / "c.yml"),
            "--web.config.file",
            str(tmp_path / "web.yml"),
            "--storage.path",
            str(tmp_path / "state"),
            "--web.listen-address",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 1
    assert message in run.stderr
    assert "Traceback" not in run.stderr


PASSWORD = "right horse battery"


@contextmanager
def _exporter_with_users(tmp_path: Path, mailstack: MailStack, user: MailUser) -> Iterator[int]:
    """The exporter over plain HTTP with one user, ``prometheus``; yields its port."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    (tmp_path / "c.yml").write_text("targets:\n" + target_yaml(mailstack, user, interval="10m"))
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(tmp_path / "c.yml"),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--web.config.file",
                str(tmp_path / "web.yml"),
                "--storage.path",
                str(tmp_path / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _status(port: int, authorization: bytes) -> int:
    """The status of ``GET /metrics`` with the raw Authorization header bytes given."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


def test_long_passwords_and_malformed_headers_are_refused_not_errors(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    long_password = PASSWORD + "x" * MAX_PASSWORD
    with _exporter_with_users(tmp_path, mailstack, user) as port:
        assert _status(port, _basic(f"prometheus:{PASSWORD}".encode())) == 200
        for header in (
            _basic(f"prometheus:{long_password}".encode()),
            _basic(b"prometheus:" + PASSWORD.encode() + b"\xc3\xa9" * 40),
            b"Basic !!!not-base64",
            b"Basic " + base64.b64encode(b"prometheus:" + PASSWORD.encode())[:-2],
            _basic(b"no colon here"),
            _basic(b"prometheus:\xff\xfe"),
            b"Basic \xc3\xa9t\xc3\xa9",
            b"Basic \xff\xfe",
            b"basic",
            b"Bearer abc",
            b"",
        ):
            assert _status(port, header) == 401, header
    log = (tmp_path / "exporter.log").read_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


MARKED_HASH = "$2b$04$SeCrEtHaShOfTheAdmin.e" + "x" * 31
"""A well-formed hash whose text is easy to find in an error message."""
FAST_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
HEADERS = (
    st.text(max_size=60)
    | st.binary(max_size=120).map(lambda raw: "Basic " + base64.b64encode(raw).decode())
    | st.text(max_size=100).map(
        lambda password: (
            "Basic "
            + base64.b64encode(f"prometheus:{password}".encode(errors="surrogatepass")).decode()
        )
    )
    | st.sampled_from(["basic ", "Basic  ", "BASIC cHJvbWV0aGV1czo=", "Basic =", "Basic é"])
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(HEADERS)
async def test_any_authorization_header_is_a_user_or_a_refusal(header: str) -> None:
    config = WebConfig(users={"prometheus": FAST_HASH})
    credentials = basic_credentials(header)
    allowed = await config.allows(header)
    assert allowed == (credentials == ("prometheus", PASSWORD))
    if credentials is not None:
        user, password = credentials
        assert f"{user}:{password}".encode() == base64.b64decode(header.split()[1])


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["tls_server_config", "basic_auth_users", "http_server_config"])
        | st.text(max_size=5),
        st.none()
        | st.text(max_size=10)
        | st.integers()
        | st.dictionaries(
            st.sampled_from(["cert_file", "key_file", "client_ca_file", "min_version", "p"])
            | st.text(max_size=5)
            | st.integers(),
            st.none() | st.text(max_size=10) | st.integers() | st.lists(st.integers(), max_size=2),
            max_size=4,
        ),
        max_size=3,
    ).map(lambda data: yaml.safe_dump(data, allow_unicode=True))
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.lists(st.sampled_from(["[", "{", ":", " ", "\t", "'", '"', "\n", "&a", "*a", "#", "-"]))
    .map("".join)
    .map(lambda tail: f"basic_auth_users:\n  p: {MARKED_HASH}{tail}\n  q: {MARKED_HASH}\n")
)
def test_any_web_config_file_loads_or_names_its_mistake(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        file = Path(directory) / "web.yml"
        if isinstance(content, str):
            file.write_bytes(content.encode(errors="surrogatepass"))
        else:
            file.write_bytes(content)
        try:
            loaded = webconfig.load(file)
        except ConfigError as exc:
            assert str(exc).encode(), "printable as UTF-8"
            assert MARKED_HASH[7:] not in str(exc)
            return
    assert isinstance(loaded, WebConfig)


def test_a_web_config_error_never_shows_the_hash() -> None:
    hashed: Any = FAST_HASH.decode()
    with tempfile.TemporaryDirectory() as directory:
        file = Path(directory) / "web.yml"
        for users in ({"bad:user": hashed}, {"p": hashed[:-1]}, {"p": hashed + "\n"}):
            file.write_text(yaml.safe_dump({"basic_auth_users": users}))
            with pytest.raises(ConfigError) as caught:
                webconfig.load(file)
            assert hashed[7:-1] not in str(caught.value)


def test_a_hash_too_costly_to_check_is_refused_at_load() -> None:
    """A cost of 31 takes days per check: two guesses would hold every login up."""
    hashed = FAST_HASH.decode()
    with tempfile.TemporaryDirectory() as directory:
        file = Path(directory) / "web.yml"
        for cost, accepted in (("16", True), ("17", False), ("31", False)):
            costly = f"{hashed[:4]}{cost}{hashed[6:]}"
            file.write_text(yaml.safe_dump({"basic_auth_users": {"p": costly}}))
            if accepted:
                assert webconfig.load(file).users == {"p": costly.encode()}
                continue
            with pytest.raises(ConfigError, match="a cost from 04 to 16"):
                webconfig.load(file)

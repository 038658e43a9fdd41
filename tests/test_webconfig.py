"""``--web.config.file``: HTTPS and basic authentication on the real exporter."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme

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

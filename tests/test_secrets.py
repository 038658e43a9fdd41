"""No secret anywhere: passwords, client secrets, refresh tokens and access tokens are
configured, every surface is exercised, and none of them shows up in any of it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.exporter_process import start, value
from testing.identity import IdentityProvider
from testing.mailstack import MailStack
from testing.simulators.gmail import FULL_SCOPE, GmailSimulator
from testing.simulators.graph import GraphSimulator, self_signed_certificate
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pw-Right-6c1b"
WRONG_PASSWORD = "pw-Wrong-93fe"
CLIENT_SECRET = "cs-Secret-41d7"
REFRESH_TOKEN = "rt-Secret-0a2e"


def _config(oauth_mailstack: MailStack, idp: IdentityProvider, tmp_path: Path) -> Path:
    user = oauth_mailstack.add_user("pw", PASSWORD)
    oauth_user = oauth_mailstack.add_user("oauth", "unused-pw-123")
    idp.add_client("app-cc", CLIENT_SECRET, oauth_user.address)
    idp.add_refresh_token(REFRESH_TOKEN, "app-rt", oauth_user.address)
    idp.add_client("app-rt", "rt-client-secret-5", oauth_user.address)
    (tmp_path / "client-secret").write_text(CLIENT_SECRET + "\n")
    oauth_smtp = (
        f"{{token_url: '{idp.token_url}', scope: mail, client_id: app-cc, "
        "client_secret_file: client-secret}"
    )
    oauth_imap = (
        f"{{token_url: '{idp.token_url}', scope: mail, grant: refresh_token, "
        f"client_id: app-rt, client_secret: rt-client-secret-5, "
        f"refresh_token_env: MAILBOX_TEST_REFRESH}}"
    )
    path = tmp_path / "c.yml"
    path.write_text(
        "targets:\n"
        + target_yaml(oauth_mailstack, user, name="password", interval="3s", timeout="3s")
        + target_yaml(
            oauth_mailstack,
            user,
            name="wrong",
            password=WRONG_PASSWORD,
            interval="3s",
            timeout="3s",
        )
        + "  - name: oauth\n    interval: 3s\n    timeout: 3s\n"
        f"    smtp: {{host: 127.0.0.1, port: {oauth_mailstack.smtp_port}, tls: none, "
        f"username: {oauth_user.address}, oauth2: {oauth_smtp}}}\n"
        f"    imap: {{host: 127.0.0.1, port: {oauth_mailstack.imap_port}, tls: none, "
        f"username: {oauth_user.address}, oauth2: {oauth_imap}}}\n"
    )
    return path


async def test_no_secret_on_any_surface(
    oauth_mailstack: MailStack,
    idp: IdentityProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILBOX_TEST_REFRESH", REFRESH_TOKEN)
    path = _config(oauth_mailstack, idp, tmp_path)
    seen: list[str] = []
    async for running in start(path, tmp_path / "run", "--log.level", "debug"):
        await running.until(
            lambda s: all(
                value(s, "mailbox_probes_total", target=t, check=c)
                for t in ("password", "wrong", "oauth")
                for c in ("roundtrip", "smtp_login", "imap_login")
            ),
            seconds=40,
        )
        samples = await running.samples()
        assert value(samples, "mailbox_probe_success", target="oauth", check="roundtrip") == 1
        assert value(samples, "mailbox_probe_success", target="wrong", check="imap_login") == 0
        for surface in (
            "/metrics",
            "/",
            "/api/v1/status",
            "/-/ready",
            "/probe?target=wrong&check=smtp_login&debug=true",
            "/probe?target=oauth&check=roundtrip&debug=true",
            "/probe?target=password&check=imap_login&debug=true",
            "/probe?target=oauth&check=imap_login",
        ):
            status, text = await running.get(surface)
            assert status == 200, (surface, text)
            seen.append(text)
        path.write_text(path.read_text() + "    bogus: 1\n")
        seen.append((await running.post("/-/reload"))[1])
        await asyncio.sleep(0.5)
    seen.append((tmp_path / "run" / "exporter.log").read_text())
    assert "level=debug" in seen[-1] or "probe finished" in seen[-1]

    good = path.with_name("ok.yml")
    good.write_text(path.read_text().replace("    bogus: 1\n", ""))
    idp.fail_with(
        400, {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}
    )
    for argv in (["--config.check"], ["probe", "wrong"], ["probe", "oauth"]):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(good),
                "--storage.path",
                str(tmp_path / "state"),
                *argv,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=60,
            env={**os.environ, "MAILBOX_TEST_REFRESH": REFRESH_TOKEN},
        )
        seen.append(run.stdout + run.stderr)
    idp.fail_with(None)
    assert "auth_rejected" in seen[-1] and "<redacted>" in seen[-1], seen[-1]

    everything = "\n".join(seen)
    assert "result: FAILED" in everything and "result: success" in everything
    secrets = [
        PASSWORD,
        WRONG_PASSWORD,
        CLIENT_SECRET,
        REFRESH_TOKEN,
        "rt-client-secret-5",
        *idp.issued_tokens(),
    ]
    assert len(idp.issued_tokens()) >= 2
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."


async def test_no_api_secret_on_any_surface_of_a_running_exporter(tmp_path: Path) -> None:
    """Graph with a client secret and with a certificate, Gmail with a service account: none
    of their secrets, private keys or issued tokens shows on any surface."""
    graph = GraphSimulator(domains=("contoso.example",), delivery_delay=0.05)
    gmail = GmailSimulator(domains=("example.test",), delivery_delay=0.05)
    graph.start_in_thread()
    gmail.start_in_thread()
    try:
        secret = "gs-Secret-7731-9e0c"
        graph.add_mailbox("probe@contoso.example")
        graph.add_app("app-secret", secret=secret, mailboxes=["probe@contoso.example"])
        key_pem, cert_pem = self_signed_certificate()
        (tmp_path / "app.key").write_bytes(key_pem)
        (tmp_path / "app.crt").write_bytes(cert_pem)
        graph.add_app("app-cert", certificate=cert_pem, mailboxes=["probe@contoso.example"])
        gmail.add_mailbox("probe@example.test")
        account = gmail.create_service_account("probe-sa@project.iam.example", "1234500001")
        gmail.delegate("1234500001", "example.test", [FULL_SCOPE])
        (tmp_path / "sa.json").write_text(json.dumps(account))
        common = f"graph_url: '{graph.graph_url}', login_url: '{graph.url}', poll_interval: 200ms"
        path = tmp_path / "c.yml"
        path.write_text(
            "targets:\n"
            "  - name: graph-secret\n    interval: 3s\n    timeout: 3s\n"
            f"    graph: {{mailbox: probe@contoso.example, tenant: {graph.tenant}, "
            "client_id: app-secret, "
            f"client_secret: {secret}, {common}}}\n"
            "  - name: graph-cert\n    interval: 3s\n    timeout: 3s\n"
            f"    graph: {{mailbox: probe@contoso.example, tenant: {graph.tenant}, "
            "client_id: app-cert, "
            f"certificate_file: app.crt, private_key_file: app.key, {common}}}\n"
            "  - name: gmail\n    interval: 3s\n    timeout: 3s\n"
            "    gmail: {mailbox: probe@example.test, service_account_file: sa.json, "
            f"api_url: '{gmail.url}', poll_interval: 200ms}}\n"
        )
        seen: list[str] = []
        checks = {
            "graph-secret": "graph_login",
            "graph-cert": "graph_login",
            "gmail": "gmail_login",
        }
        wanted = [(t, c) for t, login in checks.items() for c in ("roundtrip", login)]
        async for running in start(path, tmp_path / "run", "--log.level", "debug"):
            await running.until(
                lambda s: all(
                    value(s, "mailbox_probe_success", target=t, check=c) == 1 for t, c in wanted
                ),
                seconds=40,
            )
            for surface in (
                "/metrics",
                "/",
                "/api/v1/status",
                *(f"/probe?target={t}&check={c}&debug=true" for t, c in checks.items()),
                "/probe?target=gmail&check=roundtrip&debug=true",
            ):
                status, text = await running.get(surface)
                assert status == 200, (surface, text)
                seen.append(text)
        seen.append((tmp_path / "run" / "exporter.log").read_text())
        everything = "\n".join(seen)
        assert "result: success" in everything
        issued = [*graph._tokens, *gmail._tokens]
        assert len(issued) >= 3
        key_lines = [
            line
            for pem in (key_pem.decode(), account["private_key"])
            for line in pem.splitlines()
            if line and "-----" not in line
        ]
        for leaked in (secret, *issued, *key_lines):
            assert leaked not in everything, f"a secret leaked: {leaked[:6]}..."
    finally:
        graph.stop()
        gmail.stop()

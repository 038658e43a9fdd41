"""No secret anywhere: passwords, client secrets, refresh tokens and access tokens are
configured, every surface is exercised, and none of them shows up in any of it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.exporter_process import start, value
from testing.identity import IdentityProvider
from testing.mailstack import MailStack
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
            [sys.executable, "-m", "exporter", "--config.file", str(good), *argv],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=60,
            env={**os.environ, "MAILBOX_TEST_REFRESH": REFRESH_TOKEN},
        )
        seen.append(run.stdout + run.stderr)
    idp.fail_with(None)
    assert "oauth_token" in seen[-1] and "<redacted>" in seen[-1], seen[-1]

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

"""XOAUTH2 for real: Dovecot's oauth2 passdb, Postfix through Dovecot SASL, and a token
endpoint run by the test, with both grants, its failures, and tokens the servers refuse."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter import config, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_files

CLIENT_SECRET = "client-secret-7d1f"
REFRESH_TOKEN = "refresh-token-91ac"


@pytest.fixture
def mailbox(
    oauth_mailstack: MailStack, idp: IdentityProvider, request: pytest.FixtureRequest
) -> MailUser:
    user = oauth_mailstack.add_user(
        f"oauth{abs(hash(request.node.name)) % 10**6}", "unused-password-1"
    )
    idp.add_client(f"app-{user.name}", CLIENT_SECRET, user.address)
    idp.add_refresh_token(f"{REFRESH_TOKEN}-{user.name}", f"app-{user.name}", user.address)
    idp.fail_with(None)
    idp.hang(False)
    return user


def _target(
    oauth_mailstack: MailStack,
    idp: IdentityProvider,
    user: MailUser,
    grant: str = "client_credentials",
    timeout: str = "10s",
) -> Target:
    secret = (
        f"client_secret: {CLIENT_SECRET}"
        if grant == "client_credentials"
        else f"refresh_token: {REFRESH_TOKEN}-{user.name}"
    )
    oauth2 = (
        f"{{token_url: '{idp.token_url}', scope: mail, grant: {grant}, "
        f"client_id: app-{user.name}, {secret}}}"
    )
    return config.parse(
        "targets:\n"
        "  - name: oauth\n"
        f"    interval: 10s\n    timeout: {timeout}\n"
        f"    smtp: {{host: 127.0.0.1, port: {oauth_mailstack.smtp_port}, tls: none, "
        f"username: {user.address}, oauth2: {oauth2}}}\n"
        f"    imap: {{host: 127.0.0.1, port: {oauth_mailstack.imap_port}, tls: none, "
        f"username: {user.address}, oauth2: {oauth2}}}\n"
    ).targets[0]


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
async def test_xoauth2_round_trip_and_logins(
    oauth_mailstack: MailStack,
    idp: IdentityProvider,
    mailbox: MailUser,
    grant: str,
    context: ProbeContext,
) -> None:
    target = _target(oauth_mailstack, idp, mailbox, grant)
    before = idp.token_requests
    results = [
        await probes.run(target, check, context, transcript=True)
        for _ in range(2)
        for check in target.checks
    ]
    for result in results:
        assert result.success, result
        assert any("XOAUTH2" in line for line in result.transcript)
        for protocol in ("smtp", "imap") if result.check is Check.ROUNDTRIP else ():
            assert result.found.token_expiry[protocol] == pytest.approx(time.time() + 3600, abs=60)
    assert idp.token_requests - before == 1, "one token for six probes and both protocols"
    assert probe_files(oauth_mailstack, mailbox) == []
    shown = "\n".join(line for r in results for line in (*r.transcript, r.detail))
    for secret in (*idp.issued_tokens(), CLIENT_SECRET, f"{REFRESH_TOKEN}-{mailbox.name}"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("invalid_client", "token endpoint answered 400: invalid_client"),
        ("server_error", "token endpoint answered 500"),
        ("hang", "the token endpoint did not answer within"),
    ],
)
async def test_token_endpoint_failures_are_oauth_token(
    oauth_mailstack: MailStack,
    idp: IdentityProvider,
    mailbox: MailUser,
    fault: str,
    expected: str,
    context: ProbeContext,
) -> None:
    target = _target(oauth_mailstack, idp, mailbox, timeout="4s")
    if fault == "invalid_client":
        idp.fail_with(400, {"error": "invalid_client"})
    elif fault == "server_error":
        idp.fail_with(500, {"error": "server_error"})
    else:
        idp.hang(True)
    try:
        for check, phase in (
            (Check.SMTP_LOGIN, Phase.SMTP_AUTH),
            (Check.IMAP_LOGIN, Phase.IMAP_AUTH),
            (Check.ROUNDTRIP, Phase.IMAP_AUTH),
        ):
            started = time.monotonic()
            result = await probes.run(target, check, context)
            assert (result.reason, result.phase) == (Reason.OAUTH_TOKEN, phase), result
            assert expected in result.detail
            assert result.found.token_failed == {phase.value.split("_")[0]}
            assert time.monotonic() - started <= 4 + 1
            assert CLIENT_SECRET not in result.detail
    finally:
        idp.fail_with(None)
        idp.hang(False)


async def test_a_token_the_servers_refuse_is_auth_rejected(
    oauth_mailstack: MailStack, idp: IdentityProvider, mailbox: MailUser, context: ProbeContext
) -> None:
    target = _target(oauth_mailstack, idp, mailbox)
    assert (await probes.run(target, Check.IMAP_LOGIN, context)).success
    idp.revoke_all()
    smtp, imap = await asyncio.gather(
        probes.run(target, Check.SMTP_LOGIN, context, transcript=True),
        probes.run(target, Check.IMAP_LOGIN, context, transcript=True),
    )
    assert (smtp.reason, smtp.phase) == (Reason.AUTH_REJECTED, Phase.SMTP_AUTH), smtp
    assert (imap.reason, imap.phase) == (Reason.AUTH_REJECTED, Phase.IMAP_AUTH), imap
    assert "535" in smtp.detail and "AUTHENTICATIONFAILED" in imap.detail
    assert any(
        line.endswith("S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=")
        for line in imap.transcript
    ), imap.transcript
    requests = idp.token_requests
    assert (await probes.run(target, Check.IMAP_LOGIN, context)).success, (
        "a refused token is dropped and a new one fetched"
    )
    assert idp.token_requests == requests + 1

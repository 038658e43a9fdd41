"""XOAUTH2 for real: Dovecot's oauth2 passdb, Postfix through Dovecot SASL, and a token
endpoint run by the test, with both grants, its failures, and tokens the servers refuse."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config, probes
from exporter.config import OAuth2Config, Secret, Target
from exporter.outcome import Check, Phase, ProbeFailure, Reason
from exporter.probes.context import ProbeContext
from exporter.transports.oauth import (
    MAX_LIFETIME,
    MAX_TOKEN_ANSWER,
    UNSTATED_LIFETIME,
    TokenCache,
    token_answer,
)
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
    ("fault", "expected", "reason"),
    [
        (
            "invalid_client",
            "token endpoint answered 401: invalid_client AADSTS7000222",
            Reason.AUTH_REJECTED,
        ),
        ("invalid_grant", "token endpoint answered 400: invalid_grant", Reason.AUTH_REJECTED),
        ("invalid_scope", "token endpoint answered 400: invalid_scope", Reason.OAUTH_TOKEN),
        ("server_error", "token endpoint answered 500", Reason.UNAVAILABLE),
        ("throttled", "token endpoint answered 429", Reason.THROTTLED),
        ("hang", "the token endpoint did not answer within", Reason.OAUTH_TOKEN),
    ],
)
async def test_token_endpoint_failures_say_whose_problem_they_are(
    oauth_mailstack: MailStack,
    idp: IdentityProvider,
    mailbox: MailUser,
    fault: str,
    expected: str,
    reason: Reason,
    context: ProbeContext,
) -> None:
    """Refused credentials (an expired client secret, a revoked refresh token) are
    ``auth_rejected`` with the identity service's code; a token request the service cannot
    take is ``oauth_token``; its outage ``unavailable``, its limit ``throttled``."""
    target = _target(oauth_mailstack, idp, mailbox, timeout="4s")
    answers = {
        "invalid_client": (
            401,
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000222: The provided client secret keys for app "
                "'00000000-0000-0000-0000-000000000000' are expired.",
            },
        ),
        "invalid_grant": (400, {"error": "invalid_grant", "error_description": "Bad Request"}),
        "invalid_scope": (400, {"error": "invalid_scope"}),
        "server_error": (500, {"error": "server_error"}),
        "throttled": (429, {"error": "temporarily_unavailable"}),
    }
    if fault in answers:
        idp.fail_with(*answers[fault])
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
            assert (result.reason, result.phase) == (reason, phase), result
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


# --- hostile token endpoints ----------------------------------------------------------------------


def _app_config(token_url: str) -> OAuth2Config:
    return OAuth2Config(
        token_url=token_url,
        scope="mail",
        grant="client_credentials",
        client_id="app-hostile",
        client_secret=Secret(CLIENT_SECRET),
        refresh_token=None,
    )


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (1e400, MAX_LIFETIME),  # sent as Infinity
        (10**400, MAX_LIFETIME),
        (10**9, MAX_LIFETIME),
        (float("nan"), UNSTATED_LIFETIME),
        ("soon", UNSTATED_LIFETIME),
        (True, UNSTATED_LIFETIME),
        ([3600], UNSTATED_LIFETIME),
        (None, UNSTATED_LIFETIME),
    ],
)
async def test_a_token_lifetime_is_clamped_whatever_the_endpoint_says(
    idp: IdentityProvider, expires_in: object, lifetime: float
) -> None:
    cache = TokenCache()
    idp.fail_with(200, {"access_token": "token-7a3f", "expires_in": expires_in})
    try:
        started, now = time.monotonic(), time.time()
        token = await cache.token(_app_config(idp.token_url), 5)
        assert token.value == "token-7a3f"
        assert token.expires_at == pytest.approx(now + lifetime, abs=2)
        assert math.isfinite(token.refresh_at)
        assert token.refresh_at <= started + lifetime + 2
    finally:
        idp.fail_with(None)
        await cache.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[Callable[[Any], str]]:
    """A token endpoint on 127.0.0.1 that answers what the test sets: bytes as a JSON body,
    or a function that writes the answer itself."""
    answer: dict[str, Any] = {}

    async def token(request: web.Request) -> web.StreamResponse:
        body = answer["body"]
        if callable(body):
            return await body(request)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def answering(body: Any) -> str:
        answer["body"] = body
        return f"http://127.0.0.1:{port}/token"

    try:
        yield answering
    finally:
        await runner.cleanup()


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"access_token": "')
    while True:
        await response.write(b"x" * 65536)


async def test_an_endless_token_answer_is_cut_off_at_the_limit(
    endpoint: Callable[[Any], str],
) -> None:
    cache = TokenCache()
    try:
        started = time.monotonic()
        with pytest.raises(ProbeFailure) as caught:
            await cache.token(_app_config(endpoint(_endless)), 10)
        assert caught.value.reason is Reason.OAUTH_TOKEN
        assert f"more than {MAX_TOKEN_ANSWER:,} bytes" in caught.value.detail
        assert time.monotonic() - started < 5, "not read until the time limit"
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "no access_token in the answer"),
        (b'{"access_token": "abc\\r\\nX-Injected: 1", "expires_in": 60}', "no access_token"),
        (b'{"access_token": ""}', "no access_token"),
    ],
)
async def test_a_hostile_token_answer_is_a_clean_failure(
    endpoint: Callable[[Any], str], body: bytes, detail: str
) -> None:
    cache = TokenCache()
    try:
        with pytest.raises(ProbeFailure) as caught:
            await cache.token(_app_config(endpoint(body)), 5)
        assert caught.value.reason is Reason.OAUTH_TOKEN
        assert detail in caught.value.detail
        assert CLIENT_SECRET not in caught.value.detail
    finally:
        await cache.close()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
TOKEN_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.text(max_size=20) | JSON,
        "expires_in": st.integers() | st.floats() | st.text(max_size=8) | JSON,
        "error": st.sampled_from(["invalid_client", "unauthorized_client"]) | JSON,
        "error_description": st.just(f"bad secret {CLIENT_SECRET}") | JSON,
        "token_type": JSON,
    },
)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(
    status=st.sampled_from([200, 400, 401, 500]),
    raw=TOKEN_FIELDS.map(lambda body: json.dumps(body).encode())
    | JSON.map(lambda body: json.dumps(body).encode())
    | st.binary(max_size=50),
)
def test_any_token_answer_is_a_bounded_token_or_a_clean_failure(status: int, raw: bytes) -> None:
    started, now = time.monotonic(), time.time()
    try:
        token = token_answer(status, raw, _app_config("http://127.0.0.1:1/token"), started)
    except ProbeFailure as failure:
        assert failure.reason in (
            Reason.OAUTH_TOKEN,
            Reason.AUTH_REJECTED,
            Reason.THROTTLED,
            Reason.UNAVAILABLE,
        )
        assert CLIENT_SECRET not in failure.detail
        return
    assert status == 200 and token.value
    assert now <= token.expires_at <= time.time() + MAX_LIFETIME
    assert started <= token.refresh_at + 1e-6 and token.refresh_at <= started + MAX_LIFETIME

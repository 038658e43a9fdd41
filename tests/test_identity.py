"""The test identity provider: grants, errors, faults and introspection over real HTTP.

Exporter tests trust its answers (and Dovecot checks tokens against it),
so its OAuth2 behaviour is pinned down here with a plain stdlib client.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from testing.identity import IdentityProvider

ALICE = "alice@example.test"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        provider.add_client("probe", "probe-secret", ALICE)
        provider.add_refresh_token("refresh-1", "probe", ALICE)
        provider.add_refresh_token("refresh-public", "public-app", "bob@example.test")
        yield provider


def post(
    idp: IdentityProvider,
    path: str,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", int(idp.url.rsplit(":", 1)[1]), timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def introspect(idp: IdentityProvider, token: str) -> dict[str, Any]:
    status, answer = post(idp, "/introspect", {"token": token})
    assert status == 200
    return answer


def test_urls(idp: IdentityProvider) -> None:
    assert idp.url.startswith("http://127.0.0.1:")
    assert idp.token_url == f"{idp.url}/token"
    assert idp.introspection_url == f"{idp.url}/introspect"
    with pytest.raises(RuntimeError):
        _ = IdentityProvider().url


def test_client_credentials_in_form_and_basic(idp: IdentityProvider) -> None:
    status, answer = post(
        idp,
        "/token",
        {"grant_type": "client_credentials", "client_id": "probe", "client_secret": "probe-secret"},
    )
    assert status == 200
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["scope"] == "mail" and answer["access_token"]
    status, via_basic = post(
        idp, "/token", {"grant_type": "client_credentials"}, basic("probe", "probe-secret")
    )
    assert status == 200 and via_basic["access_token"] != answer["access_token"]

    active = introspect(idp, answer["access_token"])
    assert active["active"] is True and active["username"] == ALICE
    assert active["scope"] == "mail" and active["exp"] >= time.time() + 3590
    assert idp.token_requests == 2 and idp.introspections == 1


def test_invalid_client(idp: IdentityProvider) -> None:
    for form, headers in (
        ({"client_id": "probe", "client_secret": "wrong"}, None),
        ({"client_id": "nobody", "client_secret": "probe-secret"}, None),
        ({}, basic("probe", "wrong")),
        ({}, None),
    ):
        status, answer = post(idp, "/token", {"grant_type": "client_credentials", **form}, headers)
        assert (status, answer) == (400, {"error": "invalid_client"})
    assert idp.token_requests == 4


def test_refresh_token_grant(idp: IdentityProvider) -> None:
    status, answer = post(
        idp,
        "/token",
        {"grant_type": "refresh_token", "refresh_token": "refresh-1", "client_id": "probe"},
    )
    assert status == 200 and introspect(idp, answer["access_token"])["username"] == ALICE
    with_secret = {"client_secret": "probe-secret"}
    form = {"grant_type": "refresh_token", "refresh_token": "refresh-1", "client_id": "probe"}
    assert post(idp, "/token", {**form, **with_secret})[0] == 200
    status, public = post(
        idp,
        "/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": "refresh-public",
            "client_id": "public-app",
        },
    )
    assert status == 200
    assert introspect(idp, public["access_token"])["username"] == "bob@example.test"

    assert post(idp, "/token", {**form, "refresh_token": "nope"}) == (
        400,
        {"error": "invalid_grant"},
    )
    assert post(idp, "/token", {**form, "refresh_token": "refresh-public"}) == (
        400,
        {"error": "invalid_grant"},  # issued to another client
    )
    assert post(idp, "/token", {**form, "client_secret": "wrong"}) == (
        400,
        {"error": "invalid_client"},
    )
    assert post(idp, "/token", {"grant_type": "password"})[1] == {"error": "unsupported_grant_type"}


def test_token_lifetime_and_expiry(idp: IdentityProvider) -> None:
    idp.token_lifetime = 1
    status, answer = post(
        idp, "/token", {"grant_type": "client_credentials"}, basic("probe", "probe-secret")
    )
    assert status == 200 and answer["expires_in"] == 1
    assert introspect(idp, answer["access_token"])["active"] is True
    expired = idp.issue_token(ALICE, lifetime=0)
    assert introspect(idp, expired) == {"active": False}


def test_introspection_accepts_bearer_header_and_query(idp: IdentityProvider) -> None:
    token = idp.issue_token(ALICE)
    status, answer = post(idp, "/introspect", {}, {"Authorization": f"Bearer {token}"})
    assert status == 200 and answer["active"] is True
    conn = http.client.HTTPConnection("127.0.0.1", int(idp.url.rsplit(":", 1)[1]), timeout=5)
    try:
        conn.request("GET", f"/introspect?token={token}")
        assert json.loads(conn.getresponse().read())["username"] == ALICE
    finally:
        conn.close()
    assert introspect(idp, "garbage") == {"active": False}
    assert idp.introspections == 3
    assert [r.method for r in idp.introspection_requests()] == ["POST", "GET", "POST"]


def test_revoke_all(idp: IdentityProvider) -> None:
    old = idp.issue_token(ALICE)
    idp.revoke_all()
    assert introspect(idp, old) == {"active": False}
    assert introspect(idp, idp.issue_token(ALICE))["active"] is True


def test_fail_with(idp: IdentityProvider) -> None:
    idp.fail_with(500, {"error": "server_error"})
    form = {"grant_type": "client_credentials"}
    assert post(idp, "/token", form, basic("probe", "probe-secret")) == (
        500,
        {"error": "server_error"},
    )
    idp.fail_with(None)
    assert post(idp, "/token", form, basic("probe", "probe-secret"))[0] == 200
    assert idp.token_requests == 2


def test_hang_times_out_then_resumes(idp: IdentityProvider) -> None:
    idp.hang(True)
    form = {"grant_type": "client_credentials"}
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        post(idp, "/token", form, basic("probe", "probe-secret"), timeout=1.0)
    assert 0.9 < time.monotonic() - started < 3.0
    assert idp.token_requests == 1  # received, just never answered

    result: list[int] = []
    waiter = threading.Thread(
        target=lambda: result.append(post(idp, "/token", form, basic("probe", "probe-secret"))[0])
    )
    waiter.start()
    time.sleep(0.3)
    assert result == []
    idp.hang(False)
    waiter.join(5.0)
    assert result == [200]


def test_stop_drops_hung_requests_promptly(idp: IdentityProvider) -> None:
    idp.hang(True)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            post(idp, "/token", {"grant_type": "client_credentials"}, timeout=10.0)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    client = threading.Thread(target=request)
    client.start()
    deadline = time.monotonic() + 5
    while idp.token_requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    idp.stop()
    assert time.monotonic() - started < 1.0
    client.join(5.0)
    assert not client.is_alive() and len(errors) == 1  # closed without an answer
    with pytest.raises(ConnectionRefusedError):
        post(idp, "/token", {}, timeout=2.0)


def test_restart_keeps_url_and_tokens(idp: IdentityProvider) -> None:
    token = idp.issue_token(ALICE)
    url = idp.url
    idp.stop()
    idp.stop()  # idempotent
    idp.start()
    assert idp.url == url and introspect(idp, token)["active"] is True

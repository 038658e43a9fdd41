"""The Graph and Gmail simulators behave as their public references say (see each module)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
import jwt
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from testing.simulators.gmail import (
    FULL_SCOPE,
    MODIFY_SCOPE,
    GmailMessage,
    GmailSimulator,
    google_error,
)
from testing.simulators.graph import (
    GRAPH_SCOPE,
    GraphSimulator,
    extended_header_id,
    self_signed_certificate,
    thumbprint_headers,
)

MAILBOX = "probe@contoso.example"
OTHER = "other@contoso.example"
GMAILBOX = "probe@example.test"
GOTHER = "other@example.test"
SA_EMAIL = "monitor@project.iam.gserviceaccount.example"


# ---------------------------------------------------------------- keys and helpers


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailbox-exporter test app")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return _key()


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    return _key()


@pytest.fixture(scope="module")
def app_cert(app_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return _certificate(app_key)


async def _until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class _Sink:
    """An SMTP server that keeps what it receives (stands in for the relay host)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
async def sink() -> AsyncIterator[tuple[_Sink, int]]:
    handler = _Sink()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    try:
        yield handler, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ================================================================ Microsoft Graph


@pytest.fixture
async def graph(
    sink: tuple[_Sink, int], app_cert: x509.Certificate
) -> AsyncIterator[GraphSimulator]:
    async with GraphSimulator(delivery_delay=0.1, relay=("127.0.0.1", sink[1])) as sim:
        sim.add_mailbox(MAILBOX)
        sim.add_mailbox(OTHER)
        sim.add_app("app-id", secret="s3cret", certificate=app_cert)
        yield sim


def _auth(graph: GraphSimulator, client: str = "app-id") -> dict[str, str]:
    return {"Authorization": "Bearer " + graph.issue_token(client)}


def _mail(to: str, subject: str = "probe", **extra: Any) -> dict[str, Any]:
    message = {
        "subject": subject,
        "body": {"contentType": "Text", "content": "probe body"},
        "toRecipients": [{"emailAddress": {"address": to}}],
        **extra,
    }
    return {"message": message}


async def _token(
    http: aiohttp.ClientSession, graph: GraphSimulator, **form: str
) -> tuple[int, dict[str, Any]]:
    data = {"grant_type": "client_credentials", "client_id": "app-id", "scope": GRAPH_SCOPE}
    data.update(form)
    async with http.post(graph.token_url, data=data) as response:
        return response.status, await response.json()


def _assertion(
    graph: GraphSimulator,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    *,
    algorithm: str = "RS256",
    header: str = "x5t",
    audience: str | None = None,
    lifetime: int = 600,
) -> str:
    now = int(time.time())
    claims = {
        "aud": audience or graph.token_url,
        "iss": "app-id",
        "sub": "app-id",
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(
        claims,
        key,
        algorithm=algorithm,
        headers={header: thumbprint_headers(cert)[header]},
    )


async def test_graph_token_with_client_secret(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    status, body = await _token(http, graph, client_secret="s3cret")
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    async with http.get(
        f"{graph.graph_url}/users/{MAILBOX}/mailFolders/inbox",
        headers={"Authorization": "Bearer " + body["access_token"]},
    ) as response:
        assert response.status == 200


async def test_graph_token_refusals_follow_the_identity_platform(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    status, body = await _token(http, graph, client_secret="wrong")
    assert status == 401 and body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "\r\nTrace ID: " in body["error_description"]
    assert body["error_codes"] == [7000215]
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()

    status, body = await _token(http, graph, client_secret="s3cret", scope="Mail.Send")
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_scope", [70011])

    status, body = await _token(http, graph, client_id="nobody", client_secret="x")
    assert (status, body["error"], body["error_codes"]) == (400, "unauthorized_client", [700016])


async def test_graph_token_with_certificate_assertion(
    http: aiohttp.ClientSession,
    graph: GraphSimulator,
    app_key: rsa.RSAPrivateKey,
    app_cert: x509.Certificate,
) -> None:
    for algorithm, header in (("RS256", "x5t"), ("PS256", "x5t#S256")):
        assertion = _assertion(graph, app_key, app_cert, algorithm=algorithm, header=header)
        status, body = await _token(
            http,
            graph,
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=assertion,
        )
        assert status == 200, body
        assert body["access_token"]


def _signed(
    graph: GraphSimulator,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    algorithm: str,
    headers: tuple[str, ...],
) -> str:
    """An assertion otherwise valid, signed with ``algorithm`` and naming ``cert`` by the
    thumbprint ``headers``."""
    assertion = _assertion(graph, key, cert)
    claims = jwt.decode(assertion, options={"verify_signature": False})
    named = {name: thumbprint_headers(cert)[name] for name in headers}
    return jwt.encode(claims, key, algorithm=algorithm, headers=named)


@pytest.mark.parametrize(
    ("algorithm", "headers", "rs256", "code"),
    [
        ("PS256", ("x5t#S256",), True, None),
        ("PS256", ("x5t#S256",), False, None),
        ("RS256", ("x5t",), True, None),
        ("PS256", ("x5t#S256", "x5t"), True, None),
        # the strict reading: each algorithm with its own thumbprint
        ("PS256", ("x5t",), True, 700027),
        ("RS256", ("x5t#S256",), True, 700027),
        ("PS256", (), True, 700027),
        # RS256 no longer taken
        ("RS256", ("x5t",), False, 5002738),
        ("RS512", ("x5t",), True, 5002738),
        ("HS256", ("x5t#S256",), True, 5002738),
    ],
)
async def test_graph_assertion_algorithm_goes_with_its_thumbprint(
    http: aiohttp.ClientSession,
    graph: GraphSimulator,
    app_key: rsa.RSAPrivateKey,
    app_cert: x509.Certificate,
    algorithm: str,
    headers: tuple[str, ...],
    rs256: bool,
    code: int | None,
) -> None:
    graph.rs256_assertions = rs256
    if algorithm == "HS256":
        claims = jwt.decode(
            _assertion(graph, app_key, app_cert), options={"verify_signature": False}
        )
        named = {name: thumbprint_headers(app_cert)[name] for name in headers}
        assertion = jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", "HS256", named)
    else:
        assertion = _signed(graph, app_key, app_cert, algorithm, headers)
    status, body = await _token(
        http,
        graph,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
    )
    if code is None:
        assert status == 200, body
    else:
        assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [code])


async def test_graph_assertion_naming_another_certificate_too_is_refused(
    http: aiohttp.ClientSession,
    graph: GraphSimulator,
    app_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
    app_cert: x509.Certificate,
) -> None:
    claims = jwt.decode(_assertion(graph, app_key, app_cert), options={"verify_signature": False})
    headers = {
        "x5t#S256": thumbprint_headers(app_cert)["x5t#S256"],
        "x5t": thumbprint_headers(_certificate(stranger_key))["x5t"],
    }
    assertion = jwt.encode(claims, app_key, algorithm="PS256", headers=headers)
    status, body = await _token(
        http,
        graph,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
    )
    assert (status, body["error_codes"]) == (401, [700027])


@pytest.mark.parametrize("case", ["thumbprint", "signature", "audience", "expired"])
async def test_graph_bad_assertions_are_refused(
    http: aiohttp.ClientSession,
    graph: GraphSimulator,
    app_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
    app_cert: x509.Certificate,
    case: str,
) -> None:
    stranger_cert = _certificate(stranger_key)
    assertion, code = {
        # signed with another certificate, and says so: not registered
        "thumbprint": (_assertion(graph, stranger_key, stranger_cert), 700027),
        # names the registered certificate but is signed with another key
        "signature": (_assertion(graph, stranger_key, app_cert), 700027),
        "audience": (_assertion(graph, app_key, app_cert, audience="https://elsewhere/"), 700023),
        "expired": (_assertion(graph, app_key, app_cert, lifetime=-600), 700024),
    }[case]
    status, body = await _token(
        http,
        graph,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
    )
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [code])
    if case == "thumbprint":
        assert "is not registered on application" in body["error_description"]
    if case == "signature":
        assert "invalid signature" in body["error_description"]


async def test_graph_send_delivers_after_the_delay_and_keeps_a_sent_copy(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    headers = [{"name": "X-Probe-Id", "value": "p-1"}]
    async with http.post(
        f"{graph.graph_url}/users/{MAILBOX}/sendMail",
        headers=_auth(graph),
        json=_mail(OTHER, "probe p-1", internetMessageHeaders=headers),
    ) as response:
        assert response.status == 202
        assert await response.read() == b""
        assert response.headers["request-id"]
        assert response.headers["client-request-id"] == response.headers["request-id"]
    assert graph.messages(OTHER, "inbox") == []
    [sent] = graph.messages(MAILBOX, "sentitems")
    await _until(lambda: bool(graph.messages(OTHER, "inbox")))
    [arrived] = graph.messages(OTHER, "inbox")
    assert arrived.subject == "probe p-1"
    assert arrived.header("X-Probe-Id") == "p-1"
    assert arrived.internet_message_id == sent.internet_message_id
    assert arrived.extended == {}  # x-headers are never promoted unless asked for

    async with http.post(
        f"{graph.graph_url}/users/{MAILBOX}/sendMail",
        headers=_auth(graph),
        json={**_mail(OTHER), "saveToSentItems": "false"},  # a string, as in the reference
    ) as response:
        assert response.status == 202
    assert len(graph.messages(MAILBOX, "sentitems")) == 1


async def test_graph_custom_headers_must_be_x_headers_and_at_most_five(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    url = f"{graph.graph_url}/users/{MAILBOX}/sendMail"
    bad = [{"name": "In-Reply-To", "value": "<a@b>"}]
    async with http.post(
        url, headers=_auth(graph), json=_mail(OTHER, internetMessageHeaders=bad)
    ) as response:
        body = await response.json()
        assert response.status == 400
        assert body["error"]["code"] == "InvalidInternetMessageHeader"
        assert "'In-Reply-To' should start with 'x-' or 'X-'" in body["error"]["message"]
    many = [{"name": f"x-h{i}", "value": "v"} for i in range(6)]
    async with http.post(
        url, headers=_auth(graph), json=_mail(OTHER, internetMessageHeaders=many)
    ) as response:
        body = await response.json()
        assert response.status == 400
        assert body["error"]["code"] == "InvalidInternetMessageHeaderCollection"


async def _list(
    http: aiohttp.ClientSession, graph: GraphSimulator, path: str, **params: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{graph.graph_url}/users/{MAILBOX}{path}", headers=_auth(graph), params=params
    ) as response:
        return response.status, await response.json()


async def test_graph_filters_find_the_probe_without_scanning(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    graph.x_header_promotion = "always"
    probe = graph.put_message(
        MAILBOX, subject="[probe] token-42", headers={"X-Probe-Id": "token-42"}
    )
    graph.put_message(MAILBOX, subject="ordinary mail")
    lookalike = graph.put_message(
        MAILBOX, subject="re: [probe] token-42", headers={"X-Probe-Id": "forged"}
    )
    prop = extended_header_id("X-Probe-Id")

    status, body = await _list(
        http,
        graph,
        "/mailFolders/inbox/messages",
        **{
            "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{prop}' and "
            "ep/value eq 'token-42')"
        },
    )
    assert status == 200
    assert [m["id"] for m in body["value"]] == [probe.id]

    status, body = await _list(
        http,
        graph,
        "/messages",
        **{"$filter": f"internetMessageId eq '{probe.internet_message_id}'"},
    )
    assert [m["id"] for m in body["value"]] == [probe.id]

    status, body = await _list(
        http, graph, "/messages", **{"$filter": "startswith(subject,'[probe] ')"}
    )
    assert [m["id"] for m in body["value"]] == [probe.id]
    assert lookalike.id not in [m["id"] for m in body["value"]]

    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body = await _list(
        http,
        graph,
        "/messages",
        **{
            "$filter": f"receivedDateTime ge {since} and startswith(subject,'[probe]')",
            "$orderby": "receivedDateTime desc",
        },
    )
    assert status == 200 and [m["id"] for m in body["value"]] == [probe.id]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"$filter": "contains(subject,'probe')"}, "ErrorInvalidUrlQueryFilter"),
        (
            {"$filter": "internetMessageHeaders/any(h: h/name eq 'X-Probe-Id')"},
            "ErrorInvalidUrlQueryFilter",
        ),
        ({"$filter": "subject eq 'a' or subject eq 'b'"}, "ErrorInvalidUrlQueryFilter"),
        ({"$filter": "nosuch eq 'a'"}, "RequestBroker--ParseUri"),
        ({"$filter": "subject eq 'a'", "$orderby": "receivedDateTime desc"}, "InefficientFilter"),
        (
            {
                "$filter": "subject eq 'a' and receivedDateTime ge 2026-01-01T00:00:00Z",
                "$orderby": "receivedDateTime desc",
            },
            "InefficientFilter",
        ),
        ({"$top": "1001"}, "ErrorInvalidParameter"),
        ({"$select": "subject,nosuch"}, "RequestBroker--ParseUri"),
    ],
)
async def test_graph_refuses_queries_graph_refuses(
    http: aiohttp.ClientSession, graph: GraphSimulator, query: dict[str, str], code: str
) -> None:
    status, body = await _list(http, graph, "/messages", **query)
    assert status == 400
    assert body["error"]["code"] == code
    if code == "InefficientFilter":
        assert body["error"]["message"] == (
            "The restriction or sort order is too complex for this operation."
        )


async def test_graph_pages_500_messages_ten_at_a_time(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    for i in range(500):
        graph.put_message(MAILBOX, subject=f"filler {i}")
    graph.clear_requests()
    url: str | None = f"{graph.graph_url}/users/{MAILBOX}/mailFolders/inbox/messages"
    seen: list[str] = []
    headers = _auth(graph)
    while url is not None:
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            body = await response.json()
        assert "@odata.context" in body
        assert len(body["value"]) <= 10
        seen += [m["id"] for m in body["value"]]
        url = body.get("@odata.nextLink")
        if url is not None:
            assert url.startswith(graph.url) and "$skip=" in url
    assert len(seen) == len(set(seen)) == 500
    assert graph.count_requests("GET", "/v1.0/users/*/mailFolders/inbox/messages") == 50


async def test_graph_internet_message_headers_only_with_select(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    message = graph.put_message(MAILBOX, subject="s", headers={"X-Probe-Id": "p"})
    status, body = await _list(http, graph, f"/messages/{message.id}")
    assert status == 200 and "internetMessageHeaders" not in body and "subject" in body
    status, body = await _list(
        http, graph, f"/messages/{message.id}", **{"$select": "internetMessageHeaders"}
    )
    assert "subject" not in body
    assert {"name": "X-Probe-Id", "value": "p"} in body["internetMessageHeaders"]


async def test_graph_delete_moves_permanent_delete_removes_move_answers_201(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    auth = _auth(graph)
    base = f"{graph.graph_url}/users/{MAILBOX}/messages"
    first = graph.put_message(MAILBOX, subject="one")
    old_id = first.id
    async with http.delete(f"{base}/{old_id}", headers=auth) as response:
        assert response.status == 204
    [moved] = graph.messages(MAILBOX, "deleteditems")
    assert moved.subject == "one" and moved.id != old_id
    async with http.get(f"{base}/{old_id}", headers=auth) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "ErrorItemNotFound"

    second = graph.put_message(MAILBOX, subject="two")
    async with http.post(f"{base}/{second.id}/permanentDelete", headers=auth) as response:
        assert response.status == 204
    assert "two" not in [m.subject for m in graph.messages(MAILBOX)]

    third = graph.put_message(MAILBOX, subject="three")
    async with http.post(
        f"{base}/{third.id}/move", headers=auth, json={"destinationId": "junkemail"}
    ) as response:
        assert response.status == 201
        body = await response.json()
    assert body["subject"] == "three"
    assert body["parentFolderId"] == graph.mailbox(MAILBOX).folder("junkemail").id  # type: ignore[union-attr]

    _status, folder = await _list(http, graph, "/mailFolders/deleteditems")
    assert (folder["displayName"], folder["totalItemCount"]) == ("Deleted Items", 1)


async def test_graph_error_bodies(http: aiohttp.ClientSession, graph: GraphSimulator) -> None:
    inbox = f"{graph.graph_url}/users/{MAILBOX}/mailFolders/inbox"
    async with http.get(inbox, headers={"client-request-id": "c-1"}) as response:
        body = await response.json()
        assert response.status == 401
        assert body["error"]["code"] == "InvalidAuthenticationToken"
        inner = body["error"]["innerError"]
        assert inner["request-id"] == response.headers["request-id"]
        assert inner["client-request-id"] == "c-1" == response.headers["client-request-id"]
        assert "date" in inner

    expired = {"Authorization": "Bearer " + graph.issue_token("app-id", lifetime=-1)}
    async with http.get(inbox, headers=expired) as response:
        assert response.status == 401

    graph.add_app("reader", secret="x", permissions=["Mail.Read"])
    async with http.post(
        f"{graph.graph_url}/users/{MAILBOX}/sendMail",
        headers=_auth(graph, "reader"),
        json=_mail(OTHER),
    ) as response:
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (403, "ErrorAccessDenied")
        assert body["error"]["message"] == "Access is denied. Check credentials and try again."

    graph.add_app("scoped", secret="x", mailboxes=[OTHER])
    async with http.get(inbox, headers=_auth(graph, "scoped")) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            403,
            "ErrorAccessDenied",
        )

    async with http.get(
        f"{graph.graph_url}/users/nobody@contoso.example/mailFolders/inbox", headers=_auth(graph)
    ) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            404,
            "ErrorInvalidUser",
        )

    graph.set_mailbox_state(MAILBOX, licensed=False)
    async with http.get(inbox, headers=_auth(graph)) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            404,
            "MailboxNotEnabledForRESTAPI",
        )
    graph.set_mailbox_state(MAILBOX, licensed=True, quota_exceeded=True)
    send = f"{graph.graph_url}/users/{MAILBOX}/sendMail"
    async with http.post(send, headers=_auth(graph), json=_mail(OTHER)) as response:
        assert (await response.json())["error"]["code"] == "ErrorQuotaExceeded"
    graph.set_mailbox_state(MAILBOX, quota_exceeded=False)

    as_other = _mail(OTHER)
    as_other["message"]["from"] = {"emailAddress": {"address": OTHER}}
    async with http.post(send, headers=_auth(graph), json=as_other) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            403,
            "ErrorSendAsDenied",
        )
    graph.grant_send_as(MAILBOX, OTHER)
    async with http.post(send, headers=_auth(graph), json=as_other) as response:
        assert response.status == 202


async def test_graph_throttles_per_app_and_mailbox(http: aiohttp.ClientSession) -> None:
    async with GraphSimulator(request_limit=3, request_window=30, concurrency_limit=1) as graph:
        graph.add_mailbox(MAILBOX)
        graph.add_mailbox(OTHER)
        graph.add_app("app-id", secret="s")
        auth = _auth(graph)
        inbox = f"{graph.graph_url}/users/{MAILBOX}/mailFolders/inbox"
        for _ in range(3):
            async with http.get(inbox, headers=auth) as response:
                assert response.status == 200
        async with http.get(inbox, headers=auth) as response:
            body = await response.json()
            assert response.status == 429
            assert body["error"]["code"] == "ApplicationThrottled"
            assert 1 <= int(response.headers["Retry-After"]) <= 30
        # another mailbox has its own budget; one request at a time per mailbox
        graph.slow("/v1.0/users/*/mailFolders/inbox", 0.3)
        other = f"{graph.graph_url}/users/{OTHER}/mailFolders/inbox"

        async def get() -> tuple[int, str]:
            async with http.get(other, headers=auth) as response:
                return response.status, (await response.text())

        results = await asyncio.gather(get(), get())
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 429]
        assert "MailboxConcurrency" in next(text for status, text in results if status == 429)


async def test_graph_faults_and_deferred_delivery(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    send = f"{graph.graph_url}/users/{MAILBOX}/sendMail"
    graph.fail(
        "/v1.0/users/*/sendMail",
        503,
        {"error": {"code": "ServiceUnavailable", "message": "Service unavailable"}},
        headers={"Retry-After": "30"},
        times=1,
    )
    async with http.post(send, headers=_auth(graph), json=_mail(OTHER)) as response:
        body = await response.json()
        assert (response.status, response.headers["Retry-After"]) == (503, "30")
        assert body["error"]["code"] == "ServiceUnavailable"
        assert body["error"]["innerError"]["request-id"] == response.headers["request-id"]
    graph.set_mailbox_state(OTHER, deferred=True)
    async with http.post(send, headers=_auth(graph), json=_mail(OTHER, "held")) as response:
        assert response.status == 202  # the fault applied once only
    await asyncio.sleep(0.3)
    assert graph.messages(OTHER, "inbox") == [] and len(graph.pending) == 1
    graph.resume_delivery(OTHER)
    await _until(lambda: bool(graph.messages(OTHER, "inbox")))

    graph.hang("/v1.0/users/*/mailFolders/inbox")
    request = asyncio.ensure_future(_list(http, graph, "/mailFolders/inbox"))
    await asyncio.sleep(0.2)
    assert not request.done()
    graph.clear_faults()
    status, _ = await asyncio.wait_for(request, 2)
    assert status == 200


async def test_graph_relays_outside_mail_over_smtp(
    http: aiohttp.ClientSession, graph: GraphSimulator, sink: tuple[_Sink, int]
) -> None:
    headers = [{"name": "X-Probe-Id", "value": "relay-1"}]
    async with http.post(
        f"{graph.graph_url}/users/{MAILBOX}/sendMail",
        headers=_auth(graph),
        json=_mail("someone@elsewhere.example", "out", internetMessageHeaders=headers),
    ) as response:
        assert response.status == 202
    await _until(lambda: bool(graph.relayed))
    assert graph.relayed[0].error is None
    [envelope] = sink[0].envelopes
    assert envelope.rcpt_tos == ["someone@elsewhere.example"]
    content = envelope.content if isinstance(envelope.content, bytes) else b""
    assert b"X-Probe-Id: relay-1" in content and b"Message-ID:" in content


async def test_graph_inbound_smtp_lands_in_inbox_or_junk() -> None:
    def junk(message: EmailMessage) -> bool:
        return "spammy" in str(message["Subject"])

    async with GraphSimulator(junk_rule=junk) as graph:
        graph.add_mailbox(MAILBOX)
        for subject in ("hello", "spammy offer"):
            mail = EmailMessage()
            mail["From"] = "a@elsewhere.example"
            mail["To"] = MAILBOX
            mail["Subject"] = subject
            mail["Message-ID"] = f"<{subject.split()[0]}@elsewhere.example>"
            mail["X-Probe-Id"] = "in-1"
            mail.set_content("hi")
            await aiosmtplib.send(mail, hostname="127.0.0.1", port=graph.smtp_port)
        await _until(lambda: len(graph.messages(MAILBOX)) == 2)
        [inbox] = graph.messages(MAILBOX, "inbox")
        [junked] = graph.messages(MAILBOX, "junkemail")
        assert (inbox.subject, inbox.internet_message_id) == ("hello", "<hello@elsewhere.example>")
        assert inbox.header("X-Probe-Id") == "in-1"
        assert junked.subject == "spammy offer"
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(
                mail,
                recipients=["nobody@contoso.example"],
                sender="a@elsewhere.example",
                hostname="127.0.0.1",
                port=graph.smtp_port,
            )
        assert "5.1.1" in str(refused.value.recipients[0])


def test_graph_serves_from_a_thread_for_sync_fixtures() -> None:
    import json
    import urllib.request

    graph = GraphSimulator().start_in_thread()
    try:
        graph.add_mailbox(MAILBOX)
        graph.add_app("app-id", secret="s")
        request = urllib.request.Request(
            f"{graph.graph_url}/users/{MAILBOX}/mailFolders/inbox", headers=_auth(graph)
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["displayName"] == "Inbox"
    finally:
        graph.stop()


async def _header_filter(
    http: aiohttp.ClientSession, graph: GraphSimulator, value: str
) -> list[str]:
    prop = extended_header_id("X-Probe-Id")
    status, body = await _list(
        http,
        graph,
        "/mailFolders/inbox/messages",
        **{
            "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{prop}' and "
            f"ep/value eq '{value}')"
        },
    )
    assert status == 200
    return [m["id"] for m in body["value"]]


@pytest.mark.parametrize(
    ("mode", "found"),
    [("never", [False, False]), ("after-first", [False, True]), ("always", [True, True])],
)
async def test_graph_x_header_promotion_modes(
    http: aiohttp.ClientSession, graph: GraphSimulator, mode: Any, found: list[bool]
) -> None:
    """The extended-property filter finds an x-header never, from the second message of the
    mailbox that carries it, or always; ``internetMessageHeaders`` has it every time."""
    graph.x_header_promotion = mode
    messages = [
        graph.put_message(MAILBOX, subject=f"m{n}", headers={"X-Probe-Id": f"v{n}"})
        for n in range(2)
    ]
    for n, message in enumerate(messages):
        assert (await _header_filter(http, graph, f"v{n}") == [message.id]) is found[n]
        assert message.header("X-Probe-Id") == f"v{n}"


async def _smtp_to(port: int, sender: str, to: str, subject: str, **headers: str) -> None:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@elsewhere.example>"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content("hi")
    await aiosmtplib.send(mail, hostname="127.0.0.1", port=port)


async def test_graph_transport_rule_tags_delivered_subjects(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    graph.subject_tag = "[EXTERNAL] "
    await _smtp_to(graph.smtp_port, "a@elsewhere.example", MAILBOX, "probe 42")
    async with http.post(
        f"{graph.graph_url}/users/{MAILBOX}/sendMail", headers=_auth(graph), json=_mail(MAILBOX)
    ) as response:
        assert response.status == 202
    await _until(lambda: len(graph.messages(MAILBOX, "inbox")) == 2)
    assert sorted(m.subject for m in graph.messages(MAILBOX, "inbox")) == [
        "[EXTERNAL] probe",
        "[EXTERNAL] probe 42",
    ]
    assert all(
        (m.header("Subject") or "").startswith("[EXTERNAL] ")
        for m in graph.messages(MAILBOX, "inbox")
    )
    status, body = await _list(
        http, graph, "/mailFolders/inbox/messages", **{"$filter": "startswith(subject,'probe')"}
    )
    assert (status, body["value"]) == (200, [])
    graph.put_message(MAILBOX, subject="probe placed")  # not delivered: not tagged
    assert "probe placed" in [m.subject for m in graph.messages(MAILBOX)]


async def test_graph_national_cloud_has_no_permanent_delete(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    """US Government L5: the token is for dod-graph.microsoft.us; permanentDelete is refused;
    move to Deleted Items then DELETE ends the message there."""
    graph.cloud = "usgov-dod"
    status, body = await _token(http, graph, client_secret="s3cret")
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = await _token(
        http, graph, client_secret="s3cret", scope="https://dod-graph.microsoft.us/.default"
    )
    assert status == 200
    auth = {"Authorization": "Bearer " + body["access_token"]}
    base = f"{graph.graph_url}/users/{MAILBOX}/messages"
    message = graph.put_message(MAILBOX, subject="one")
    async with http.post(f"{base}/{message.id}/permanentDelete", headers=auth) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert (error["code"], error["message"]) == (
        "BadRequest",
        "Resource not found for the segment 'permanentDelete'.",
    )
    async with http.post(
        f"{base}/{message.id}/move", headers=auth, json={"destinationId": "deleteditems"}
    ) as response:
        moved = await response.json()
    async with http.delete(f"{base}/{moved['id']}", headers=auth) as response:
        assert response.status == 204
    assert graph.messages(MAILBOX) == []


async def test_graph_smtp_submission_leaves_a_sent_copy_without_headers(
    http: aiohttp.ClientSession, graph: GraphSimulator
) -> None:
    graph.smtp_sent_copies = True
    await _smtp_to(graph.smtp_port, MAILBOX, OTHER, "from the device", X_Probe_Id="d-1")
    await _smtp_to(graph.smtp_port, "a@elsewhere.example", OTHER, "from outside")
    await _until(lambda: len(graph.messages(OTHER, "inbox")) == 2)
    [copy] = graph.messages(MAILBOX, "sentitems")
    [delivered] = [m for m in graph.messages(OTHER) if m.subject == "from the device"]
    assert copy.subject == "from the device" and copy.headers == []
    assert copy.internet_message_id == delivered.internet_message_id
    status, body = await _list(
        http, graph, f"/messages/{copy.id}", **{"$select": "internetMessageHeaders"}
    )
    assert (status, body["internetMessageHeaders"]) == (200, [])


# ================================================================ Gmail


@pytest.fixture
async def gmail(
    sink: tuple[_Sink, int], app_key: rsa.RSAPrivateKey
) -> AsyncIterator[GmailSimulator]:
    async with GmailSimulator(delivery_delay=0.1, relay=("127.0.0.1", sink[1])) as sim:
        sim.add_mailbox(GMAILBOX)
        sim.add_mailbox(GOTHER)
        sim.add_service_account(SA_EMAIL, "1234567890", app_key)
        sim.add_oauth_client("client-id", "client-secret")
        sim.add_refresh_token("refresh-1", "client-id", GMAILBOX)
        yield sim


def _gauth(
    gmail: GmailSimulator, user: str = GMAILBOX, scopes: tuple[str, ...] = (FULL_SCOPE,)
) -> dict[str, str]:
    return {"Authorization": "Bearer " + gmail.issue_token(user, scopes)}


def _raw(to: str, subject: str, **headers: str) -> str:
    mail = EmailMessage()
    mail["From"] = GMAILBOX
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = "<client-chosen@example.test>"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content("probe body")
    return base64.urlsafe_b64encode(mail.as_bytes()).decode()


def _sa_assertion(gmail: GmailSimulator, key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": SA_EMAIL, "scope": FULL_SCOPE, "aud": gmail.token_url,
        "iat": now, "exp": now + 3600, "sub": GMAILBOX,
    }  # fmt: skip
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


async def _gtoken(
    http: aiohttp.ClientSession, gmail: GmailSimulator, **form: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(gmail.token_url, data=form) as response:
        return response.status, await response.json()


async def test_gmail_service_account_token_needs_domain_wide_delegation(
    http: aiohttp.ClientSession,
    gmail: GmailSimulator,
    app_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    status, body = await _gtoken(
        http, gmail, grant_type=grant, assertion=_sa_assertion(gmail, app_key)
    )
    assert (status, body["error"]) == (401, "unauthorized_client")
    assert body["error_description"].startswith("Client is unauthorized to retrieve access tokens")

    gmail.delegate("1234567890", "example.test", [FULL_SCOPE])
    status, body = await _gtoken(
        http, gmail, grant_type=grant, assertion=_sa_assertion(gmail, app_key)
    )
    assert status == 200 and body["token_type"] == "Bearer"
    async with http.get(
        f"{gmail.api_url}/users/me/profile",
        headers={"Authorization": "Bearer " + body["access_token"]},
    ) as response:
        profile = await response.json()
        assert profile["emailAddress"] == GMAILBOX and "historyId" in profile

    for assertion, description in (
        (_sa_assertion(gmail, stranger_key), "Invalid JWT Signature."),
        (_sa_assertion(gmail, app_key, exp=int(time.time()) + 7200), "Invalid JWT: Token must be"),
        (_sa_assertion(gmail, app_key, aud="https://elsewhere/"), "Invalid JWT: Failed audience"),
    ):
        status, body = await _gtoken(http, gmail, grant_type=grant, assertion=assertion)
        assert (status, body["error"]) == (400, "invalid_grant")
        assert body["error_description"].startswith(description)


async def test_gmail_refresh_token_grant(
    http: aiohttp.ClientSession, gmail: GmailSimulator
) -> None:
    form = {"grant_type": "refresh_token", "client_id": "client-id", "refresh_token": "refresh-1"}
    status, body = await _gtoken(http, gmail, client_secret="client-secret", **form)
    assert status == 200 and body["scope"] == FULL_SCOPE
    status, body = await _gtoken(http, gmail, client_secret="wrong", **form)
    assert (status, body["error"]) == (401, "invalid_client")
    gmail.revoke_refresh_token("refresh-1")
    status, body = await _gtoken(http, gmail, client_secret="client-secret", **form)
    assert (status, body) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


async def _gsend(http: aiohttp.ClientSession, gmail: GmailSimulator, raw: str) -> dict[str, Any]:
    async with http.post(
        f"{gmail.api_url}/users/me/messages/send", headers=_gauth(gmail), json={"raw": raw}
    ) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def _glist(
    http: aiohttp.ClientSession, gmail: GmailSimulator, user: str = GMAILBOX, **params: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{gmail.api_url}/users/me/messages", headers=_gauth(gmail, user), params=params
    ) as response:
        return response.status, await response.json()


async def test_gmail_send_delivers_labels_and_search(
    http: aiohttp.ClientSession, gmail: GmailSimulator
) -> None:
    sent = await _gsend(http, gmail, _raw(GOTHER, "[probe] tok-7", X_Probe_Id="tok-7"))
    assert sent["labelIds"] == ["SENT"]
    [copy] = gmail.messages(GMAILBOX, "SENT")
    assert copy.header("Message-ID") != "<client-chosen@example.test>"  # Gmail sets its own
    assert gmail.messages(GOTHER) == []
    await _until(lambda: bool(gmail.messages(GOTHER, "INBOX")))
    [arrived] = gmail.messages(GOTHER)
    assert arrived.labels == {"INBOX", "UNREAD"}

    message_id = copy.header("Message-ID") or ""
    for q in (f"rfc822msgid:{message_id.strip('<>')}", 'subject:"[probe] tok-7"', "newer_than:1d"):
        status, body = await _glist(http, gmail, GOTHER, q=q)
        assert status == 200 and [m["id"] for m in body["messages"]] == [arrived.id], q
    status, body = await _glist(http, gmail, GOTHER, q='subject:"no such probe"')
    assert body == {"resultSizeEstimate": 0}

    async with http.get(
        f"{gmail.api_url}/users/me/messages/{arrived.id}",
        headers=_gauth(gmail, GOTHER),
        params={"format": "metadata", "metadataHeaders": "X-Probe-Id"},
    ) as response:
        got = await response.json()
    assert got["payload"]["headers"] == [{"name": "X-Probe-Id", "value": "tok-7"}]
    assert got["labelIds"] == ["INBOX", "UNREAD"]


async def test_gmail_mail_to_self_is_one_message_and_spam_is_hidden(
    http: aiohttp.ClientSession, sink: tuple[_Sink, int]
) -> None:
    async with GmailSimulator(
        delivery_delay=0.05,
        spam_rule=lambda m: "spam" in str(m["Subject"]),
        keep_client_message_id=True,
    ) as gmail:
        gmail.add_mailbox(GMAILBOX)
        await _gsend(http, gmail, _raw(GMAILBOX, "to myself"))
        await _until(lambda: bool(gmail.messages(GMAILBOX, "INBOX")))
        [only] = gmail.messages(GMAILBOX)
        assert only.labels == {"SENT", "INBOX", "UNREAD"}
        _status, body = await _glist(http, gmail, q="rfc822msgid:<client-chosen@example.test>")
        assert [m["id"] for m in body["messages"]] == [only.id]

        spam = gmail.put_message(GMAILBOX, ["SPAM"], subject="junk")
        _status, body = await _glist(http, gmail)
        assert spam.id not in [m["id"] for m in body["messages"]]
        asked = ({"q": "in:spam"}, {"labelIds": "SPAM"}, {"includeSpamTrash": "true"})
        for mode, seen in (("include-only", [False, False, True]), ("query-or-label", [True] * 3)):
            gmail.spam_trash = mode  # type: ignore[assignment]
            for params, expected in zip(asked, seen, strict=True):
                _status, body = await _glist(http, gmail, **params)
                ids = [m["id"] for m in body.get("messages", [])]
                assert (spam.id in ids) is expected, (mode, params)


@pytest.mark.parametrize(
    ("query", "strict", "split"),
    [
        ('subject:"mailbox-exporter probe"', True, True),
        ('subject:"mailbox-exporter probe abc123"', False, True),
        ("subject:abc123", False, True),
        ("subject:abc123.t0.n1.m2", True, True),
        ("subject:(probe mailbox-exporter)", True, True),
        ('subject:"probe mailbox-exporter"', False, False),
        ("subject:export", False, False),
        ("subject:EXTERNAL", True, True),
        ('"mailbox-exporter probe"', True, True),
        ("abc123", False, True),
        ("-subject:abc123", True, False),
    ],
)
async def test_gmail_matches_whole_words(
    http: aiohttp.ClientSession, gmail: GmailSimulator, query: str, strict: bool, split: bool
) -> None:
    """Words, never parts of one; ``strict`` never splits at dots, ``punctuation`` does."""
    message = gmail.put_message(
        GMAILBOX, subject="[EXTERNAL] mailbox-exporter probe abc123.t0.n1.m2"
    )
    for mode, expected in (("strict", strict), ("punctuation", split)):
        gmail.tokens = mode  # type: ignore[assignment]
        _status, body = await _glist(http, gmail, q=query)
        assert ([m["id"] for m in body.get("messages", [])] == [message.id]) is expected, mode


@given(st.text(alphabet=st.sampled_from(list(' -:"()abz.09OR{}<>@')), max_size=40))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_any_gmail_query_parses_into_terms(query: str) -> None:
    """Whatever ``q`` holds, the search answers: terms, never an exception."""
    raw = b"Subject: [EXTERNAL] mailbox-exporter probe a.b.0\r\nMessage-ID: <a@b>\r\n\r\nz 9\r\n"
    message = GmailMessage("1", "1", {"INBOX"}, raw, int(time.time() * 1000), 1)
    for tokens in ("strict", "punctuation"):
        for term in GmailSimulator()._parse_query(query):
            assert isinstance(term.matches(message, tokens), bool)


async def test_gmail_smtp_submission_leaves_a_sent_copy(gmail: GmailSimulator) -> None:
    gmail.smtp_sent_copies = True
    await _smtp_to(gmail.smtp_port, GMAILBOX, GOTHER, "from the device")
    await _smtp_to(gmail.smtp_port, "a@elsewhere.example", GOTHER, "from outside")
    await _until(lambda: len(gmail.messages(GOTHER)) == 2)
    [copy] = gmail.messages(GMAILBOX)
    assert (copy.labels, copy.subject) == ({"SENT"}, "from the device")


async def test_gmail_pages_and_counts(http: aiohttp.ClientSession, gmail: GmailSimulator) -> None:
    for i in range(250):
        gmail.put_message(GMAILBOX, subject=f"filler {i}")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"maxResults": "100"} | ({"pageToken": token} if token else {})
        _status, body = await _glist(http, gmail, **params)
        pages += 1
        seen += [m["id"] for m in body["messages"]]
        assert body["resultSizeEstimate"] == 250
        token = body.get("nextPageToken")
        if token is None:
            break
    assert pages == 3 and len(set(seen)) == 250


async def test_gmail_delete_needs_full_scope_trash_and_batch_delete(
    http: aiohttp.ClientSession, gmail: GmailSimulator
) -> None:
    one, two, three = (gmail.put_message(GMAILBOX, subject=s) for s in ("1", "2", "3"))
    base = f"{gmail.api_url}/users/{GMAILBOX}/messages"
    async with http.delete(
        f"{base}/{one.id}", headers=_gauth(gmail, scopes=(MODIFY_SCOPE,))
    ) as response:
        body = await response.json()
        assert response.status == 403
        assert body["error"]["errors"][0]["reason"] == "insufficientPermissions"
        assert body["error"]["status"] == "PERMISSION_DENIED"
    async with http.post(
        f"{base}/{one.id}/trash", headers=_gauth(gmail, scopes=(MODIFY_SCOPE,))
    ) as response:
        assert response.status == 200 and "TRASH" in (await response.json())["labelIds"]
    async with http.delete(f"{base}/{one.id}", headers=_gauth(gmail)) as response:
        assert response.status == 204
    async with http.get(f"{base}/{one.id}", headers=_gauth(gmail)) as response:
        body = await response.json()
        assert (response.status, body["error"]["errors"][0]["reason"]) == (404, "notFound")
    async with http.post(
        f"{base}/batchDelete", headers=_gauth(gmail), json={"ids": [two.id, three.id]}
    ) as response:
        assert response.status == 204
    assert gmail.messages(GMAILBOX) == []


async def test_gmail_errors_quota_and_faults(http: aiohttp.ClientSession) -> None:
    async with GmailSimulator(quota_per_minute=10) as gmail:
        gmail.add_mailbox(GMAILBOX)
        gmail.add_mailbox(GOTHER, enabled=False)
        profile = f"{gmail.api_url}/users/me/profile"
        async with http.get(profile, headers={"Authorization": "Bearer nope"}) as response:
            body = await response.json()
            assert (response.status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
            assert body["error"]["errors"][0]["reason"] == "authError"
        async with http.get(profile, headers=_gauth(gmail, GOTHER)) as response:
            body = await response.json()
            assert response.status == 400
            assert body["error"]["errors"][0]["reason"] == "failedPrecondition"
            assert body["error"]["message"] == "Mail service not enabled"
        auth = _gauth(gmail)
        statuses = []
        for _ in range(3):  # list costs 5 units: the third spends more than 10
            async with http.get(f"{gmail.api_url}/users/me/messages", headers=auth) as response:
                statuses.append(response.status)
                last = await response.json()
        assert statuses == [200, 200, 403]
        assert last["error"]["errors"][0] == {
            "message": last["error"]["message"],
            "domain": "usageLimits",
            "reason": "userRateLimitExceeded",
        }
        gmail.fail(
            "/gmail/v1/users/*/profile",
            500,
            google_error(500, "backendError", "Backend Error"),
            times=1,
        )
        gmail.fail(
            "/gmail/v1/users/*/profile",
            429,
            google_error(429, "rateLimitExceeded", "Too many concurrent requests for user"),
            headers={"Retry-After": "30"},
            times=1,
        )
        async with http.get(profile, headers=auth) as response:
            assert (await response.json())["error"]["errors"][0]["reason"] == "backendError"
        async with http.get(profile, headers=auth) as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "30")
        assert gmail.count_requests("GET", "/gmail/v1/users/me/profile") == 4


async def test_gmail_upload_send_relay_and_inbound_smtp(
    http: aiohttp.ClientSession, gmail: GmailSimulator, sink: tuple[_Sink, int]
) -> None:
    raw = base64.urlsafe_b64decode(_raw("someone@elsewhere.example", "out", X_Probe_Id="r-1"))
    async with http.post(
        f"{gmail.url}/upload/gmail/v1/users/me/messages/send?uploadType=media",
        headers={**_gauth(gmail), "Content-Type": "message/rfc822"},
        data=raw,
    ) as response:
        assert response.status == 200
    await _until(lambda: bool(gmail.relayed))
    [envelope] = sink[0].envelopes
    content = envelope.content if isinstance(envelope.content, bytes) else b""
    assert b"X-Probe-Id: r-1" in content

    gmail.junk_rule = lambda m: "spam" in str(m["Subject"])
    for subject in ("hello", "spam offer"):
        mail = EmailMessage()
        mail["From"] = "a@elsewhere.example"
        mail["To"] = GMAILBOX
        mail["Subject"] = subject
        mail.set_content("x")
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=gmail.smtp_port)
    await _until(lambda: len(gmail.messages(GMAILBOX)) == 3)
    assert [m.subject for m in gmail.messages(GMAILBOX, "INBOX")] == ["hello"]
    assert [m.subject for m in gmail.messages(GMAILBOX, "SPAM")] == ["spam offer"]


async def test_graph_self_signed_certificate_helper(http: aiohttp.ClientSession) -> None:
    key_pem, cert_pem = self_signed_certificate()
    async with GraphSimulator() as graph:
        graph.add_app("cert-app", certificate=cert_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        now = int(time.time())
        claims = {
            "aud": graph.token_url,
            "iss": "cert-app",
            "sub": "cert-app",
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "exp": now + 300,
        }
        assertion = jwt.encode(claims, key_pem, algorithm="PS256", headers=thumbprint_headers(cert))
        form = {
            "grant_type": "client_credentials",
            "client_id": "cert-app",
            "scope": GRAPH_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        async with http.post(graph.token_url, data=form) as response:
            assert response.status == 200


async def test_a_hung_request_is_dropped_promptly_on_close(http: aiohttp.ClientSession) -> None:
    graph = GraphSimulator()
    await graph.astart()
    graph.hang("/common/oauth2/v2.0/token")
    request = asyncio.ensure_future(http.post(f"{graph.url}/common/oauth2/v2.0/token"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await graph.aclose()
    assert time.monotonic() - started < 2
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(request, 2)


async def test_gmail_key_file_helper_gives_a_working_token(http: aiohttp.ClientSession) -> None:
    async with GmailSimulator() as gmail:
        gmail.add_mailbox(GMAILBOX)
        info = gmail.create_service_account(SA_EMAIL, "42")
        gmail.delegate("42", "example.test", [FULL_SCOPE])
        now = int(time.time())
        claims = {
            "iss": info["client_email"],
            "scope": FULL_SCOPE,
            "aud": info["token_uri"],
            "sub": GMAILBOX,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = jwt.encode(
            claims, info["private_key"], algorithm="RS256", headers={"kid": info["private_key_id"]}
        )
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        async with http.post(info["token_uri"], data=form) as response:
            assert response.status == 200

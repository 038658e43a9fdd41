"""The JMAP transport against a real Cyrus IMAP (its JMAP service) behind a real Postfix and
Dovecot: round trips SMTP to JMAP, JMAP to IMAP and JMAP to JMAP, refusals with their reasons,
cleanup of verified probes only; the error vocabulary; and property tests of every reader of
what a JMAP server sends."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import classify, config, message, probes
from exporter.config import Target
from exporter.config.sections.jmap import JmapConfig, basic
from exporter.outcome import Check, Phase, ProbeFailure, Reason
from exporter.probes.context import ProbeContext
from exporter.transports import http, jmap
from testing.cyrus import CyrusServer, CyrusUser
from testing.mailstack import HOST, MailStack, MailUser, _free_ports
from testing.targets import cyrus_behind, fixed_ids
from testing.targets import imap_section as _imap
from testing.targets import jmap_probe_messages as _probe_messages
from testing.targets import jmap_section as _jmap
from testing.targets import smtp_section as _smtp

_users = itertools.count(1)
SETTINGS = settings(derandomize=True, max_examples=300, deadline=None)
PUSH_SETTLES = 1.5
"""Seconds for a round trip to send its probe and open the push channel."""


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """Postfix and Dovecot; its MX port takes Cyrus's submissions."""
    with MailStack(tmp_path_factory.mktemp("jmapstack"), mx=True) as mail:
        yield mail


@pytest.fixture(scope="module")
def cyrus(stack: MailStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CyrusServer]:
    """Cyrus with JMAP; Postfix delivers mail for its domain to its lmtpd."""
    with cyrus_behind(stack, tmp_path_factory.mktemp("cyrus")) as server:
        yield server


@pytest.fixture
def account(cyrus: CyrusServer) -> CyrusUser:
    """A JMAP account of its own for each test."""
    return cyrus.add_user(f"jm{next(_users)}", f"pw-jmap-{next(_users)}-secret")


@pytest.fixture
def mailbox(stack: MailStack) -> MailUser:
    """An IMAP mailbox of its own for each test."""
    return stack.add_user(f"im{next(_users)}", f"pw-imap-{next(_users)}-secret")


def _target(
    *,
    sender: str,
    receiver: str,
    sections: dict[str, str],
    timeout: str = "15s",
    extra: str = "",
) -> Target:
    lines = "".join(f"    {name}: {value}\n" for name, value in sections.items())
    return config.parse(
        "targets:\n  - name: jm\n"
        f"    interval: {timeout}\n    timeout: {timeout}\n"
        f"    sender: {sender}\n    receiver: {receiver}\n" + lines + extra
    ).targets[0]


def jmap_to_jmap(cyrus: CyrusServer, user: CyrusUser, **kwargs: Any) -> Target:
    return _target(sender="jmap", receiver="jmap", sections={"jmap": _jmap(cyrus, user)}, **kwargs)


def _ordinary(index: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "someone@example.org"
    mail["Subject"] = f"ordinary {index}"
    mail.set_content(f"an ordinary message, {index}")
    return mail.as_bytes(policy=SMTP)


def _no_secret(result: Any, *secrets: str) -> None:
    shown = result.detail + json.dumps(result.transcript)
    for secret in secrets:
        assert secret not in shown


# --- round trips against Cyrus --------------------------------------------------------------


async def test_smtp_to_jmap_round_trip(
    stack: MailStack,
    cyrus: CyrusServer,
    mailbox: MailUser,
    account: CyrusUser,
    context: ProbeContext,
) -> None:
    target = _target(
        sender="smtp",
        receiver="jmap",
        sections={"smtp": _smtp(stack, mailbox), "jmap": _jmap(cyrus, account)},
    )
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result.detail
    assert result.found.delivery_seconds is not None and result.found.cleanup_deleted == 1
    assert {Phase.JMAP_AUTH, Phase.JMAP_SELECT, Phase.JMAP_CLEANUP} <= set(result.phases)
    assert _probe_messages(cyrus, account) == []


async def test_jmap_to_imap_round_trip(
    stack: MailStack,
    cyrus: CyrusServer,
    mailbox: MailUser,
    account: CyrusUser,
    context: ProbeContext,
) -> None:
    target = _target(
        sender="jmap",
        receiver="imap",
        sections={"jmap": _jmap(cyrus, account), "imap": _imap(stack, mailbox)},
    )
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result.detail
    assert Phase.JMAP_SEND in result.phases and result.found.cleanup_deleted == 1
    assert cyrus.all_messages(account) == [], "the submitted draft is destroyed"


async def test_jmap_to_jmap_round_trip(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    result = await probes.run(jmap_to_jmap(cyrus, account), Check.ROUNDTRIP, context)
    assert result.success, result.detail
    assert result.found.cleanup_deleted == 1
    assert cyrus.all_messages(account) == []


async def test_login_check_reads_the_session_and_the_mailboxes(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    result = await probes.run(jmap_to_jmap(cyrus, account), Check.JMAP_LOGIN, context)
    assert result.success, result.detail
    assert set(result.phases) == {Phase.JMAP_AUTH, Phase.JMAP_SELECT}
    assert "jmap" in result.found.logged_in


async def test_a_refused_login_is_auth_rejected_and_names_no_secret(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    wrong = "not-the-password-42"
    target = _target(
        sender="jmap",
        receiver="jmap",
        sections={"jmap": _jmap(cyrus, account, password=wrong)},
    )
    for check in (Check.JMAP_LOGIN, Check.ROUNDTRIP):
        result = await probes.run(target, check, context, transcript=True)
        assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.JMAP_AUTH)
        assert result.detail.startswith("HTTP 401"), result.detail
        assert result.found.login_refused == "jmap"
        _no_secret(result, wrong, basic(account.login, config.Secret(wrong)), account.password)


async def test_a_server_that_is_down_is_connect_refused(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    target = jmap_to_jmap(cyrus, account)
    cyrus.stop()
    try:
        result = await probes.run(target, Check.JMAP_LOGIN, context)
        round_trip = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        cyrus.start()
    assert (result.reason, result.phase) == (Reason.CONNECT_REFUSED, Phase.JMAP_AUTH)
    assert (round_trip.reason, round_trip.phase) == (Reason.CONNECT_REFUSED, Phase.JMAP_AUTH)
    assert (await probes.run(target, Check.JMAP_LOGIN, context)).success


async def test_a_message_never_delivered_fails_then_counts_late_and_is_destroyed(
    stack: MailStack, cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    target = jmap_to_jmap(cyrus, account, timeout="6s")
    stack.defer_delivery("lmtp")
    try:
        held = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        stack.resume_delivery()
    assert (held.reason, held.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY)
    deadline = time.monotonic() + 10
    while not _probe_messages(cyrus, account) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(_probe_messages(cyrus, account)) == 1, "the held probe arrives late"
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result.detail
    assert (result.found.late_arrivals, result.found.cleanup_deleted) == (1, 2)
    assert _probe_messages(cyrus, account) == []


async def test_a_probe_filed_as_junk_fails_as_junk_and_is_destroyed(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    cyrus.file_into_junk(account)
    result = await probes.run(jmap_to_jmap(cyrus, account), Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.JUNK, Phase.DELIVERY), result.detail
    assert result.found.junk and result.found.cleanup_deleted == 1
    assert result.found.delivery_seconds is not None
    assert _probe_messages(cyrus, account) == []


async def test_a_bounce_that_quotes_the_probe_fails_with_its_reason(
    stack: MailStack,
    cyrus: CyrusServer,
    mailbox: MailUser,
    account: CyrusUser,
    context: ProbeContext,
) -> None:
    """Sent as the JMAP account to an address Dovecot does not know: Postfix returns the
    probe to the account, whose receiver finds the report (Cyrus here has no search index:
    new messages are read)."""
    target = _target(
        sender="smtp",
        receiver="jmap",
        sections={"smtp": _smtp(stack, mailbox), "jmap": _jmap(cyrus, account)},
        extra=f"    from: {account.address}\n    to: nobody-here@{stack.domain}\n",
    )
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.DELIVERY)
    assert "5.1.1" in result.detail
    assert result.found.bounces == 1
    assert cyrus.all_messages(account) == [], "the report on our probe is destroyed"


async def test_a_submission_the_relay_refuses_is_send_rejected(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    target = jmap_to_jmap(cyrus, account, extra="    to: someone@elsewhere.example\n")
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.SEND_REJECTED, Phase.JMAP_SEND)
    assert "5.7.1" in result.detail and "Relay access denied" in result.detail
    assert cyrus.all_messages(account) == [], "no draft is left behind"


async def test_100_round_trips_leave_no_probe_and_touch_nothing_else(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    ids = fixed_ids(context)
    kept: set[str] = set()
    for index in range(50):
        kept.add(cyrus.put_message(account, _ordinary(index), "inbox" if index % 5 else "junk"))
    for index, forged in enumerate(
        (
            f"{ids.prefix}.0123456789abcdef.{'0' * 24}",  # our prefix, a MAC that fails
            "0123456789abcdef.00000000.0123456789abcdef.000000000000000000000000",
            ids.new("another-target"),  # ours, for another target
        )
    ):
        for role in ("inbox", "junk"):
            lookalike = EmailMessage()
            lookalike[message.PROBE_HEADER] = forged
            lookalike["Subject"] = f"mailbox-exporter probe forged {index} in {role}"
            lookalike.set_content("forged")
            kept.add(cyrus.put_message(account, lookalike.as_bytes(policy=SMTP), role))
    target = jmap_to_jmap(cyrus, account)
    results = [await probes.run(target, Check.ROUNDTRIP, context) for _ in range(100)]
    assert all(r.success for r in results), [r.detail for r in results if not r.success]
    assert {item["id"] for item in cyrus.all_messages(account)} == kept
    assert sum(r.found.cleanup_deleted for r in results) == 100
    # Only the two with this exporter's prefix are candidates; the third is never looked at.
    assert {r.found.lookalikes for r in results} == {2}


# --- what Cyrus will not do on demand: a proxy in front of it -------------------------------


class Proxy:
    """Forwards every request to Cyrus, and on demand does what Cyrus 3.6 will not: push
    (an event source that announces each change of the account's mail), refusing header
    filters, refusing every API call with a given answer, or changing the session."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = _free_ports(1)[0]
        self.url = f"http://{HOST}:{self.port}"
        self.push = False
        self.push_junk = False
        self.no_header_filter = False
        self.refuse: web.Response | None = None
        self.session_changes: dict[str, Any] = {}
        self.announced = 0
        self.header_queries = 0
        self._runner: web.AppRunner | None = None
        self._client: Any = None

    async def __aenter__(self) -> Proxy:
        import aiohttp

        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/events", self._events)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        await self._client.close()

    async def _upstream(self, request: web.Request, body: bytes) -> tuple[int, Any, bytes]:
        headers = {
            key: value
            for key, value in request.headers.items()
            if key in ("Authorization", "Content-Type", "Accept")
        }
        async with self._client.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as answer:
            return answer.status, answer.headers, await answer.read()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        api = request.method == "POST" and request.path == "/jmap/"
        if api and self.refuse is not None:
            return self.refuse
        if api and b'"header"' in body:
            self.header_queries += 1
            if self.no_header_filter:
                calls = json.loads(body)["methodCalls"]
                answers = [["error", {"type": "unsupportedFilter"}, calls[0][2]]]
                return web.json_response({"methodResponses": answers, "sessionState": "0"})
        status, headers, content = await self._upstream(request, body)
        answer = web.Response(status=status, body=content)
        for key in ("Content-Type", "WWW-Authenticate", "Retry-After"):
            if key in headers:
                answer.headers[key] = headers[key]
        if "Location" in headers:
            answer.headers["Location"] = headers["Location"].replace(self.upstream, self.url)
        if status == 200 and request.path in ("/jmap", "/.well-known/jmap"):
            session = json.loads(content)
            if self.push:
                session["eventSourceUrl"] = "/events?types={types}&closeafter={closeafter}"
            session.update(self.session_changes)
            answer.body = json.dumps(session).encode()
        return answer

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Announce each change of the account's Email state, found by asking Cyrus."""
        auth = {"Authorization": request.headers["Authorization"]}
        async with self._client.get(f"{self.upstream}/jmap", headers=auth) as answer:
            account = (await answer.json())["primaryAccounts"][jmap.MAIL]
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        if self.push_junk:  # a line beyond every bound, then silence
            await stream.write(b"data: " + b"x" * (jmap.MAX_PUSH_BYTES * 2) + b"\n")
            await asyncio.sleep(60)
        state = None
        ask = {
            "using": [jmap.CORE, jmap.MAIL],
            "methodCalls": [["Email/get", {"accountId": account, "ids": []}, "s"]],
        }
        while True:
            async with self._client.post(f"{self.upstream}/jmap/", json=ask, headers=auth) as got:
                now = (await got.json())["methodResponses"][0][1]["state"]
            if state is not None and now != state:
                change = {"@type": "StateChange", "changed": {account: {"Email": now}}}
                await stream.write(f"event: state\ndata: {json.dumps(change)}\n\n".encode())
                self.announced += 1
            else:
                await stream.write(b": nothing new\n\n")  # ends when the client has gone
            state = now
            await asyncio.sleep(0.05)


@pytest.fixture
async def proxy(cyrus: CyrusServer) -> AsyncIterator[Proxy]:
    async with Proxy(cyrus.url) as running:
        yield running


def _via(proxy: Proxy, cyrus: CyrusServer, user: CyrusUser, poll: str = "500ms") -> Target:
    section = _jmap(cyrus, user, url=proxy.url).replace("500ms", poll)
    return _target(sender="jmap", receiver="jmap", sections={"jmap": section})


async def test_push_wakes_the_receiver_where_the_server_offers_it(
    stack: MailStack,
    cyrus: CyrusServer,
    account: CyrusUser,
    proxy: Proxy,
    context: ProbeContext,
) -> None:
    """Delivery is held until the receiver waits on the push channel, so that only the push
    (not the first look, nor a poll every 10 s) can find the probe in time."""
    proxy.push = True
    target = _via(proxy, cyrus, account, poll="10s")
    stack.defer_delivery()
    try:
        running = asyncio.create_task(probes.run(target, Check.ROUNDTRIP, context, transcript=True))
        await asyncio.sleep(PUSH_SETTLES)
        await asyncio.to_thread(stack.resume_delivery)
        result = await running
    finally:
        stack.resume_delivery()
    assert result.success, result.detail
    assert any("waiting for the server's push" in line for line in result.transcript)
    assert proxy.announced >= 1 and result.found.cleanup_deleted == 1


async def test_without_push_the_receiver_polls(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    """Cyrus 3.6 names an event source but answers it with 204: polling."""
    result = await probes.run(
        jmap_to_jmap(cyrus, account), Check.ROUNDTRIP, context, transcript=True
    )
    assert result.success, result.detail
    assert any("polling instead" in line for line in result.transcript)
    assert not any("waiting for the server's push" in line for line in result.transcript)


async def test_a_server_without_header_filters_is_read_newest_first(
    cyrus: CyrusServer, account: CyrusUser, proxy: Proxy, context: ProbeContext
) -> None:
    proxy.no_header_filter = True
    ids = fixed_ids(context)
    lookalike = EmailMessage()
    lookalike[message.PROBE_HEADER] = f"{ids.prefix}.0123456789abcdef.{'0' * 24}"
    lookalike["Subject"] = "forged"
    lookalike.set_content("forged")
    forged = cyrus.put_message(account, lookalike.as_bytes(policy=SMTP))
    ordinary = cyrus.put_message(account, _ordinary(1))
    result = await probes.run(_via(proxy, cyrus, account), Check.ROUNDTRIP, context)
    assert result.success, result.detail
    assert proxy.header_queries >= 1 and result.found.lookalikes == 1
    assert {item["id"] for item in cyrus.all_messages(account)} == {forged, ordinary}


@pytest.mark.parametrize(
    ("status", "problem", "reason"),
    [
        (
            429,
            {
                "type": "urn:ietf:params:jmap:error:limit",
                "limit": "maxConcurrentRequests",
                "status": 429,
                "detail": "Too many concurrent requests",
            },
            Reason.THROTTLED,
        ),
        (503, {"type": "about:blank", "status": 503, "title": "down"}, Reason.UNAVAILABLE),
    ],
)
async def test_a_refusal_with_retry_after_reaches_the_findings(
    cyrus: CyrusServer,
    account: CyrusUser,
    proxy: Proxy,
    context: ProbeContext,
    status: int,
    problem: dict[str, Any],
    reason: Reason,
) -> None:
    proxy.refuse = web.json_response(
        problem,
        status=status,
        headers={"Retry-After": "120"},
        content_type="application/problem+json",
    )
    result = await probes.run(_via(proxy, cyrus, account), Check.JMAP_LOGIN, context)
    assert (result.reason, result.phase) == (reason, Phase.JMAP_SELECT)
    assert result.found.retry_after == 120.0
    assert result.detail.startswith(f"HTTP {status}")


async def test_a_server_that_echoes_the_credentials_has_them_redacted(
    cyrus: CyrusServer, account: CyrusUser, proxy: Proxy, context: ProbeContext
) -> None:
    credentials = basic(account.login, config.Secret(account.password))
    proxy.refuse = web.json_response(
        {
            "type": "urn:ietf:params:jmap:error:notRequest",
            "status": 400,
            "detail": f"bad request from {account.password} ({credentials})",
        },
        status=400,
    )
    result = await probes.run(
        _via(proxy, cyrus, account), Check.ROUNDTRIP, context, transcript=True
    )
    assert (result.reason, result.phase) == (Reason.PROTOCOL_ERROR, Phase.JMAP_SELECT)
    _no_secret(result, account.password, credentials)


async def test_a_session_pointing_elsewhere_gets_no_credentials(
    cyrus: CyrusServer, account: CyrusUser, proxy: Proxy, context: ProbeContext
) -> None:
    proxy.session_changes = {"apiUrl": "http://192.0.2.1/jmap/"}
    result = await probes.run(_via(proxy, cyrus, account), Check.JMAP_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.PROTOCOL_ERROR, Phase.JMAP_AUTH)
    assert "another origin" in result.detail


async def test_an_answer_beyond_the_bound_is_a_protocol_error(
    cyrus: CyrusServer, account: CyrusUser, proxy: Proxy, context: ProbeContext
) -> None:
    proxy.refuse = web.Response(body=b" " * (http.MAX_ANSWER + 1), content_type="application/json")
    result = await probes.run(_via(proxy, cyrus, account), Check.JMAP_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.PROTOCOL_ERROR, Phase.JMAP_SELECT)
    assert "more than" in result.detail


# --- configuration --------------------------------------------------------------------------


def test_the_section_reads_a_bare_server_url_as_its_well_known_session() -> None:
    target = config.parse(
        "targets:\n  - name: j\n"
        "    jmap: {url: 'https://jmap.example.com', username: u@example.com, token: tok-12345}\n"
    ).targets[0]
    section = target.jmap
    assert isinstance(section, JmapConfig)
    assert (target.sender, target.receiver) == ("jmap", "jmap")
    assert target.checks == (Check.ROUNDTRIP, Check.JMAP_LOGIN)
    assert section.url == "https://jmap.example.com/.well-known/jmap"
    assert (section.host, section.port, section.tls) == ("jmap.example.com", 443, "implicit")
    assert (section.poll_interval, section.push) == (2.0, True)
    assert section.authorization() == "Bearer tok-12345"
    assert "tok-12345" in target.secrets()


def test_the_basic_credentials_are_a_secret_too() -> None:
    target = config.parse(
        "targets:\n  - name: j\n"
        "    jmap: {url: 'http://127.0.0.1:8080/jmap/session', username: u@example.com, "
        "password: pw-123456, push: false}\n"
    ).targets[0]
    section = target.jmap
    assert isinstance(section, JmapConfig)
    assert section.url == "http://127.0.0.1:8080/jmap/session" and section.port == 8080
    assert section.authorization() == "Basic " + basic("u@example.com", config.Secret("pw-123456"))
    assert {"pw-123456", basic("u@example.com", config.Secret("pw-123456"))} <= set(
        target.secrets()
    )


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ("{url: 'https://j.example', username: u@example.com}", "set a password or a token"),
        (
            "{url: 'https://j.example', username: u@example.com, password: a, token: b}",
            "set a password or a token",
        ),
        ("{username: u@example.com, password: a}", "url: required"),
        ("{url: 'https://u:p@j.example', username: u@example.com, password: a}", "credentials"),
        ("{url: 'ftp://j.example', username: u@example.com, password: a}", "http(s) URL"),
        ("{url: 'https://j.example', username: u@example.com, pasword: a}", "did you mean"),
    ],
)
def test_a_wrong_section_is_named_with_its_line(section: str, words: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(f"targets:\n  - name: j\n    jmap: {section}\n")
    assert words in str(caught.value) and "line 3" in str(caught.value)
    assert "u:p@" not in str(caught.value), "a password in the URL is never echoed"


# --- the error vocabulary -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "stage", "words", "reason"),
    [
        (401, "", "auth", "", Reason.AUTH_REJECTED),
        (403, "", "mailbox", "", Reason.AUTH_REJECTED),
        (429, "", "mailbox", "", Reason.THROTTLED),
        (
            400,
            "urn:ietf:params:jmap:error:limit",
            "mailbox",
            "(maxConcurrentRequests)",
            Reason.THROTTLED,
        ),
        (
            400,
            "urn:ietf:params:jmap:error:limit",
            "mailbox",
            "(maxCallsInRequest)",
            Reason.PROTOCOL_ERROR,
        ),
        (503, "", "send", "", Reason.UNAVAILABLE),
        (0, "serverPartialFail", "mailbox", "", Reason.UNAVAILABLE),
        (0, "forbidden", "send", "", Reason.SEND_REJECTED),
        (0, "forbidden", "mailbox", "", Reason.MAILBOX_UNAVAILABLE),
        (0, "smtpProtocolError", "send", "5.7.1 <a@b>: Relay access denied", Reason.SEND_REJECTED),
        (0, "smtpProtocolError", "send", "4.3.2 Service not available", Reason.UNAVAILABLE),
        (0, "invalidArguments", "send", "5.7.1 words", Reason.PROTOCOL_ERROR),
        (0, "somethingNew", "mailbox", "", Reason.PROTOCOL_ERROR),
        (404, "", "auth", "", Reason.PROTOCOL_ERROR),
    ],
)
def test_jmap_refusals_have_their_reasons(
    status: int, kind: str, stage: classify.JmapStage, words: str, reason: Reason
) -> None:
    assert classify.jmap_reply(status, kind, stage, words) is reason


# --- property tests of every reader of a server's answers -----------------------------------

SECRET = "pw-never-shown-9d1c"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(SECRET),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=12)
            | st.sampled_from(
                [
                    "type",
                    "id",
                    "list",
                    "role",
                    "capabilities",
                    "primaryAccounts",
                    "accounts",
                    "apiUrl",
                    "uploadUrl",
                    "downloadUrl",
                    "eventSourceUrl",
                    "methodResponses",
                    "email",
                    "detail",
                    "limit",
                    "created",
                    "notCreated",
                    "notDestroyed",
                    "changed",
                    "@type",
                    jmap.CORE,
                    jmap.MAIL,
                    f"header:{message.PROBE_HEADER}:asText",
                    "subject",
                    "header:Authentication-Results:asText:all",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)
BASE = "https://jmap.example.com/.well-known/jmap"


def _bounded(failure: ProbeFailure) -> None:
    assert len(failure.detail) <= 300 and SECRET not in failure.detail
    assert isinstance(failure.reason, Reason)


@SETTINGS
@given(JSON)
def test_any_session_resource_is_read_or_refused_cleanly(body: Any) -> None:
    if not isinstance(body, dict):
        body = {"value": body}
    try:
        session = jmap.parse_session(body, BASE)
    except ProbeFailure as failure:
        _bounded(failure)
        return
    for url in (session.api_url, session.upload_url, session.download_url):
        assert url.startswith("https://jmap.example.com")


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "capabilities": st.just({jmap.CORE: {}, jmap.MAIL: {}}),
            "primaryAccounts": st.just({jmap.MAIL: "a"}),
            "accounts": st.just({"a": {}}),
            "apiUrl": st.text(max_size=40)
            | st.sampled_from(
                ["/jmap/", "https://evil.example/", "//evil.example/x", "http://[::1", ""]
            ),
            "uploadUrl": st.just("/up/{accountId}/"),
            "downloadUrl": st.just("/down/{accountId}/{blobId}"),
        }
    )
)
def test_a_session_never_sends_credentials_to_another_origin(body: dict[str, Any]) -> None:
    try:
        session = jmap.parse_session(body, BASE)
    except ProbeFailure as failure:
        _bounded(failure)
        return
    assert jmap._origin(session.api_url) == "https://jmap.example.com"


@SETTINGS
@given(JSON, st.sampled_from(["auth", "send", "mailbox"]))
def test_any_api_answer_is_read_or_refused_cleanly(body: Any, stage: str) -> None:
    wrapped = body if isinstance(body, dict) else {"methodResponses": body}
    try:
        calls = jmap.responses(wrapped)
        for name, arguments, call_id in calls:
            assert isinstance(name, str) and isinstance(arguments, dict)
            jmap.answer(calls, "Email/get", call_id, stage)  # type: ignore[arg-type]
    except ProbeFailure as failure:
        _bounded(failure)


@SETTINGS
@given(JSON)
def test_any_method_answer_is_read_or_refused_cleanly(arguments: Any) -> None:
    if not isinstance(arguments, dict):
        arguments = {"list": arguments}
    for read in (
        jmap.emails,
        jmap.mailbox_roles,
        lambda a: jmap.set_failures(a, "notCreated"),
        lambda a: jmap.set_failures(a, "notDestroyed"),
        lambda a: jmap.pick_identity(a, "probe@example.com"),
    ):
        try:
            read(arguments)
        except ProbeFailure as failure:
            _bounded(failure)
    for item in (arguments, *(v for v in arguments.values() if isinstance(v, dict))):
        envelope = jmap.envelope(item)
        assert isinstance(envelope.probe_id, str) and "\n" not in envelope.probe_id
    refusal = jmap.method_error(arguments, "mailbox")
    assert isinstance(refusal.reason, Reason) and len(refusal.detail) <= 300


@SETTINGS
@given(st.integers(min_value=100, max_value=599), JSON)
def test_any_problem_answer_has_a_reason(status: int, body: Any) -> None:
    kind, words = jmap.problem(status, body if isinstance(body, dict) else None)
    assert isinstance(classify.jmap_reply(status, kind, "mailbox", words), Reason)


@SETTINGS
@given(
    st.lists(
        st.binary(max_size=200)
        | st.sampled_from(
            [
                b"event: state\n",
                b'data: {"@type":"StateChange","changed":{"a":{"Email":"1"}}}\n',
                b"\n",
                b"\r\n",
                b": ping\n",
                b"data:\n",
                b"id: 7\n",
            ]
        ),
        max_size=30,
    )
)
def test_any_event_stream_is_read_line_by_line(lines: list[bytes]) -> None:
    reader = jmap.EventReader()
    for line in lines:
        event = reader.line(line)
        if event is not None:
            assert isinstance(jmap.changed(event, "a"), bool)


def test_a_state_change_of_the_account_wakes_the_receiver() -> None:
    reader = jmap.EventReader()
    lines = [
        b"event: state\r\n",
        b'data: {"@type":"StateChange","changed":{"a":{"Email":"5","Thread":"2"}}}\r\n',
        b"\r\n",
    ]
    events = [event for line in lines if (event := reader.line(line)) is not None]
    assert [jmap.changed(event, "a") for event in events] == [True]
    assert not jmap.changed(events[0], "b")
    assert not jmap.changed(jmap.Event("ping", '{"@type":"Ping","interval":5}'), "a")


async def test_a_bearer_token_logs_in_and_a_stale_one_is_refused(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    """Cyrus checks Bearer tokens as JSON Web Tokens signed with its key (http_jwt_key_dir);
    to the exporter a token is an opaque secret, as a provider's API token is."""

    def target(token: str) -> Target:
        section = f"{{url: '{cyrus.url}', username: {account.login}, token: '{token}'}}"
        return _target(sender="jmap", receiver="jmap", sections={"jmap": section})

    good = cyrus.token(account)
    result = await probes.run(target(good), Check.ROUNDTRIP, context, transcript=True)
    assert result.success, result.detail
    _no_secret(result, good)
    for stale in (cyrus.token(account, age=2 * 3600), cyrus.token(account, key=b"k" * 32)):
        refused = await probes.run(target(stale), Check.JMAP_LOGIN, context, transcript=True)
        assert (refused.reason, refused.phase) == (Reason.AUTH_REJECTED, Phase.JMAP_AUTH)
        _no_secret(refused, stale)


async def test_a_push_channel_that_streams_junk_is_given_up_for_polling(
    cyrus: CyrusServer, account: CyrusUser, proxy: Proxy, context: ProbeContext
) -> None:
    proxy.push = proxy.push_junk = True
    result = await probes.run(
        _via(proxy, cyrus, account), Check.ROUNDTRIP, context, transcript=True
    )
    assert result.success, result.detail
    assert any("push ended" in line for line in result.transcript), "\n".join(result.transcript)


async def test_refused_logins_are_held_back_by_the_lock_out_guard(
    cyrus: CyrusServer, account: CyrusUser, context: ProbeContext
) -> None:
    """A password refused again and again is not tried further for a while, as over IMAP:
    a JMAP account can be locked out by its provider too."""
    target = _target(
        sender="jmap",
        receiver="jmap",
        sections={"jmap": _jmap(cyrus, account, password="wrong-password-77")},
    )
    tried = [await probes.run(target, Check.JMAP_LOGIN, context) for _ in range(3)]
    assert [r.reason for r in tried] == [Reason.AUTH_REJECTED] * 3
    held = await probes.run(target, Check.JMAP_LOGIN, context)
    assert held.reason is Reason.AUTH_REJECTED and "not tried after 3 refusals" in held.detail
    assert held.found.requests == 0

"""The mail APIs' answers read by exporter.transports.http."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import OAuth2Config, Secret, TlsConfig
from exporter.outcome import ProbeFailure, Reason
from exporter.trace import Trace
from exporter.transports import graph
from exporter.transports.http import ApiSession, api_error
from exporter.transports.oauth import TokenCache
from exporter.transports.retry import MAX_RETRY_AFTER, retry_after


def test_retry_after_is_read_and_bounded() -> None:
    now = 1_800_000_000.0
    assert retry_after({"Retry-After": "30"}, "", now) == 30
    assert retry_after({"Retry-After": "inf"}, "", now) is None
    assert retry_after({"Retry-After": "1e12"}, "", now) == MAX_RETRY_AFTER
    far = "User-rate limit exceeded. Retry after 2099-01-01T00:00:00Z"
    assert retry_after({}, far, now) == MAX_RETRY_AFTER
    assert retry_after({}, "no hint", now) is None


# --- hostile answers ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["error", "code", "errors", "reason", "status", "message", "innerError"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@settings(derandomize=True, max_examples=250, deadline=None)
@given(
    body=st.dictionaries(st.just("error"), JSON) | st.dictionaries(st.text(max_size=5), JSON),
    retry=st.text(max_size=30),
    request_id=st.text(max_size=10),
)
def test_any_error_answer_is_read_into_an_api_error(
    body: dict[str, Any], retry: str, request_id: str
) -> None:
    headers = {"Retry-After": retry, "request-id": request_id}
    error = api_error(body, headers)
    assert isinstance(error.code, str) and isinstance(error.message, str)
    assert isinstance(error.request_id, str)
    wait = retry_after(headers, error.message)
    assert wait is None or 0 <= wait <= MAX_RETRY_AFTER


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """A token endpoint and an API on 127.0.0.1; the test sets the API's answers by path."""
    answers: dict[str, bytes] = {}

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "token-9b1e", "expires_in": 3600})

    async def call(request: web.Request) -> web.Response:
        return web.Response(body=answers[request.path], content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/{path:.*}", call)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", answers
    finally:
        await runner.cleanup()


async def test_an_answer_nested_beyond_the_parser_is_a_protocol_error(
    api: tuple[str, dict[str, bytes]],
) -> None:
    url, answers = api
    answers["/deep"] = b"[" * 100_000 + b"]" * 100_000
    oauth2 = OAuth2Config(
        token_url=url + "/token",
        scope="mail",
        grant="client_credentials",
        client_id="app",
        client_secret=Secret("secret-5c2d"),
        refresh_token=None,
    )
    tokens = TokenCache()
    trace = Trace(deadline=time.monotonic() + 10)
    try:
        async with ApiSession(graph.PHASES, url, oauth2, TlsConfig(), trace, tokens) as session:
            with pytest.raises(ProbeFailure) as caught:
                await session.call("GET", "/deep", "mailbox")
        assert caught.value.reason is Reason.PROTOCOL_ERROR
        assert "without JSON" in caught.value.detail
    finally:
        await tokens.close()

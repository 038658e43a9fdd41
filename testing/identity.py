"""A small, real OAuth2 identity provider for tests: token endpoint and introspection.

The exporter fetches access tokens (client credentials or refresh token
grant) and Dovecot's ``oauth2`` passdb checks them by RFC 7662
introspection, so both sides need a real HTTP server; mocking either would
hide the wire format.  It serves from a thread (`ThreadingHTTPServer`), so
sync fixtures, asyncio tests and Dovecot can all reach it at the same time.

Endpoints (``url`` is ``http://127.0.0.1:PORT``)::

    POST /token       grant_type=client_credentials (client_id/client_secret
                      in the form or HTTP Basic) or grant_type=refresh_token
                      (refresh_token, client_id, optional client_secret)
                      -> {"access_token", "token_type": "Bearer", "expires_in", "scope"}
                      400 {"error": "invalid_client" | "invalid_grant" | ...}
    POST /introspect  token=... (form; also accepted: Authorization: Bearer,
                      or ?token= on GET) -> {"active": true, "username",
                      "scope", "exp", ...} or {"active": false}

Faults: `fail_with` (fixed status and JSON body from /token), `hang`
(/token accepts the request and never answers; `stop` drops it), and
`revoke_all` (every token issued so far introspects as inactive).
Every request is kept in `requests`, e.g. to see what Dovecot sends.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from testing.mailstack import _free_ports
from testing.service import Service

__all__ = ["IdentityProvider", "RecordedRequest"]

HOST = "127.0.0.1"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: what a client (the exporter, Dovecot) really sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        """The body as a form (first value of each field); empty unless form-encoded."""
        return _first_values(self.body.decode("utf-8", "replace"))


@dataclass(frozen=True)
class _Client:
    client_id: str
    client_secret: str
    username: str


@dataclass(frozen=True)
class _RefreshToken:
    client_id: str
    username: str


@dataclass
class _AccessToken:
    username: str
    client_id: str
    scope: str
    expires_at: float
    revoked: bool = False


class _Dropped(Exception):
    """The provider is stopping while a request hangs: close without an answer."""


def _first_values(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    provider: IdentityProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout tests do) is expected: no traceback for that."""
        if isinstance(sys.exc_info()[1], OSError):
            _log.debug("client %s went away", client_address, exc_info=True)
        else:
            _log.exception("request from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Parses and answers one request; all state and decisions live in `IdentityProvider`."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            status, answer = self.server.provider._dispatch(request)
        except _Dropped:
            self.close_connection = True
            return
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


class IdentityProvider(Service):
    """OAuth2 token and introspection endpoints with switchable faults."""

    def __init__(self, *, scope: str = "mail", token_lifetime: int = 3600) -> None:
        self.scope = scope
        self.token_lifetime = token_lifetime
        self._lock = threading.Condition()
        self._clients: dict[str, _Client] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._tokens: dict[str, _AccessToken] = {}
        self._failure: tuple[int, dict[str, Any]] | None = None
        self._hanging = False
        self._stopping = False
        self._token_requests = 0
        self._introspections = 0
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen (again on the same port after a `stop`, so URLs handed out stay valid).

        The port is this test process's own (see `testing.mailstack._free_ports`): a port the
        kernel hands out could be taken by an outgoing connection while stopped.
        """
        if self._server is not None:
            return
        server = _Server((HOST, self._port or _free_ports(1)[0]), _Handler)
        server.provider = self
        self._port = server.server_address[1]
        with self._lock:
            self._stopping = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"identity-provider-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; a hung request is dropped unanswered, so this returns promptly."""
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5.0)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("IdentityProvider has no port before start()")
        return f"http://{HOST}:{self._port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    # ------------------------------------------------------------ registry

    def add_client(self, client_id: str, client_secret: str, username: str) -> None:
        """Register a client whose tokens are valid for mailbox `username` (an address)."""
        with self._lock:
            self._clients[client_id] = _Client(client_id, client_secret, username)

    def add_refresh_token(self, refresh_token: str, client_id: str, username: str) -> None:
        """Accept `refresh_token` from `client_id`; the client need not be registered."""
        with self._lock:
            self._refresh_tokens[refresh_token] = _RefreshToken(client_id, username)

    def issue_token(self, username: str, lifetime: int | None = None) -> str:
        """Mint a valid access token directly, bypassing /token (not counted)."""
        with self._lock:
            return self._mint(username, "", self.token_lifetime if lifetime is None else lifetime)

    def _mint(self, username: str, client_id: str, lifetime: int) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _AccessToken(
            username=username,
            client_id=client_id,
            scope=self.scope,
            expires_at=time.time() + lifetime,
        )
        return token

    # ------------------------------------------------------------ faults

    def fail_with(self, status: int | None, body: dict[str, Any] | None = None) -> None:
        """Answer every /token request with `status` and `body`; ``None`` restores service."""
        with self._lock:
            self._failure = None if status is None else (status, dict(body or {}))

    def hang(self, on: bool = True) -> None:
        """Make /token accept requests and never answer (until ``hang(False)`` or `stop`)."""
        with self._lock:
            self._hanging = on
            self._lock.notify_all()

    def revoke_all(self) -> None:
        """Every token issued so far introspects as inactive; later ones are fine."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    # ------------------------------------------------------------ counters

    @property
    def token_requests(self) -> int:
        """All /token requests received, including failed and hung ones."""
        with self._lock:
            return self._token_requests

    @property
    def introspections(self) -> int:
        with self._lock:
            return self._introspections

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def issued_tokens(self) -> list[str]:
        """Every access token handed out, to check that none of them leaks."""
        with self._lock:
            return list(self._tokens)

    def introspection_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if urlsplit(r.path).path == "/introspect"]

    # ------------------------------------------------------------ endpoints

    def _dispatch(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        path = urlsplit(request.path).path
        with self._lock:
            self._requests.append(request)
        _log.info(
            "%s %s headers=%s body=%r", request.method, request.path, request.headers, request.body
        )
        if path == "/token" and request.method == "POST":
            return self._token(request)
        if path == "/introspect":
            return self._introspect(request)
        return 404, {"error": "not_found"}

    def _token(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._token_requests += 1
            while self._hanging and not self._stopping:
                self._lock.wait()
            if self._stopping:
                raise _Dropped
            if self._failure is not None:
                return self._failure[0], dict(self._failure[1])
            form = request.form()
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            basic = _basic_credentials(request.headers.get("authorization", ""))
            if basic is not None:
                client_id, client_secret = basic
            grant = form.get("grant_type")
            if grant == "client_credentials":
                client = self._clients.get(client_id or "")
                if client is None or client_secret != client.client_secret:
                    return 400, {"error": "invalid_client"}
                return 200, self._token_answer(client.username, client.client_id)
            if grant == "refresh_token":
                if not client_id:
                    return 400, {"error": "invalid_client"}
                known = self._clients.get(client_id)
                if known is not None and client_secret not in (None, known.client_secret):
                    return 400, {"error": "invalid_client"}
                refresh = self._refresh_tokens.get(form.get("refresh_token", ""))
                if refresh is None or refresh.client_id != client_id:
                    return 400, {"error": "invalid_grant"}
                return 200, self._token_answer(refresh.username, client_id)
            if grant is None:
                return 400, {"error": "invalid_request"}
            return 400, {"error": "unsupported_grant_type"}

    def _token_answer(self, username: str, client_id: str) -> dict[str, Any]:
        return {
            "access_token": self._mint(username, client_id, self.token_lifetime),
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": self.scope,
        }

    def _introspect(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        token = (
            request.form().get("token")
            or _first_values(urlsplit(request.path).query).get("token")
            or _bearer(request.headers.get("authorization", ""))
        )
        with self._lock:
            self._introspections += 1
            issued = self._tokens.get(token or "")
            if issued is None or issued.revoked or time.time() >= issued.expires_at:
                return 200, {"active": False}
            answer: dict[str, Any] = {
                "active": True,
                "username": issued.username,
                "scope": issued.scope,
                "exp": int(issued.expires_at),
                "token_type": "Bearer",
            }
            if issued.client_id:
                answer["client_id"] = issued.client_id
            return 200, answer


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """RFC 6749 2.3.1: both parts are form-encoded before base64."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    with contextlib.suppress(binascii.Error, UnicodeDecodeError):
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
        if sep:
            return unquote_plus(user), unquote_plus(password)
    return None


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None

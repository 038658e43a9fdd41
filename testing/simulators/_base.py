"""Machinery shared by the simulators: serving, request log, faults, mail queue, SMTP legs.

A simulator is an aiohttp application on 127.0.0.1 (ephemeral port) plus an
aiosmtpd listener for inbound mail, both on one event loop.  That loop is
either the test's own (``async with Sim(...) as sim``) or a private loop in a
daemon thread (``sim.start_in_thread()`` ... ``sim.stop()``), so sync
session-scoped fixtures and async tests can share one simulator.

All mailbox state sits behind one `threading.RLock`; the test helpers are
plain methods that may be called from any thread.  Delivery is a queue of
`PendingDelivery` items drained by a ticker task on the simulator's loop, so
delays, deferred mailboxes and outbound SMTP relay all work the same way from
either mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import fnmatch
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.header import Header, decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

import aiosmtplib
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = [
    "HOST",
    "RAW_BODY",
    "Fault",
    "ParsedMail",
    "PendingDelivery",
    "RecordedRequest",
    "RelayAttempt",
    "SimulatorBase",
    "build_message",
    "parse_rfc822",
    "quick_parse",
]

HOST = "127.0.0.1"
#: the request body, read once by the middleware (handlers are synchronous)
RAW_BODY = web.RequestKey("raw_body", bytes)
_log = logging.getLogger(__name__)
_TICK = 0.02  # seconds between delivery-queue sweeps


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received (recorded before faults, auth or throttling apply)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    at: float
    connection: int = 0
    """The number of the TCP connection it came over (1 for the simulator's first)."""

    def form(self) -> dict[str, str]:
        """The body as a form (first value of each field)."""
        from urllib.parse import parse_qs

        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}


@dataclass
class Fault:
    """A canned answer for requests whose path matches `pattern` (fnmatch, no query).

    `hang` holds the request open until the fault is cleared or the simulator
    stops; otherwise the answer is `status` with `body` (JSON) and `headers`.
    `remaining` counts how many more requests it applies to (None: until cleared).
    """

    pattern: str
    method: str | None
    status: int
    body: Any
    headers: dict[str, str]
    hang: bool = False
    remaining: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


@dataclass
class PendingDelivery:
    """A message accepted by the simulator and not yet delivered or relayed."""

    due: float
    mailbox: str | None  # hosted address, or None for relay
    raw: bytes
    sender: str
    recipients: list[str]
    deliver: Callable[[], None] | None = None


@dataclass(frozen=True)
class RelayAttempt:
    """One outbound SMTP relay attempt and its outcome (`error` None on success)."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    error: str | None


def parse_rfc822(raw: bytes) -> EmailMessage:
    """Parse an RFC 822 message with the modern email policy."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


@dataclass(frozen=True)
class ParsedMail:
    """Headers (decoded, unfolded) and body text of an RFC 822 message, parsed cheaply.

    The modern `email.policy.default` parser is slow enough to dominate tests that
    fill mailboxes with hundreds of messages, so stored mail is parsed with compat32.
    """

    headers: list[tuple[str, str]]
    content_type: str
    text: str
    html: str | None

    def get(self, name: str) -> str | None:
        """First value of a header (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def _decode_header(value: str) -> str:
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        decoded = value
    return " ".join(decoded.split())


def _payload_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def quick_parse(raw: bytes) -> ParsedMail:
    """Parse headers and the first text/plain and text/html parts of a message."""
    message = BytesParser(policy=compat32).parsebytes(raw)
    headers = [(key, _decode_header(str(value))) for key, value in message.items()]
    text: str | None = None
    html: str | None = None
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and text is None:
            text = _payload_text(part)
        elif kind == "text/html" and html is None:
            html = _payload_text(part)
    return ParsedMail(headers, message.get_content_type(), text or "", html)


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    date: datetime,
    message_id: str,
    headers: Iterable[tuple[str, str]],
    body: str,
) -> bytes:
    """A plain-text RFC 822 message (quick to build; for filling mailboxes in tests)."""
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: {message_id}",
        *(f"{name}: {value}" for name, value in headers),
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


def addresses(values: list[str]) -> list[str]:
    """Bare addresses from header values (``"Name <a@b>"`` -> ``a@b``), lower-cased."""
    return [addr.lower() for _name, addr in email.utils.getaddresses(values) if addr]


class _InboundHandler:
    """aiosmtpd handler: RCPT accepted only for hosted mailboxes, DATA handed to the simulator."""

    def __init__(self, sim: SimulatorBase) -> None:
        self._sim = sim

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._sim._smtp_accepts(address):
            # RFC 3463: X.1.1 bad destination mailbox address.
            return "550 5.1.1 Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        self._sim._smtp_received(str(envelope.mail_from or ""), list(envelope.rcpt_tos), raw)
        return "250 2.0.0 OK queued"


class SimulatorBase:
    """Lifecycle, request log, fault injection and the delivery queue; subclasses add the API."""

    #: label used in thread names and the SMTP banner
    name = "simulator"

    def __init__(
        self,
        *,
        domains: tuple[str, ...],
        delivery_delay: float,
        relay: tuple[str, int] | None,
        junk_rule: Callable[[EmailMessage], bool] | None,
    ) -> None:
        self.domains = tuple(d.lower() for d in domains)
        self.delivery_delay = delivery_delay
        self.relay = relay
        self.junk_rule = junk_rule
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._latency: list[tuple[str, float]] = []
        self._pending: list[PendingDelivery] = []
        self._relayed: list[RelayAttempt] = []
        self._runner: web.AppRunner | None = None
        self._smtp_server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._smtp_port: int | None = None
        self._stopping: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._connections: dict[tuple[Any, ...], int] = {}

    # ------------------------------------------------------------ subclass hooks

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add service-specific headers to every answer (Graph: request-id)."""

    def _fault_response(self, fault: Fault, request: web.Request) -> web.Response:
        return web.json_response(fault.body, status=fault.status, headers=fault.headers)

    def _smtp_accepts(self, address: str) -> bool:
        raise NotImplementedError

    def _smtp_received(self, sender: str, recipients: list[str], raw: bytes) -> None:
        raise NotImplementedError

    def _mailbox_deferred(self, address: str) -> bool:
        return False

    def _server_tls(self) -> ssl.SSLContext | None:
        """The TLS context to serve HTTPS with; None: plain HTTP."""
        return None

    # ------------------------------------------------------------ lifecycle

    async def astart(self) -> None:
        """Start serving on the running loop (HTTP and SMTP), on the same ports after a stop."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self._port or 0, ssl_context=self._server_tls())
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        handler = _InboundHandler(self)
        self._smtp_server = await self._loop.create_server(
            lambda: SMTP(handler, hostname=f"{self.name}.invalid", ident=self.name),
            HOST,
            self._smtp_port or 0,
        )
        self._smtp_port = int(self._smtp_server.sockets[0].getsockname()[1])
        self._ticker = asyncio.create_task(self._tick_forever())

    async def aclose(self) -> None:
        """Stop serving; requests held by a `hang` fault are dropped."""
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._smtp_server is not None:
            self._smtp_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._smtp_server.wait_closed(), 1.0)
        for task in list(self._background):
            task.cancel()
        await self._runner.cleanup()
        self._runner = None
        self._smtp_server = None
        self._ticker = None

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @contextlib.contextmanager
    def reading(self, **modes: Any) -> Iterator[None]:
        """The simulator in other modes (attributes such as a strict reading) for a while."""
        before = {name: getattr(self, name) for name in modes}
        for name, value in modes.items():
            setattr(self, name, value)
        try:
            yield
        finally:
            for name, value in before.items():
                setattr(self, name, value)

    def start_in_thread(self) -> Self:
        """Serve from a private event loop in a daemon thread (for sync fixtures)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.aclose())
            loop.close()

        thread = threading.Thread(target=run, name=f"{self.name}-{id(self):x}", daemon=True)
        thread.start()
        ready.wait(10.0)
        if failure:
            raise failure[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop a simulator started with `start_in_thread`; returns promptly."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has no port before it starts")
        return f"http://{HOST}:{self._port}"

    @property
    def smtp_port(self) -> int:
        """Port of the inbound SMTP listener on 127.0.0.1 (no TLS, no AUTH)."""
        if self._smtp_port is None:
            raise RuntimeError(f"{type(self).__name__} has no SMTP port before it starts")
        return self._smtp_port

    # ------------------------------------------------------------ request log and faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def count_requests(self, method: str | None = None, pattern: str = "*") -> int:
        """How many requests matched `method` (any if None) and the fnmatch path `pattern`."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (method is None or r.method == method.upper())
                and fnmatch.fnmatchcase(r.path, pattern)
            )

    @property
    def connections(self) -> int:
        """TCP connections clients have made to the HTTP service (that sent a request)."""
        with self._lock:
            return len(self._connections)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail(
        self,
        pattern: str,
        status: int,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer requests matching `pattern` with `status` and JSON `body` (before auth)."""
        fault = Fault(pattern, method, status, body, dict(headers or {}), remaining=times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hang(self, pattern: str, *, method: str | None = None, times: int | None = None) -> Fault:
        """Hold matching requests open, unanswered, until `clear_faults` or stop."""
        fault = Fault(pattern, method, 0, None, {}, hang=True, remaining=times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault and latency rule; hung requests are then dropped."""
        with self._lock:
            self._faults.clear()
            self._latency.clear()
        if self._loop is not None and self._stopping is not None:
            # wake hung requests so they notice the fault is gone
            self._loop.call_soon_threadsafe(self._wake_hung)

    def slow(self, pattern: str, seconds: float) -> None:
        """Delay matching requests by `seconds` inside the service (after auth and throttling)."""
        with self._lock:
            self._latency.append((pattern, seconds))

    def _latency_for(self, path: str) -> float:
        with self._lock:
            return max((s for p, s in self._latency if fnmatch.fnmatchcase(path, p)), default=0.0)

    _hung_wakeup: asyncio.Event | None = None

    def _wake_hung(self) -> None:
        if self._hung_wakeup is not None:
            self._hung_wakeup.set()
            self._hung_wakeup = None

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        body = await request.read()
        request[RAW_BODY] = body
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        with self._lock:
            # a client's ephemeral port is not reused while its connection is open
            connection = self._connections.setdefault(
                tuple(peer or ("?",)), len(self._connections) + 1
            )
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query={k: request.query[k] for k in request.query},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            at=time.time(),
            connection=connection,
        )
        with self._lock:
            self._requests.append(recorded)
        fault = self._take_fault(request.method, request.path)
        response: web.StreamResponse
        if fault is not None and fault.hang:
            await self._hold(request)
            if self._stopping is not None and self._stopping.is_set():
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            fault = None  # the fault was cleared: the request goes through
        if fault is not None:
            response = self._fault_response(fault, request)
        else:
            response = await handler(request)
        self._decorate(request, response)
        return response

    async def _hold(self, request: web.Request) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            if not any(f.hang and f.matches(request.method, request.path) for f in self._faults):
                return
            if self._hung_wakeup is None:
                self._hung_wakeup = asyncio.Event()
            wakeup = self._hung_wakeup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), 0.1)

    # ------------------------------------------------------------ delivery queue

    def hosts(self, address: str) -> bool:
        """Whether `address` is in one of the simulator's domains."""
        return address.rsplit("@", 1)[-1].lower() in self.domains

    def _enqueue(self, item: PendingDelivery) -> None:
        with self._lock:
            self._pending.append(item)

    @property
    def pending(self) -> list[PendingDelivery]:
        """Accepted mail not yet delivered (delayed, or held by a deferred mailbox)."""
        with self._lock:
            return list(self._pending)

    @property
    def relayed(self) -> list[RelayAttempt]:
        """Outbound SMTP relay attempts, oldest first."""
        with self._lock:
            return list(self._relayed)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                p
                for p in self._pending
                if p.due <= now and not (p.mailbox and self._mailbox_deferred(p.mailbox))
            ]
            for p in due:
                self._pending.remove(p)
        for p in due:
            if p.deliver is not None:
                try:
                    p.deliver()
                except Exception:
                    _log.exception("delivery into %s failed", p.mailbox)
            else:
                task = asyncio.create_task(self._relay(p))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    relay_auth: tuple[str, str] | None = None
    """The user and password to log in to ``relay`` with, if any."""

    async def _relay(self, item: PendingDelivery) -> None:
        """Outbound SMTP to ``relay``; each attempt is recorded, and a refusal handed to
        :meth:`_relay_refused`."""
        error: str | None = None
        if self.relay is None:
            error = "no relay configured"
        else:
            host, port = self.relay
            login = {}
            if self.relay_auth is not None:
                login = {"username": self.relay_auth[0], "password": self.relay_auth[1]}
            try:
                await aiosmtplib.send(
                    item.raw,
                    sender=item.sender,
                    recipients=item.recipients,
                    hostname=host,
                    port=port,
                    local_hostname=f"{self.name}.invalid",
                    start_tls=False,
                    timeout=10,
                    **login,
                )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._relayed.append(RelayAttempt(item.sender, tuple(item.recipients), item.raw, error))
        if error is not None:
            self._relay_refused(item, error)

    def _relay_refused(self, item: PendingDelivery, error: str) -> None:
        """What the service does when its relay refuses mail: by default, nothing more."""

    def flush(self) -> None:
        """Make every queued item due now (deferred mailboxes still hold theirs)."""
        with self._lock:
            for p in self._pending:
                p.due = 0.0


@dataclass
class SlidingWindow:
    """Costs recorded over a moving time window (for request and quota-unit limits)."""

    window: float
    events: list[tuple[float, int]] = field(default_factory=list)

    def used(self, now: float) -> int:
        self.events = [(t, c) for t, c in self.events if t > now - self.window]
        return sum(c for _t, c in self.events)

    def retry_after(self, now: float) -> int:
        """Whole seconds until the oldest recorded cost leaves the window (at least 1)."""
        if not self.events:
            return 1
        return max(1, int(self.events[0][0] + self.window - now + 0.999))

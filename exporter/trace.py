"""What a probe saw along the way: phase timings, the failing phase, its findings, and (when
asked for) a transcript of what was said."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

from exporter.outcome import Phase, ProbeFailure
from exporter.result import Findings


@dataclass
class Trace:
    """Filled in by transports and probers as they go; read by the runner when the probe ends,
    however it ends."""

    deadline: float
    """Monotonic time by which the probe must be over."""
    record_transcript: bool = False
    started: float = field(default_factory=time.monotonic)
    phases: dict[Phase, float] = field(default_factory=dict)
    failed_in: Phase | None = None
    found: Findings = field(default_factory=Findings)
    tokens: list[str] = field(default_factory=list)
    """Access tokens used, to be redacted from anything the probe reports."""
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A recorded probe's tokens (and their wire forms) are redacted from the record too.
        if (active := recorder()) is not None:
            active.traces.append(self)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        """Add a line to the transcript, if one is kept."""
        if self.record_transcript:
            self.transcript.append(f"{time.monotonic() - self.started:8.3f}s  {line}")

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Time a phase (adding to earlier time in it) and name it on any failure inside."""
        start = time.monotonic()
        self.say(f"--- {phase}")
        try:
            yield
        except BaseException as exc:
            if self.failed_in is None:
                self.failed_in = phase
            if isinstance(exc, ProbeFailure) and exc.phase is None:
                exc.phase = phase
            raise
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - start


RECORD_FORMAT: Final = "mailbox-exporter-probe-record"
RECORD_VERSION: Final = 1
REDACTED: Final = "<redacted>"
PROTOCOLS: Final = frozenset({"imap", "smtp", "pop3", "http"})
"""What a recorded step may speak; anything else is a programming error."""
MAX_STEPS: Final = 20_000
"""Steps kept per recording: a probe says far fewer; a server that floods is cut off here."""
MAX_TEXT: Final = 64 * 1024
"""Characters kept of one step (a line, or an HTTP body): enough for a message or a page."""
MIN_SECRET: Final = 3
"""Shorter secrets are not replaced: replacing every "a" would garble the record."""

_IMAP_LOGIN = re.compile(r"^(\S+\s+LOGIN)\s.*$", re.IGNORECASE | re.DOTALL)
_IMAP_AUTHENTICATE = re.compile(r"^(\S+\s+AUTHENTICATE\s+\S+)(\s.*)?$", re.IGNORECASE | re.DOTALL)
_SASL_AUTH = re.compile(r"^(AUTH\s+\S+)(\s.*)?$", re.IGNORECASE | re.DOTALL)
_POP3_SECRET = re.compile(r"^(PASS|APOP\s+\S+)(\s.*)?$", re.IGNORECASE | re.DOTALL)
_CONTINUATION: Final[dict[str, Callable[[str], bool]]] = {
    "imap": lambda line: line.startswith("+"),
    "smtp": lambda line: line.startswith("334"),
    "pop3": lambda line: line == "+" or line.startswith("+ "),
    "http": lambda line: False,
}
"""A server's request for the next SASL response, by protocol: anything else ends the
exchange."""
_PATTERNS: Final = (
    # Header values that carry a credential, whole.
    re.compile(r"(?im)^((?:proxy-)?authorization\s*:\s*).+$"),
    re.compile(r"(?i)\b((?:bearer|basic)\s+)[\w\-.~+/=]+"),
    # Credential fields of JSON bodies and of forms.
    re.compile(
        r'(?i)("(?:access_token|refresh_token|id_token|client_secret|client_assertion|assertion|'
        r'password|code)"\s*:\s*)"(?:[^"\\]|\\.)*"'
    ),
    re.compile(
        r"(?i)((?:^|[?&\s])(?:access_token|refresh_token|id_token|client_secret|"
        r"client_assertion|assertion|password|code)=)[^&\s]*"
    ),
    # Anything shaped like a JWT (header.payload[.signature], base64url JSON objects).
    re.compile(r"()\beyJ[\w-]{4,}\.[\w-]+(?:\.[\w-]*)?"),
)
"""Secrets recognised by their shape, whether or not the probe knew them."""


def redact_known(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret of at least :data:`MIN_SECRET` characters replaced, the
    longest first (a secret may contain another)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return text


def redact_shapes(text: str) -> str:
    """``text`` with credentials recognised by their shape replaced (see :data:`_PATTERNS`)."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


@dataclass
class _Conn:
    proto: str
    pending: bytes = b""
    """Received bytes not yet ended by a line break."""
    authenticating: bool = False
    """Inside a SASL exchange: the client's lines are credentials."""


@dataclass
class Recorder:
    """What a probe exchanged with its servers, step by step, for ``probe --record``: the
    transports feed it the lines they write and read and the HTTP requests they make, and it
    writes them, redacted, as JSON lines (the format is in the runbook).

    Lines that carry a login are blanked as they are recorded, by protocol (LOGIN, AUTH,
    AUTHENTICATE and the SASL responses after them, PASS, APOP); every secret the probe knew
    and every credential-shaped text is replaced when the record is written.
    """

    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    steps: list[dict[str, object]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    traces: list[Trace] = field(default_factory=list)
    truncated: bool = False
    _conns: list[_Conn] = field(default_factory=list)

    def connection(self, proto: str) -> int:
        """Number a new connection (or HTTP exchange) of protocol ``proto``."""
        if proto not in PROTOCOLS:
            raise ValueError(f"unknown protocol {proto!r}")
        self._conns.append(_Conn(proto))
        return len(self._conns)

    def keep_secret(self, *secrets: str) -> None:
        """Secrets learnt on the way (tokens, signed assertions) to replace when writing."""
        self.secrets.update(secret for secret in secrets if secret)

    def sent(self, conn: int, data: bytes) -> None:
        """Bytes a client wrote: one step per line (a line the client split is one step)."""
        text = data.decode("utf-8", "surrogateescape")
        for line in text.removesuffix("\r\n").split("\r\n"):
            self._add(conn, "C", self._blank(self._conns[conn - 1], line))

    def received(self, conn: int, data: bytes) -> None:
        """Bytes a server sent, as they arrived: one step per complete line."""
        state = self._conns[conn - 1]
        state.pending += data
        *lines, state.pending = state.pending.split(b"\r\n")
        for line in lines:
            self._server_line(conn, line)
        if len(state.pending) > MAX_TEXT:
            self._server_line(conn, state.pending)
            state.pending = b""

    def closed(self, conn: int) -> None:
        """The connection ended: a last line without its line break is a step too."""
        state = self._conns[conn - 1]
        if state.pending:
            self._server_line(conn, state.pending)
            state.pending = b""

    def request(self, text: str) -> int:
        """One HTTP request (method, path and body); the number its answer is recorded under
        (requests made at once answer in any order)."""
        conn = self.connection("http")
        self._add(conn, "C", text)
        return conn

    def answer(self, conn: int, text: str) -> None:
        """The answer (status, body) to request ``conn``."""
        self._add(conn, "S", text)

    def _server_line(self, conn: int, line: bytes) -> None:
        state = self._conns[conn - 1]
        text = line.decode("utf-8", "surrogateescape")
        if state.authenticating and not _CONTINUATION[state.proto](text):
            state.authenticating = False
        self._add(conn, "S", text)

    def _blank(self, state: _Conn, line: str) -> str:
        """A client line with its credential blanked, by what the protocol says there."""
        if state.authenticating:
            return line and REDACTED
        if state.proto == "imap":
            if match := _IMAP_LOGIN.match(line):
                return f"{match.group(1)} {REDACTED}"
            if match := _IMAP_AUTHENTICATE.match(line):
                state.authenticating = True
                return match.group(1) + (f" {REDACTED}" if match.group(2) else "")
        elif state.proto in ("smtp", "pop3"):
            if match := _SASL_AUTH.match(line):
                state.authenticating = True
                return match.group(1) + (f" {REDACTED}" if match.group(2) else "")
            if state.proto == "pop3" and (match := _POP3_SECRET.match(line)):
                return match.group(1) + (f" {REDACTED}" if match.group(2) else "")
        return line

    def _add(self, conn: int, direction: str, text: str) -> None:
        if len(self.steps) >= MAX_STEPS:
            self.truncated = True
            return
        if len(text) > MAX_TEXT:
            text, self.truncated = text[:MAX_TEXT], True
        self.steps.append(
            {
                "t": round(self.clock() - self.started, 6),
                "conn": conn,
                "proto": self._conns[conn - 1].proto,
                "dir": direction,
                "text": text,
            }
        )

    def lines(self, target: str, checks: Iterable[str], secrets: Iterable[str]) -> list[str]:
        """The record as JSON lines: a header, then each step, every secret replaced."""
        known = {*secrets, *self.secrets}
        for trace in self.traces:
            known.update(trace.tokens)
        header = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "target": target,
            "checks": list(checks),
            "truncated": self.truncated,
        }
        out = [json.dumps(header)]
        for step in self.steps:
            text = redact_shapes(redact_known(str(step["text"]), known))
            out.append(json.dumps({**step, "text": text}))
        return out


_RECORDER: ContextVar[Recorder | None] = ContextVar("recorder", default=None)


def recorder() -> Recorder | None:
    """The recorder of the probe running in this task, if it is being recorded."""
    return _RECORDER.get()


@contextmanager
def recording(into: Recorder) -> Iterator[Recorder]:
    """Record every probe started inside (and the tasks they start) into ``into``."""
    reset = _RECORDER.set(into)
    try:
        yield into
    finally:
        _RECORDER.reset(reset)

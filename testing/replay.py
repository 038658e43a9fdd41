"""Replaying a ``mailbox-exporter probe --record`` file as a scripted IMAP server.

A user who meets a server behaving in a way the exporter gets wrong attaches the record to a
bug report; replayed here, it becomes a regression test: each connection the client opens is
served the next recorded IMAP connection, each client line answered with the server lines
that followed it in the record. Client lines are matched loosely (the command, not its tag
or arguments, which carry redacted credentials or new probe ids), and recorded tags in the
answers are rewritten to the client's own. Plain TCP only: replay a target set to
``tls: none``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from exporter.trace import RECORD_FORMAT, RECORD_VERSION, REDACTED

IO_LIMIT: Final = 10.0
"""Seconds the server waits on a client line or a write before dropping the connection."""
MAX_LINE: Final = 1024 * 1024


class RecordError(ValueError):
    """A file that is not a probe record this harness can replay."""


@dataclass(frozen=True)
class Step:
    conn: int
    proto: str
    direction: str
    text: str


def read_record(path: Path) -> tuple[dict[str, object], list[Step]]:
    """The header and the steps of a record; :class:`RecordError` for anything else."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise RecordError("empty record")
    try:
        header = json.loads(lines[0])
        rows = [json.loads(line) for line in lines[1:] if line.strip()]
    except ValueError as exc:
        raise RecordError(f"not JSON lines: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
        raise RecordError("not a probe record")
    if header.get("version") != RECORD_VERSION:
        raise RecordError(f"record version {header.get('version')!r} is not {RECORD_VERSION}")
    try:
        steps = [Step(int(r["conn"]), str(r["proto"]), str(r["dir"]), str(r["text"])) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed step: {exc!r}") from None
    return header, steps


def connections(steps: list[Step], proto: str) -> list[list[Step]]:
    """The recorded connections of one protocol, in the order they were opened."""
    by_conn: dict[int, list[Step]] = {}
    for step in steps:
        if step.proto == proto:
            by_conn.setdefault(step.conn, []).append(step)
    return [by_conn[conn] for conn in sorted(by_conn)]


def _command(line: str) -> tuple[str, str]:
    """(tag, what the line asks) of an IMAP client line: ``UID FETCH``, ``LOGIN``; a line
    without a tag (``DONE``, a SASL response) is all what it asks."""
    words = line.split()
    if len(words) < 2 or words[0].upper() == "DONE":
        return "", line.strip().upper()
    asked = words[1].upper()
    if asked == "UID" and len(words) > 2:
        asked += " " + words[2].upper()
    return words[0], asked


def _matches(recorded: str, live: str) -> bool:
    if recorded == REDACTED or (recorded == "" and live == ""):
        return True
    recorded_tag, recorded_asked = _command(recorded)
    live_tag, live_asked = _command(live)
    if not recorded_tag:
        return not live_tag and (recorded_asked == live_asked or REDACTED in recorded)
    return bool(live_tag) and recorded_asked == live_asked


@dataclass
class ImapReplay:
    """A scripted IMAP server on 127.0.0.1 playing back the IMAP side of a record. Use as
    ``async with``; ``port`` is where it listens, ``mismatches`` what the client said that the
    record did not expect."""

    scripts: list[list[Step]]
    port: int = 0
    mismatches: list[str] = field(default_factory=list)
    served: int = 0
    _server: asyncio.Server | None = None

    @classmethod
    def from_file(cls, path: Path) -> ImapReplay:
        _, steps = read_record(path)
        scripts = connections(steps, "imap")
        if not scripts:
            raise RecordError("the record has no IMAP connection")
        return cls(scripts)

    async def __aenter__(self) -> ImapReplay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.served >= len(self.scripts):
            self.mismatches.append("a connection the record does not have")
            writer.close()
            return
        script = self.scripts[self.served]
        self.served += 1
        try:
            await self._play(script, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(IO_LIMIT):
                    await writer.wait_closed()

    async def _play(
        self, script: list[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tags: dict[str, str] = {}
        await self._write(writer, _answer(script, 0), tags)
        position = _next_client(script, 0)
        while position < len(script):
            async with asyncio.timeout(IO_LIMIT):
                raw = await reader.readuntil(b"\n")
            live = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            recorded = script[position].text
            if not _matches(recorded, live):
                self.mismatches.append(f"expected {_command(recorded)[1]!r}, got {live[:80]!r}")
                tag = _command(live)[0] or "*"
                writer.write(f"{tag} BAD replay: not what the record has here\r\n".encode())
                continue
            recorded_tag, live_tag = _command(recorded)[0], _command(live)[0]
            if recorded_tag and live_tag:
                tags[recorded_tag] = live_tag
            await self._write(writer, _answer(script, position + 1), tags)
            position = _next_client(script, position + 1)

    async def _write(
        self, writer: asyncio.StreamWriter, lines: list[str], tags: dict[str, str]
    ) -> None:
        for line in lines:
            tag, _, rest = line.partition(" ")
            if tag in tags:
                line = f"{tags[tag]} {rest}"
            writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        async with asyncio.timeout(IO_LIMIT):
            await writer.drain()


def _next_client(script: list[Step], start: int) -> int:
    """The index of the next client step from ``start`` (the script's length if none)."""
    for index in range(start, len(script)):
        if script[index].direction == "C":
            return index
    return len(script)


def _answer(script: list[Step], start: int) -> list[str]:
    """The server lines from ``start`` up to the next client line."""
    return [step.text for step in script[start : _next_client(script, start)]]

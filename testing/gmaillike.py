"""A scripted Gmail, over IMAP and SMTP, for what only Gmail does: labels, not folders.

Gmail's IMAP shows labels as mailboxes. Flagging a message ``\\Deleted`` and expunging it in
INBOX only removes the label: the message stays in ``[Gmail]/All Mail``, and ever more probes
would pile up there. A message is deleted for good only by moving it to ``[Gmail]/Trash`` (the
``\\Trash`` special use) and expunging it there (Google's "IMAP delete and expunge" settings
help; RFC 6851 MOVE with COPYUID from RFC 4315). The server advertises ``X-GM-EXT-1`` like
Gmail. It speaks just enough IMAP for a round trip, and records every command.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from testing import fakeserver

CAPABILITIES = b"IMAP4rev1 UIDPLUS MOVE X-GM-EXT-1 AUTH=PLAIN"
MAILBOXES = {
    "INBOX": "",
    "[Gmail]/All Mail": "\\All",
    "[Gmail]/Spam": "\\Junk",
    "[Gmail]/Sent Mail": "\\Sent",
    "[Gmail]/Trash": "\\Trash",
}


@dataclass
class Stored:
    raw: bytes
    labels: set[str]
    deleted: bool = False


@dataclass
class GmailLike:
    """The one mailbox's messages (by a UID shared by every label) and the commands seen."""

    messages: dict[int, Stored] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    _uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def deliver(self, raw: bytes) -> None:
        self.messages[next(self._uids)] = Stored(raw, {"INBOX"})

    def in_mailbox(self, mailbox: str) -> list[int]:
        """UIDs visible in a mailbox: its label's, or every message's for All Mail."""
        return [
            uid
            for uid, stored in self.messages.items()
            if mailbox == "[Gmail]/All Mail" or mailbox in stored.labels
        ]

    async def smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 smtp.gmail.example ESMTP\r\n")
        while line := await reader.readline():
            command = line.split(b" ", 1)[0].strip().upper()
            if command == b"EHLO":
                writer.write(b"250-smtp.gmail.example\r\n250 AUTH PLAIN LOGIN\r\n")
            elif command == b"AUTH":
                writer.write(b"235 2.7.0 Accepted\r\n")
            elif command == b"DATA":
                writer.write(b"354 Go ahead\r\n")
                await writer.drain()
                lines = []
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                self.deliver(b"".join(lines))
                writer.write(b"250 2.0.0 OK queued\r\n")
            elif command == b"QUIT":
                writer.write(b"221 2.0.0 closing connection\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 2.1.0 OK\r\n")
            await writer.drain()

    async def imap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK Gimap ready\r\n")
        selected = ""
        while line := await reader.readline():
            text = line.decode(errors="replace").strip()
            self.commands.append(text)
            tag, _, rest = text.partition(" ")
            words = rest.split(" ")
            verb = words[0].upper()
            if verb == "UID":
                verb, words = "UID " + words[1].upper(), words[1:]
            out = self._answer(verb, words, selected)
            if verb in ("SELECT", "EXAMINE"):
                selected = _unquote(" ".join(words[1:]))
            writer.write(out.encode() + f"{tag} OK {verb} completed\r\n".encode())
            await writer.drain()
            if verb == "LOGOUT":
                return

    def _answer(self, verb: str, words: list[str], selected: str) -> str:
        if verb == "CAPABILITY":
            return f"* CAPABILITY {CAPABILITIES.decode()}\r\n"
        if verb in ("SELECT", "EXAMINE"):
            uids = self.in_mailbox(_unquote(" ".join(words[1:])))
            following = max(self.messages, default=0) + 1
            return f"* {len(uids)} EXISTS\r\n* OK [UIDNEXT {following}] Predicted next UID\r\n"
        if verb == "LIST":
            return "".join(
                f'* LIST (\\HasNoChildren{" " + use if use else ""}) "/" "{name}"\r\n'
                for name, use in MAILBOXES.items()
            )
        if verb == "STATUS":
            return f"* STATUS {words[1]} (UIDNEXT {max(self.messages, default=0) + 1})\r\n"
        if verb == "UID SEARCH":
            criteria = " ".join(words[1:])
            wanted = re.search(r'HEADER X-Mailbox-Probe-Id "([^"]*)"', criteria)
            found = [
                uid
                for uid in self.in_mailbox(selected)
                if wanted is not None
                and "NOT HEADER" not in criteria
                and f"X-Mailbox-Probe-Id: {wanted.group(1)}".encode() in self.messages[uid].raw
            ]
            return f"* SEARCH {' '.join(map(str, found))}\r\n"
        if verb == "UID FETCH":
            return "".join(self._fetch(uid) for uid in _uids(words[1]) if uid in self.messages)
        if verb == "UID STORE":
            for uid in _uids(words[1]):
                if uid in self.messages:
                    self.messages[uid].deleted = True
            return ""
        if verb == "UID MOVE":
            destination = _unquote(" ".join(words[2:]))
            moved = [uid for uid in _uids(words[1]) if uid in self.messages]
            for uid in moved:
                self.messages[uid].labels = {destination}
            uid_list = ",".join(map(str, moved))
            return f"* OK [COPYUID 1 {uid_list} {uid_list}] moved\r\n"
        if verb == "UID EXPUNGE":
            for uid in _uids(words[1]):
                stored = self.messages.get(uid)
                if stored is None or not stored.deleted:
                    continue
                if selected == "[Gmail]/Trash":
                    del self.messages[uid]
                else:
                    stored.labels.discard(selected)
                    stored.deleted = False
            return ""
        if verb == "LOGOUT":
            return "* BYE LOGOUT Requested\r\n"
        return ""

    def _fetch(self, uid: int) -> str:
        head = self.messages[uid].raw.split(b"\r\n\r\n", 1)[0].decode() + "\r\n\r\n"
        return f"* {uid} FETCH (UID {uid} BODY[HEADER] {{{len(head.encode())}}}\r\n{head})\r\n"


def _unquote(text: str) -> str:
    return text.strip().strip('"')


def _uids(text: str) -> list[int]:
    uids: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        uids.extend(range(int(low), int(high or low) + 1))
    return uids


@asynccontextmanager
async def serve() -> AsyncIterator[tuple[GmailLike, int, int]]:
    """A Gmail-like server: yields it, its SMTP port and its IMAP port."""
    gmail = GmailLike()
    async with AsyncExitStack() as stack:
        smtp_port = await stack.enter_async_context(fakeserver.serve(gmail.smtp))
        imap_port = await stack.enter_async_context(fakeserver.serve(gmail.imap))
        yield gmail, smtp_port, imap_port

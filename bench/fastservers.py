"""Scripted SMTP and IMAP servers that accept every login at once, for scale runs.

    python -m bench.fastservers SMTP_PORT IMAP_PORT

A real Postfix and Dovecot on two shared cores saturate long before ten thousand targets'
login checks: these answer each command with a canned reply, so that what is measured is the
exporter. They speak just enough of each protocol for ``smtp_login`` and ``imap_login``
(greeting, EHLO, AUTH PLAIN, QUIT; CAPABILITY, LOGIN, SELECT, LOGOUT) and listen on
127.0.0.1 only. Run in a process of their own, so that their CPU is not the exporter's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Final

SMTP_EHLO: Final = b"250-fast.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
IMAP_GREETING: Final = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fast.test ready\r\n"
IMAP_SELECT: Final = (
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 0 EXISTS\r\n"
    b"* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 1] next\r\n"
)
IDLE_SECONDS: Final = 30.0
"""A client silent this long is hung up on."""


async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 fast.test ESMTP\r\n")
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
        while line := await asyncio.wait_for(reader.readline(), IDLE_SECONDS):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(SMTP_EHLO)
            elif verb == b"AUTH":
                writer.write(b"235 2.7.0 Authentication successful\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 OK\r\n")
            await writer.drain()
    writer.close()


async def imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(IMAP_GREETING)
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
        while line := await asyncio.wait_for(reader.readline(), IDLE_SECONDS):
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            elif command == b"SELECT":
                writer.write(IMAP_SELECT + tag + b" OK [READ-WRITE] SELECT completed\r\n")
            elif command == b"LOGOUT":
                writer.write(b"* BYE bye\r\n" + tag + b" OK LOGOUT completed\r\n")
                await writer.drain()
                break
            else:
                writer.write(tag + b" OK " + command + b" completed\r\n")
            await writer.drain()
    writer.close()


async def main(smtp_port: int, imap_port: int) -> None:
    smtp_server = await asyncio.start_server(smtp, "127.0.0.1", smtp_port, backlog=1024)
    imap_server = await asyncio.start_server(imap, "127.0.0.1", imap_port, backlog=1024)
    print("ready", flush=True)
    async with smtp_server, imap_server:
        await asyncio.gather(smtp_server.serve_forever(), imap_server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))

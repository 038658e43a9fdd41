"""imap_login: can a client open a fresh IMAP session, log in and open the mailbox?"""

from __future__ import annotations

from exporter.config import ImapConfig, Target
from exporter.imap import ImapSession
from exporter.outcome import Phase
from exporter.probes.trace import Trace


async def log_in(session: ImapSession, server: ImapConfig, trace: Trace) -> None:
    """Connect, greet, secure and authenticate, each step in its phase."""
    with trace.phase(Phase.IMAP_CONNECT):
        await session.open()
        if server.tls != "implicit":
            await session.greet()
    if server.tls == "implicit":
        with trace.phase(Phase.IMAP_TLS):
            await session.greet()
    elif server.tls == "starttls":
        with trace.phase(Phase.IMAP_TLS):
            await session.starttls()
    with trace.phase(Phase.IMAP_AUTH):
        await session.login()


async def probe(target: Target, trace: Trace) -> None:
    async with ImapSession(target.imap) as session:
        await log_in(session, target.imap, trace)
        with trace.phase(Phase.IMAP_SELECT):
            await session.select()
        await session.logout()

"""imap_login: can a client open a fresh IMAP session, log in and open the mailbox?"""

from __future__ import annotations

from exporter.config import ImapConfig, Target
from exporter.imap import ImapSession
from exporter.oauth import TokenCache
from exporter.outcome import Phase
from exporter.probes import credentials
from exporter.probes.trace import Trace


async def log_in(
    session: ImapSession, server: ImapConfig, trace: Trace, tokens: TokenCache
) -> None:
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
    if session.tls is not None:
        trace.tls["imap"] = session.tls
    with trace.phase(Phase.IMAP_AUTH):
        await credentials.log_in(session, server, "imap", trace, tokens)


async def probe(target: Target, trace: Trace, tokens: TokenCache) -> None:
    async with ImapSession(target.imap, trace.say) as session:
        await log_in(session, target.imap, trace, tokens)
        with trace.phase(Phase.IMAP_SELECT):
            await session.select()
        await session.logout()

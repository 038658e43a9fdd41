"""smtp_login: can a client open a fresh submission session and log in?"""

from __future__ import annotations

from exporter.config import ServerConfig, Target
from exporter.oauth import TokenCache
from exporter.outcome import Phase
from exporter.probes import credentials
from exporter.probes.trace import Trace
from exporter.smtp import SmtpSession


async def log_in(
    session: SmtpSession, server: ServerConfig, trace: Trace, tokens: TokenCache
) -> None:
    """Connect, greet, secure and authenticate, each step in its phase."""
    with trace.phase(Phase.SMTP_CONNECT):
        await session.open()
        if server.tls != "implicit":
            await session.greet()
    if server.tls == "implicit":
        with trace.phase(Phase.SMTP_TLS):
            await session.greet()
    elif server.tls == "starttls":
        with trace.phase(Phase.SMTP_TLS):
            await session.starttls()
    if session.tls is not None:
        trace.tls["smtp"] = session.tls
    with trace.phase(Phase.SMTP_AUTH):
        await credentials.log_in(session, server, "smtp", trace, tokens)


async def probe(target: Target, trace: Trace, tokens: TokenCache) -> None:
    async with SmtpSession(target.smtp, trace.say) as session:
        await log_in(session, target.smtp, trace, tokens)
        await session.quit()

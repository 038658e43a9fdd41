"""smtp_login: can a client open a fresh submission session and log in?"""

from __future__ import annotations

from exporter.config import ServerConfig, Target
from exporter.outcome import Phase
from exporter.probes.trace import Trace
from exporter.smtp import SmtpSession


async def log_in(session: SmtpSession, server: ServerConfig, trace: Trace) -> None:
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
    with trace.phase(Phase.SMTP_AUTH):
        await session.login()


async def probe(target: Target, trace: Trace) -> None:
    async with SmtpSession(target.smtp) as session:
        await log_in(session, target.smtp, trace)
        await session.quit()

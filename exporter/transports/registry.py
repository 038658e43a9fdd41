"""Which transport plays which role: the one table a new transport is added to.

Configuration (:data:`exporter.config.SECTIONS`) says which sections can send and receive;
a test keeps this table and that one in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from exporter.config.model import (
    GmailConfig,
    GraphConfig,
    ImapConfig,
    MxConfig,
    ServerConfig,
    TransportConfig,
)
from exporter.config.sections.ews import EwsConfig
from exporter.config.sections.jmap import JmapConfig
from exporter.config.sections.pop3 import Pop3Config
from exporter.outcome import Phase
from exporter.trace import Trace
from exporter.transports import Receiver, Sender, ews, gmail, graph, imap, jmap, mx, pop3, smtp
from exporter.transports.oauth import TokenCache

LoginCheck = Callable[[TransportConfig, Trace, TokenCache], Awaitable[None]]
S = TypeVar("S", bound=TransportConfig)
R = TypeVar("R")


def _taking(
    kind: type[S], make: Callable[[S, Trace, TokenCache], R]
) -> Callable[[TransportConfig, Trace, TokenCache], R]:
    """``make``, for any section: a section of another kind is a programming error."""

    def build(section: TransportConfig, trace: Trace, tokens: TokenCache) -> R:
        if not isinstance(section, kind):
            raise TypeError(f"a {kind.__name__} is needed, got {type(section).__name__}")
        return make(section, trace, tokens)

    return build


@dataclass(frozen=True)
class Transport:
    sender: Callable[[TransportConfig, Trace, TokenCache], Sender] | None = None
    receiver: Callable[[TransportConfig, Trace, TokenCache], Receiver] | None = None
    login: LoginCheck | None = None
    """The transport's fresh-login check; its check is the one whose ``login_of`` names it."""
    auth: Phase | None = None
    """The phase in which it logs in, where it does: a probe the lock-out guard holds back
    reports its refusal there."""


TRANSPORTS: Final[dict[str, Transport]] = {
    "smtp": Transport(
        sender=_taking(ServerConfig, smtp.SmtpSender),
        login=_taking(ServerConfig, smtp.check_login),
        auth=smtp.PHASES.auth,
    ),
    "imap": Transport(
        receiver=_taking(ImapConfig, imap.ImapReceiver),
        login=_taking(ImapConfig, imap.check_login),
        auth=imap.PHASES.auth,
    ),
    "graph": Transport(
        sender=_taking(GraphConfig, graph.GraphSender),
        receiver=_taking(GraphConfig, graph.GraphReceiver),
        login=_taking(GraphConfig, graph.check_login),
        auth=graph.PHASES.auth,
    ),
    "gmail": Transport(
        sender=_taking(GmailConfig, gmail.GmailSender),
        receiver=_taking(GmailConfig, gmail.GmailReceiver),
        login=_taking(GmailConfig, gmail.check_login),
        auth=gmail.PHASES.auth,
    ),
    "mx": Transport(sender=_taking(MxConfig, mx.MxSender)),
    "pop3": Transport(
        receiver=_taking(Pop3Config, pop3.Pop3Receiver),
        login=_taking(Pop3Config, pop3.check_login),
        auth=pop3.PHASES.auth,
    ),
    "ews": Transport(
        sender=_taking(EwsConfig, ews.EwsSender),
        receiver=_taking(EwsConfig, ews.EwsReceiver),
        login=_taking(EwsConfig, ews.check_login),
        auth=Phase.EWS_AUTH,
    ),
    "jmap": Transport(
        sender=_taking(JmapConfig, jmap.JmapSender),
        receiver=_taking(JmapConfig, jmap.JmapReceiver),
        login=_taking(JmapConfig, jmap.check_login),
        auth=Phase.JMAP_AUTH,
    ),
}


def sender(name: str, section: TransportConfig, trace: Trace, tokens: TokenCache) -> Sender:
    make = TRANSPORTS[name].sender
    if make is None:
        raise LookupError(f"the {name} transport cannot send")
    return make(section, trace, tokens)


def receiver(name: str, section: TransportConfig, trace: Trace, tokens: TokenCache) -> Receiver:
    make = TRANSPORTS[name].receiver
    if make is None:
        raise LookupError(f"the {name} transport cannot receive")
    return make(section, trace, tokens)


def login(name: str) -> LoginCheck:
    check = TRANSPORTS[name].login
    if check is None:
        raise LookupError(f"the {name} transport has no login check")
    return check

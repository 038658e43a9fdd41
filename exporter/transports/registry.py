"""Which transport plays which role: the one table a new transport is added to.

Configuration (:data:`exporter.config.SECTIONS`) says which sections can send and receive;
a test keeps this table and that one in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from exporter.config import ServerConfig
from exporter.trace import Trace
from exporter.transports import Receiver, Sender, imap, smtp
from exporter.transports.oauth import TokenCache

LoginCheck = Callable[[ServerConfig, Trace, TokenCache], Awaitable[None]]


@dataclass(frozen=True)
class Transport:
    sender: Callable[[ServerConfig, Trace, TokenCache], Sender] | None = None
    receiver: Callable[[ServerConfig, Trace, TokenCache], Receiver] | None = None
    login: LoginCheck | None = None
    """The transport's fresh-login check; its check is the one whose ``login_of`` names it."""


TRANSPORTS: Final[dict[str, Transport]] = {
    "smtp": Transport(sender=smtp.SmtpSender, login=smtp.check_login),
    "imap": Transport(receiver=imap.ImapReceiver, login=imap.check_login),
}


def sender(name: str, server: ServerConfig, trace: Trace, tokens: TokenCache) -> Sender:
    make = TRANSPORTS[name].sender
    if make is None:
        raise LookupError(f"the {name} transport cannot send")
    return make(server, trace, tokens)


def receiver(name: str, server: ServerConfig, trace: Trace, tokens: TokenCache) -> Receiver:
    make = TRANSPORTS[name].receiver
    if make is None:
        raise LookupError(f"the {name} transport cannot receive")
    return make(server, trace, tokens)


def login(name: str) -> LoginCheck:
    check = TRANSPORTS[name].login
    if check is None:
        raise LookupError(f"the {name} transport has no login check")
    return check

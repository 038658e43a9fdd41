"""The words a probe result is reported in: checks, phases, failure reasons.

These names are label values on the exported metrics, so they are a contract with alerting rules
and dashboards: add to them, never rename them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Check(StrEnum):
    """What a probe verifies about a mailbox."""

    ROUNDTRIP = "roundtrip"
    SMTP_LOGIN = "smtp_login"
    IMAP_LOGIN = "imap_login"
    GRAPH_LOGIN = "graph_login"
    GMAIL_LOGIN = "gmail_login"
    POP3_LOGIN = "pop3_login"
    EWS_LOGIN = "ews_login"
    JMAP_LOGIN = "jmap_login"


class Phase(StrEnum):
    """A timed step of a probe.

    Name resolution is part of the ``*_connect`` phase of its protocol. With implicit TLS the
    server greeting is awaited inside the ``*_tls`` phase, because it arrives encrypted.
    The API transports (Graph, Gmail) time getting a token (``*_auth``), reading the mailbox
    (``*_select``), sending, reading the probe id of candidates (``*_fetch``) and deleting.
    The ``mx`` sender looks up the recipient domain's MX hosts and their addresses in
    ``mx_lookup``; ``mx_connect`` spans the connection attempts, greeting and EHLO.
    The POP3 receiver lists the maildrop's unique ids in ``pop3_list`` (after each login:
    POP3 shows the mailbox as it was at login), reads headers and reports in ``pop3_fetch``,
    and deletes (``DELE``, then ``QUIT``, which commits) in ``pop3_cleanup``.
    EWS (Exchange Server) has no login step of its own: ``ews_auth`` spans getting a token
    where OAuth2 is used and the first authenticated request (the Inbox's ``GetFolder``, with
    the NTLM handshake where NTLM is used); ``ews_fetch`` reads candidates' headers and
    ``ews_cleanup`` deletes them.
    JMAP reads the session resource in ``jmap_auth`` (where the server checks the credentials),
    the mailboxes in ``jmap_select``, creates and submits the probe in ``jmap_send``, reads
    candidates in ``jmap_fetch`` and destroys probes in ``jmap_cleanup``.
    """

    SMTP_CONNECT = "smtp_connect"
    SMTP_TLS = "smtp_tls"
    SMTP_AUTH = "smtp_auth"
    SMTP_SEND = "smtp_send"
    IMAP_CONNECT = "imap_connect"
    IMAP_TLS = "imap_tls"
    IMAP_AUTH = "imap_auth"
    IMAP_SELECT = "imap_select"
    DELIVERY = "delivery"
    IMAP_FETCH = "imap_fetch"
    IMAP_CLEANUP = "imap_cleanup"
    GRAPH_AUTH = "graph_auth"
    GRAPH_SELECT = "graph_select"
    GRAPH_SEND = "graph_send"
    GRAPH_FETCH = "graph_fetch"
    GRAPH_CLEANUP = "graph_cleanup"
    GMAIL_AUTH = "gmail_auth"
    GMAIL_SELECT = "gmail_select"
    GMAIL_SEND = "gmail_send"
    GMAIL_FETCH = "gmail_fetch"
    GMAIL_CLEANUP = "gmail_cleanup"
    MX_LOOKUP = "mx_lookup"
    MX_CONNECT = "mx_connect"
    MX_TLS = "mx_tls"
    MX_SEND = "mx_send"
    POP3_CONNECT = "pop3_connect"
    POP3_TLS = "pop3_tls"
    POP3_AUTH = "pop3_auth"
    POP3_LIST = "pop3_list"
    POP3_FETCH = "pop3_fetch"
    POP3_CLEANUP = "pop3_cleanup"
    EWS_AUTH = "ews_auth"
    EWS_SEND = "ews_send"
    EWS_FETCH = "ews_fetch"
    EWS_CLEANUP = "ews_cleanup"
    JMAP_AUTH = "jmap_auth"
    JMAP_SELECT = "jmap_select"
    JMAP_SEND = "jmap_send"
    JMAP_FETCH = "jmap_fetch"
    JMAP_CLEANUP = "jmap_cleanup"


class Reason(StrEnum):
    """Why a probe failed: exactly one per failed probe."""

    DNS = "dns"
    CONNECT_REFUSED = "connect_refused"
    NETWORK = "network"
    TIMEOUT = "timeout"
    TLS = "tls"
    OAUTH_TOKEN = "oauth_token"
    AUTH_REJECTED = "auth_rejected"
    AUTH_TEMPORARY = "auth_temporary"
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"
    MAILBOX_UNAVAILABLE = "mailbox_unavailable"
    SEND_REJECTED = "send_rejected"
    NOT_DELIVERED = "not_delivered"
    JUNK = "junk"
    PROTOCOL_ERROR = "protocol_error"


DETAIL_LIMIT: Final = 300
"""Characters of what a server said kept in a failure's detail: enough for the enhanced code
and the provider's words, short enough for a page and a label-free log line."""


SAID_LIMIT: Final = 16_384
"""Characters of a failure's words kept for redaction: more than any credential."""


def shorten(text: str) -> str:
    """Cut a detail to :data:`DETAIL_LIMIT` characters, marking the cut."""
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


class ProbeFailure(Exception):
    """A probe step failed for a known reason.

    ``detail`` is what the server said or what went wrong, free of credentials, shortened here;
    the phase is filled in by the probe's trace when the failure leaves a phase. ``said`` keeps
    the words whole (within :data:`SAID_LIMIT`), so that redaction sees a credential whole
    before the detail is shortened.
    """

    def __init__(self, reason: Reason, detail: str, phase: Phase | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = shorten(detail)
        self.said = detail[:SAID_LIMIT]
        self.retry_after: float | None = None
        """Seconds the server asked to wait before the next try (``Retry-After``), if any."""
        self.phase = phase

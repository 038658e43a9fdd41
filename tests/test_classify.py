"""The reason table of the field notes, applied to the answers providers really send."""

from __future__ import annotations

import socket
import ssl

import pytest

from exporter import classify
from exporter.outcome import Reason


@pytest.mark.parametrize(
    ("code", "message", "stage", "reason"),
    [
        (
            535,
            "5.7.8 Error: authentication failed: authentication failure",
            "auth",
            Reason.AUTH_REJECTED,
        ),
        (535, "5.7.3 Authentication unsuccessful", "auth", Reason.AUTH_REJECTED),
        (
            550,
            "5.7.30 Basic authentication is not supported for Client Submission",
            "auth",
            Reason.AUTH_REJECTED,
        ),
        (530, "5.7.57 Client not authenticated to send mail", "send", Reason.AUTH_REJECTED),
        (454, "4.7.0 Temporary authentication failure", "auth", Reason.AUTH_TEMPORARY),
        (421, "4.7.0 Too many connections", "greeting", Reason.THROTTLED),
        (451, "4.3.2 Concurrent connections limit exceeded", "send", Reason.THROTTLED),
        (550, "5.1.1 User unknown", "send", Reason.MAILBOX_UNAVAILABLE),
        (554, "5.2.2 mailbox full", "send", Reason.MAILBOX_UNAVAILABLE),
        (
            550,
            "5.7.60 SMTP; Client does not have permissions to send as this sender",
            "send",
            Reason.SEND_REJECTED,
        ),
        (554, "5.7.1 Relay access denied", "send", Reason.SEND_REJECTED),
        (554, "No SMTP service here", "greeting", Reason.CONNECT_REFUSED),
        (454, "4.7.0 TLS not available due to local problem", "tls", Reason.TLS),
        (500, "5.5.1 Command unrecognized", "greeting", Reason.PROTOCOL_ERROR),
    ],
)
def test_smtp_replies(code: int, message: str, stage: classify.SmtpStage, reason: Reason) -> None:
    assert classify.smtp_reply(code, message, stage) is reason


@pytest.mark.parametrize(
    ("result", "text", "stage", "reason"),
    [
        ("NO", "[AUTHENTICATIONFAILED] Authentication failed.", "auth", Reason.AUTH_REJECTED),
        ("NO", "AUTHENTICATE failed.", "auth", Reason.AUTH_REJECTED),
        (
            "NO",
            "[UNAVAILABLE] Temporary authentication failure. [host:2026-11-21]",
            "auth",
            Reason.AUTH_TEMPORARY,
        ),
        ("NO", "[EXPIRED] Password expired", "auth", Reason.AUTH_REJECTED),
        ("NO", "[LIMIT] Too many simultaneous connections", "auth", Reason.THROTTLED),
        (
            "BYE",
            "[ALERT] Too many simultaneous connections. (Failure)",
            "greeting",
            Reason.THROTTLED,
        ),
        ("NO", "[NONEXISTENT] Mailbox doesn't exist: Probes", "select", Reason.MAILBOX_UNAVAILABLE),
        ("NO", "[OVERQUOTA] Quota exceeded", "mailbox", Reason.MAILBOX_UNAVAILABLE),
        ("BAD", "User is authenticated but not connected.", "select", Reason.PROTOCOL_ERROR),
        ("NO", "[SERVERBUG] Internal error", "mailbox", Reason.PROTOCOL_ERROR),
        ("BYE", "Server shutting down.", "greeting", Reason.CONNECT_REFUSED),
        ("BYE", "Server shutting down.", "auth", Reason.NETWORK),
        ("BYE", "[UNAVAILABLE] Too busy", "select", Reason.THROTTLED),
    ],
)
def test_imap_replies(result: str, text: str, stage: classify.ImapStage, reason: Reason) -> None:
    assert classify.imap_reply(result, text, stage) is reason


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reason.DNS),
        (ConnectionRefusedError(111, "Connection refused"), Reason.CONNECT_REFUSED),
        (ConnectionResetError(104, "Connection reset by peer"), Reason.NETWORK),
        (OSError(113, "No route to host"), Reason.NETWORK),
        (TimeoutError(), Reason.TIMEOUT),
        (ssl.SSLCertVerificationError("certificate verify failed"), Reason.TLS),
    ],
)
def test_socket_errors(exc: BaseException, reason: Reason) -> None:
    assert classify.os_error(exc) is reason


def test_enhanced_code() -> None:
    assert classify.enhanced_code("5.7.139 Authentication unsuccessful") == "5.7.139"
    assert classify.enhanced_code("Authentication unsuccessful") is None

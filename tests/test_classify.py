"""The reason tables of exporter/classify.py, applied to the answers providers really send.

tests/classify_corpus.yaml holds replies published by providers, in RFCs, in server sources
and in public issue threads, each with the reason on-call must see for it.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from exporter import classify
from exporter.outcome import DETAIL_LIMIT, Reason

CORPUS_FILE = Path(__file__).with_name("classify_corpus.yaml")
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text())
MIN_CORPUS = 60
PROVIDERS = {
    "Exchange Online",
    "Exchange Server",
    "Gmail",
    "Yahoo",
    "iCloud",
    "Fastmail",
    "Postfix",
    "Exim",
    "Dovecot",
    "Cyrus",
    "Courier",
    "Zimbra",
}


def _classify(entry: dict[str, Any]) -> Reason:
    stage, reply = entry["stage"], entry["reply"]
    match entry["protocol"]:
        case "smtp":
            return classify.smtp_reply(entry["code"], reply, cast(classify.SmtpStage, stage))
        case "imap":
            return classify.imap_reply(entry["result"], reply, cast(classify.ImapStage, stage))
        case "http":
            return classify.http_reply(
                entry["status"], entry["error"], reply, cast(classify.HttpStage, stage)
            )
    raise AssertionError(f"unknown protocol {entry['protocol']!r}")


def _label(entry: dict[str, Any]) -> str:
    return f"{entry['provider']}/{entry['protocol']}/{entry['stage']}: {entry['reply'][:50]}"


@pytest.mark.parametrize("entry", CORPUS, ids=_label)
def test_corpus_reply_classifies_as_published(entry: dict[str, Any]) -> None:
    expected = Reason(entry["reason"])
    actual = _classify(entry)
    assert actual is expected, (
        f"{entry['provider']} {entry['protocol']} reply during {entry['stage']} "
        f"{entry.get('code') or entry.get('result') or entry.get('status')} {entry['reply']!r}: "
        f"expected {expected}, got {actual} (source: {entry['source']})"
    )


def test_corpus_is_large_sourced_and_covers_the_providers() -> None:
    assert len(CORPUS) >= MIN_CORPUS
    assert {entry["provider"] for entry in CORPUS} >= PROVIDERS
    for entry in CORPUS:
        assert entry.get("source"), _label(entry)
    assert {entry["reason"] for entry in CORPUS} >= {
        "unavailable",
        "throttled",
        "auth_rejected",
        "mailbox_unavailable",
        "send_rejected",
    }


def test_a_mislabelled_entry_names_the_reply_and_both_reasons() -> None:
    wrong = {**CORPUS[0], "reason": "throttled"}
    with pytest.raises(AssertionError) as failure:
        test_corpus_reply_classifies_as_published(wrong)
    message = str(failure.value)
    assert wrong["reply"] in message
    assert "expected throttled" in message and "got auth_rejected" in message


# The four misreadings of issue #13, each with what it must read as now.
@pytest.mark.parametrize(
    ("code", "message", "stage", "reason"),
    [
        (
            421,
            "4.3.2 Service not available, closing transmission channel",
            "send",
            Reason.UNAVAILABLE,
        ),
        (451, "4.3.2 System not accepting network messages", "send", Reason.UNAVAILABLE),
        (421, "4.7.0 Too many connections", "greeting", Reason.THROTTLED),
        (451, "4.3.2 Concurrent connections limit exceeded", "send", Reason.THROTTLED),
        (554, "No SMTP service here", "greeting", Reason.UNAVAILABLE),
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
        (550, "5.1.1 User unknown", "send", Reason.MAILBOX_UNAVAILABLE),
        (
            550,
            "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found",
            "send",
            Reason.MAILBOX_UNAVAILABLE,
        ),
        (554, "5.2.2 mailbox full", "send", Reason.MAILBOX_UNAVAILABLE),
        (554, "5.2.2 Submission quota exceeded", "send", Reason.THROTTLED),
        (
            550,
            "5.7.60 SMTP; Client does not have permissions to send as this sender",
            "send",
            Reason.SEND_REJECTED,
        ),
        (554, "5.7.1 Relay access denied", "send", Reason.SEND_REJECTED),
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
        ("NO", "Server Unavailable. 15", "auth", Reason.UNAVAILABLE),
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
        ("NO", "[UNAVAILABLE] Internal error", "mailbox", Reason.UNAVAILABLE),
        ("BAD", "User is authenticated but not connected.", "select", Reason.MAILBOX_UNAVAILABLE),
        ("BAD", "Command Error. 12", "mailbox", Reason.PROTOCOL_ERROR),
        ("NO", "[SERVERBUG] Internal error", "mailbox", Reason.PROTOCOL_ERROR),
        ("BYE", "Server shutting down.", "greeting", Reason.UNAVAILABLE),
        ("BYE", "Server shutting down.", "auth", Reason.NETWORK),
        ("BYE", "[UNAVAILABLE] Too busy", "select", Reason.THROTTLED),
        ("BYE", "[UNAVAILABLE] Backend down", "mailbox", Reason.UNAVAILABLE),
    ],
)
def test_imap_replies(result: str, text: str, stage: classify.ImapStage, reason: Reason) -> None:
    assert classify.imap_reply(result, text, stage) is reason


@pytest.mark.parametrize(
    ("status", "error", "stage", "reason"),
    [
        (502, "", "mailbox", Reason.UNAVAILABLE),
        (504, "GatewayTimeout", "send", Reason.UNAVAILABLE),
        (401, "InvalidAuthenticationToken", "mailbox", Reason.AUTH_REJECTED),
        (403, "insufficientPermissions", "mailbox", Reason.AUTH_REJECTED),
        (404, "ErrorItemNotFound", "mailbox", Reason.MAILBOX_UNAVAILABLE),
        (507, "", "send", Reason.MAILBOX_UNAVAILABLE),
        (403, "ErrorMessageSubmissionBlocked", "send", Reason.SEND_REJECTED),
        (400, "ErrorInvalidRecipients", "send", Reason.SEND_REJECTED),
        (400, "badRequest", "mailbox", Reason.PROTOCOL_ERROR),
    ],
)
def test_http_replies(status: int, error: str, stage: classify.HttpStage, reason: Reason) -> None:
    assert classify.http_reply(status, error, "", stage) is reason


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


def test_enhanced_code_is_read_in_full() -> None:
    assert classify.enhanced_code("5.7.139 Authentication unsuccessful") == "5.7.139"
    assert classify.enhanced_code("5.1.10 RESOLVER.ADR.RecipientNotFound") == "5.1.10"
    assert classify.enhanced_code("Authentication unsuccessful") is None


def test_a_multi_line_reply_is_one_reply() -> None:
    message = "5.4.5 Daily user sending quota exceeded.\n5.4.5 Learn more at https://x - gsmtp"
    assert classify.smtp_reply(550, message, "send") is Reason.THROTTLED
    # The limit wording is on the second line only: still read.
    message = "4.7.0 Try again later,\n4.7.0 too many connections from 192.0.2.1"
    assert classify.smtp_reply(421, message, "greeting") is Reason.THROTTLED


def test_detail_keeps_the_providers_words_once_and_short() -> None:
    message = "5.7.8 Username and Password not accepted. Learn more at\n5.7.8 https://x - gsmtp"
    assert classify.smtp_detail(535, message) == (
        "535 5.7.8 Username and Password not accepted. Learn more at https://x - gsmtp"
    )
    long = classify.smtp_detail(421, "4.3.2 " + "x" * 1000)
    assert len(long) == DETAIL_LIMIT and long.startswith("421 4.3.2 xxx")

"""The reason tables of exporter/classify.py, applied to the answers providers really send.

tests/classify_corpus.yaml holds replies published by providers, in RFCs, in server sources
and in public issue threads, each with the reason on-call must see for it.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Final, cast, get_args

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import classify
from exporter.outcome import DETAIL_LIMIT, Reason

CORPUS_FILE = Path(__file__).with_name("classify_corpus.yaml")
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text())
MIN_CORPUS = 150
PROVIDERS = {
    "Exchange Online",
    "Exchange Server",
    "Gmail",
    "Yahoo",
    "iCloud",
    "Fastmail",
    "Postfix",
    "Exim",
    "qmail",
    "Dovecot",
    "Cyrus",
    "Courier",
    "Zimbra",
    "Microsoft Entra ID",
    "Google",
}


def _classify(entry: dict[str, Any]) -> Reason:
    stage, reply = entry.get("stage", ""), entry["reply"]
    match entry["protocol"]:
        case "smtp":
            return classify.smtp_reply(entry["code"], reply, cast(classify.SmtpStage, stage))
        case "imap":
            return classify.imap_reply(entry["result"], reply, cast(classify.ImapStage, stage))
        case "http":
            return classify.http_reply(
                entry["status"], entry["error"], reply, cast(classify.HttpStage, stage)
            )
        case "token":
            return classify.token_reply(entry["status"], entry["error"], reply)
        case "pop3":
            return classify.pop3_reply(reply, cast(classify.Pop3Stage, stage))
        case "jmap":
            return classify.jmap_reply(
                entry["status"], entry["error"], cast(classify.JmapStage, stage), reply
            )
    raise AssertionError(f"unknown protocol {entry['protocol']!r}")


def _label(entry: dict[str, Any]) -> str:
    where = entry.get("stage") or entry["status"]
    return f"{entry['provider']}/{entry['protocol']}/{where}: {entry['reply'][:50]}"


@pytest.mark.parametrize("entry", CORPUS, ids=_label)
def test_corpus_reply_classifies_as_published(entry: dict[str, Any]) -> None:
    expected = Reason(entry["reason"])
    actual = _classify(entry)
    assert actual is expected, (
        f"{entry['provider']} {entry['protocol']} reply during {entry.get('stage', 'token')} "
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
        "auth_temporary",
        "mailbox_unavailable",
        "send_rejected",
        "oauth_token",
        "tls",
    }
    assert {entry["protocol"] for entry in CORPUS} == {
        "smtp",
        "imap",
        "http",
        "token",
        "pop3",
        "jmap",
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


# Where each rule's words end: limits on this client, against the mailbox, the message, a
# service that says it is down, and a login.
@pytest.mark.parametrize(
    ("code", "message", "stage", "reason"),
    [
        # A 4.7.x "come back later" is a limit only outside a login; at AUTH it is the server
        # that cannot check credentials now.
        (451, "4.7.1 Try again later", "greeting", Reason.THROTTLED),
        (
            454,
            "4.7.0 Temporary authentication failure, try again later",
            "auth",
            Reason.AUTH_TEMPORARY,
        ),
        # Not under a policy code: "try again later" alone says nothing of a limit.
        (451, "4.4.2 Timeout, try again later", "send", Reason.SEND_REJECTED),
        # Storage words win over limit words, limit words over a mailbox code.
        (
            552,
            "5.2.2 Quota exceeded (mailbox for user is full)",
            "send",
            Reason.MAILBOX_UNAVAILABLE,
        ),
        (452, "4.1.1 <user@example.org> too many recent messages", "send", Reason.THROTTLED),
        # A message's size is that message, even worded as a limit.
        (
            552,
            "5.3.4 Message size exceeds fixed maximum message size",
            "send",
            Reason.SEND_REJECTED,
        ),
        # qmail gives the enhanced code last.
        (451, "qq temporary problem (#4.3.0)", "send", Reason.UNAVAILABLE),
        (451, "timeout (#4.4.2)", "send", Reason.SEND_REJECTED),
        # The service down, said by a 4yz without 421 or 4.3.x.
        (450, "4.7.1 Service unavailable", "greeting", Reason.UNAVAILABLE),
        # The same words in a permanent refusal are about this sender.
        (
            554,
            "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "send",
            Reason.SEND_REJECTED,
        ),
    ],
)
def test_who_is_the_problem(
    code: int, message: str, stage: classify.SmtpStage, reason: Reason
) -> None:
    assert classify.smtp_reply(code, message, stage) is reason


def test_a_trailing_qmail_code_is_not_repeated_in_the_detail() -> None:
    assert classify.smtp_detail(451, "qqt failure (#4.3.0)") == "451 qqt failure (#4.3.0)"


@pytest.mark.parametrize(
    ("status", "error", "description", "reason"),
    [
        # The status first: a limit or the service, whatever the body says.
        (429, "invalid_client", "", Reason.THROTTLED),
        (500, "invalid_grant", "", Reason.UNAVAILABLE),
        (502, "", "", Reason.UNAVAILABLE),
        (400, "temporarily_unavailable", "", Reason.UNAVAILABLE),
        # Entra's own codes: tenant throttling, a client loop, the directory down.
        (400, "invalid_request", "AADSTS90055: TenantThrottlingError", Reason.THROTTLED),
        (400, "invalid_grant", "AADSTS50196: LoopDetected", Reason.THROTTLED),
        (
            400,
            "invalid_request",
            "AADSTS90006: The service is temporarily unavailable.",
            Reason.UNAVAILABLE,
        ),
        (400, "invalid_grant", "AADSTS50033: RetryableError", Reason.UNAVAILABLE),
        # Refused credentials.
        (
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
            Reason.AUTH_REJECTED,
        ),
        (
            400,
            "invalid_grant",
            "AADSTS700082: The refresh token has expired due to inactivity.",
            Reason.AUTH_REJECTED,
        ),
        (400, "invalid_grant", "AADSTS70008: ExpiredOrRevokedGrant", Reason.AUTH_REJECTED),
        (400, "Unauthorized_Client", "", Reason.AUTH_REJECTED),
        (
            400,
            "interaction_required",
            "AADSTS50076: UserStrongAuthClientAuthNRequired",
            Reason.AUTH_REJECTED,
        ),
        # The request itself: its form, scope, grant type, resource, or this host's clock.
        (
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain 'grant_type'.",
            Reason.OAUTH_TOKEN,
        ),
        (400, "unsupported_grant_type", "", Reason.OAUTH_TOKEN),
        (400, "invalid_scope", "", Reason.OAUTH_TOKEN),
        (
            400,
            "invalid_client",
            "AADSTS700024: Client assertion is not within its valid time range.",
            Reason.OAUTH_TOKEN,
        ),
        (400, "", "", Reason.OAUTH_TOKEN),
        (200, "", "no access_token in the answer", Reason.OAUTH_TOKEN),
    ],
)
def test_token_replies(status: int, error: str, description: str, reason: Reason) -> None:
    assert classify.token_reply(status, error, description) is reason


# Any input: a Reason, never an exception, in bounded time. Words from the published replies
# are mixed in so that rules meet each other, not only random text.
_WORDS: Final = sorted(
    {word for entry in CORPUS for word in re.split(r"\s+", entry["reply"]) if word}
    | {"[LIMIT]", "[UNAVAILABLE]", "[OVERQUOTA]", "(#4.3.0)", "AADSTS90033", "AADSTS700024"}
)
_TEXT: Final = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=12)), max_size=40).map(" ".join),
    st.lists(st.sampled_from(_WORDS), max_size=20).map("\n".join),
)
_CODES: Final = st.one_of(st.integers(), st.sampled_from([421, 450, 451, 452, 454, 530, 535, 554]))
_STATUSES: Final = st.one_of(st.integers(), st.sampled_from([200, 400, 401, 403, 429, 500, 503]))
_PROPERTIES: Final = settings(derandomize=True, max_examples=300, deadline=None)
LONG_INPUT: Final = 100_000
LONG_INPUT_SECONDS: Final = 2.0
"""Generous for a shared machine: each call takes tens of milliseconds on 100 kB."""


@_PROPERTIES
@given(code=_CODES, message=_TEXT, stage=st.sampled_from(get_args(classify.SmtpStage)))
def test_any_smtp_reply_has_a_reason(code: int, message: str, stage: classify.SmtpStage) -> None:
    assert classify.smtp_reply(code, message, stage) in set(Reason)


@_PROPERTIES
@given(code=_CODES, message=_TEXT)
def test_any_smtp_detail_is_short_and_starts_with_the_code(code: int, message: str) -> None:
    detail = classify.smtp_detail(code, message)
    assert len(detail) <= DETAIL_LIMIT
    assert detail.startswith(str(code)[: DETAIL_LIMIT - 1])


@_PROPERTIES
@given(message=_TEXT)
def test_an_enhanced_code_is_one_or_none(message: str) -> None:
    code = classify.enhanced_code(message)
    assert code is None or re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", code)


@_PROPERTIES
@given(
    result=st.one_of(st.sampled_from(["NO", "BAD", "BYE", "no"]), st.text(max_size=5)),
    text=_TEXT,
    stage=st.sampled_from(get_args(classify.ImapStage)),
)
def test_any_imap_reply_has_a_reason(result: str, text: str, stage: classify.ImapStage) -> None:
    assert classify.imap_reply(result, text, stage) in set(Reason)
    code = classify.imap_response_code(text)
    assert code is None or re.fullmatch(r"[A-Z][A-Z0-9-]*", code)


@_PROPERTIES
@given(
    status=_STATUSES,
    error=st.one_of(st.text(max_size=40), st.sampled_from(_WORDS)),
    message=_TEXT,
    stage=st.sampled_from(get_args(classify.HttpStage)),
)
def test_any_http_reply_has_a_reason(
    status: int, error: str, message: str, stage: classify.HttpStage
) -> None:
    assert classify.http_reply(status, error, message, stage) in set(Reason)


@_PROPERTIES
@given(
    status=_STATUSES,
    error=st.one_of(
        st.text(max_size=40),
        st.sampled_from(["invalid_client", "invalid_grant", "temporarily_unavailable"]),
    ),
    description=_TEXT,
)
def test_any_token_reply_has_a_reason(status: int, error: str, description: str) -> None:
    assert classify.token_reply(status, error, description) in set(Reason)


def _repeated(piece: str) -> str:
    return (piece * (LONG_INPUT // len(piece) + 1))[:LONG_INPUT]


# Inputs that make the bounded word patterns work hardest: their first words again and again.
_LONG: Final = [
    _repeated(piece)
    for piece in (
        "max ",
        "exceeded ",
        "limit ",
        "too ",
        "sending quota",
        "service ",
        "tls 1.0 and ",
        "(#4.3.0",
        "(#4.3.0) ",
        "4.7.0 try\n",
        "[",
        "AADSTS1",
        "x",
    )
]


@pytest.mark.parametrize("text", _LONG, ids=lambda text: repr(text[:12]))
def test_long_replies_are_read_in_bounded_time(text: str) -> None:
    started = time.thread_time()  # CPU time: tests running in parallel share the cores
    for stage in get_args(classify.SmtpStage):
        assert classify.smtp_reply(451, "4.7.0 " + text, stage) in set(Reason)
    assert len(classify.smtp_detail(421, text)) <= DETAIL_LIMIT
    assert classify.enhanced_code(text) is None or text.startswith(("4", "5", "2"))
    for stage in get_args(classify.ImapStage):
        assert classify.imap_reply("NO", text, stage) in set(Reason)
    assert classify.imap_response_code("[" + text) is None or text[0].isalpha()
    assert classify.http_reply(400, text, text, "send") in set(Reason)
    assert classify.token_reply(400, text, text) in set(Reason)
    assert time.thread_time() - started < LONG_INPUT_SECONDS

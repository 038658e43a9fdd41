"""Reading bounces: the report forms of Postfix, Sendmail, Exchange and qmail, what is not one
(whoever it comes from), and hostile messages, which are skipped and never raise."""

from __future__ import annotations

import logging
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import bounce, classify, message
from exporter.outcome import Reason

PROBE_ID = "0123456789ab.0123456789abcdef.0123456789abcdef01234567"
PROBE = message.build(target="t", mail_from="a@x.org", mail_to="b@x.org", probe_id=PROBE_ID)
PROBE_HEAD = PROBE.split(b"\r\n\r\n")[0].decode().replace("\r\n", "\n")
POSTFIX_STATUS = (
    "Reporting-MTA: dns; mail.x.org\n\n"
    "Final-Recipient: rfc822; nobody@x.org\nAction: failed\nStatus: 5.1.1\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <nobody@x.org> User doesn't exist: nobody@x.org\n"
)


def _report(
    status_part: str,
    returned_type: str,
    returned: str,
    text: str,
    report_type: str = "; report-type=delivery-status",
    sender: str = "MAILER-DAEMON@x.org",
) -> bytes:
    """A multipart/report (RFC 3464) as MTAs write them."""
    return (
        f"From: {sender}\n"
        f"Subject: Undeliverable: mailbox-exporter probe {PROBE_ID}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report{report_type}; boundary="b0"\n\n'
        f"--b0\nContent-Type: text/plain\n\n{text}\n\n"
        f"--b0\nContent-Type: message/delivery-status\n\n{status_part}\n"
        f"--b0\nContent-Type: {returned_type}\n\n{returned}\n--b0--\n"
    ).encode()


def _qmail(returned: str, sender: str = "MAILER-DAEMON@mx.x.org") -> bytes:
    """qmail-send's failure notice, as qmail-send.c writes it."""
    return (
        f"Date: 5 Dec 2026 10:00:00 -0000\nFrom: {sender}\nTo: a@x.org\n"
        "Subject: failure notice\n\n"
        "Hi. This is the qmail-send program at mx.x.org.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<nobody@y.org>:\n"
        "Connected to 10.4.4.1 but sender was rejected.\n"
        "Remote host said: 550 5.1.1 <nobody@y.org>: Recipient address rejected\n\n"
        "--- Below this line is a copy of the message.\n\n"
        f"Return-Path: <a@x.org>\n{returned}"
    ).encode()


def test_a_postfix_bounce_with_the_returned_headers() -> None:
    raw = _report(
        POSTFIX_STATUS,
        "text/rfc822-headers",
        PROBE_HEAD,
        "I'm sorry to have to inform you that your message could not be delivered.",
    )
    found = bounce.read(raw)
    assert found == bounce.Bounce(
        probe_id=PROBE_ID,
        status="5.1.1",
        code=550,
        text="550 5.1.1 <nobody@x.org> User doesn't exist: nobody@x.org",
        failed=True,
    )


def test_an_exchange_report_with_the_returned_message() -> None:
    raw = _report(
        "Reporting-MTA: dns;mx.contoso.example\n\n"
        "Final-Recipient: rfc822;probe@contoso.example\nAction: failed\nStatus: 5.1.10\n"
        "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
        "Recipient not found by SMTP address lookup\n",
        "message/rfc822",
        PROBE.decode().replace("\r\n", "\n"),
        "Your message to probe@contoso.example couldn't be delivered.",
    )
    found = bounce.read(raw)
    assert found is not None
    assert (found.probe_id, found.status, found.code) == (PROBE_ID, "5.1.10", 550)
    assert "RecipientNotFound" in found.text


def test_a_report_in_unknown_8bit_is_read() -> None:
    """Sendmail and others label 8-bit text they cannot name ``unknown-8bit``: Python knows
    no such codec, and the report is still read."""
    raw = (
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@x.org>\n"
        b"Subject: Returned mail: see transcript for details\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="s1"\n\n'
        b"--s1\nContent-Type: text/plain; charset=unknown-8bit\n"
        b"Content-Transfer-Encoding: 8bit\n\n"
        b"The original message was received at Sat, 5 Dec 2026 \xe9t\xe9\n\n"
        b"--s1\nContent-Type: message/delivery-status\n\n" + POSTFIX_STATUS.encode() + b"\n"
        b"--s1\nContent-Type: text/rfc822-headers; charset=unknown-8bit\n\n"
        + PROBE_HEAD.encode()
        + b"\nX-Note: caf\xe9\n--s1--\n"
    )
    found = bounce.read(raw)
    assert found is not None
    assert (found.probe_id, found.status, found.code, found.failed) == (
        PROBE_ID,
        "5.1.1",
        550,
        True,
    )


def test_qmails_failure_notice() -> None:
    """qmail writes no DSN: its own form is read, the status from its ``(#x.y.z)`` or the
    remote's reply, never from an address in its text."""
    found = bounce.read(_qmail(PROBE_HEAD).replace(b"\n", b"\r\n"))
    assert found is not None
    assert (found.probe_id, found.status, found.code, found.failed) == (
        PROBE_ID,
        "5.1.1",
        550,
        True,
    )
    assert found.text.startswith("<nobody@y.org>: Connected to 10.4.4.1")
    local = bounce.read(
        _qmail(PROBE_HEAD).replace(
            b"Connected to 10.4.4.1 but sender was rejected.\n"
            b"Remote host said: 550 5.1.1 <nobody@y.org>: Recipient address rejected\n",
            b"Sorry, no mailbox here by that name. (#5.1.1)\n",
        )
    )
    assert local is not None and (local.status, local.code) == ("5.1.1", 550)


def test_a_forward_from_postmaster_quoting_a_probe_is_no_bounce() -> None:
    inline = (
        "From: Postmaster <postmaster@x.org>\r\nTo: a@x.org\r\n"
        f"Subject: Fwd: mailbox-exporter probe {PROBE_ID}\r\n\r\n"
        "We see 5.1.1 errors for this one, can you check?\r\n\r\n"
        "---------- Forwarded message ---------\r\n"
        f"{PROBE_HEAD}\r\n"
    ).encode()
    assert bounce.read(inline) is None
    attached = (
        b"From: postmaster@x.org\r\nReturn-Path: <>\r\nSubject: Fwd: probe\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="f"\r\n\r\n'
        b"--f\r\nContent-Type: text/plain\r\n\r\nStatus: 5.1.1, see attached\r\n"
        b"--f\r\nContent-Type: message/rfc822\r\n\r\n" + PROBE + b"\r\n--f--\r\n"
    )
    assert bounce.read(attached) is None
    to_mailer_daemon = (
        f"From: MAILER-DAEMON@x.org\nSubject: failure notice\n\n{PROBE_HEAD}\nStatus: 5.1.1\n"
    ).encode()
    assert bounce.read(to_mailer_daemon) is None, "a mail system's address alone is no bounce"


def test_a_report_naming_the_id_only_in_prose_is_no_bounce() -> None:
    prose = _report(
        POSTFIX_STATUS,
        "text/rfc822-headers",
        "Subject: lunch\nFrom: a@x.org\n",
        f"Your message\nX-Mailbox-Probe-Id: {PROBE_ID}\ncould not be delivered.",
    )
    assert bounce.read(prose) is None
    below_the_header = _report(
        POSTFIX_STATUS,
        "text/rfc822-headers",
        f"Subject: lunch\nFrom: a@x.org\n\nX-Mailbox-Probe-Id: {PROBE_ID}\n",
        "could not be delivered",
    )
    assert bounce.read(below_the_header) is None, "text below a returned header is no header"
    in_the_returned_body = _report(
        POSTFIX_STATUS,
        "message/rfc822",
        f"Subject: lunch\nFrom: a@x.org\n\nX-Mailbox-Probe-Id: {PROBE_ID}\n",
        "could not be delivered",
    )
    assert bounce.read(in_the_returned_body) is None


def test_only_a_delivery_status_report_is_a_report() -> None:
    """A read receipt (RFC 8098) quotes the probe's header too, and says nothing failed."""
    receipt = _report(
        "Reporting-UA: mua.x.org\nFinal-Recipient: rfc822; b@x.org\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n",
        "text/rfc822-headers",
        PROBE_HEAD,
        "Your message was displayed.",
        report_type="; report-type=disposition-notification",
    )
    assert bounce.read(receipt) is None
    untyped = _report(POSTFIX_STATUS, "text/rfc822-headers", PROBE_HEAD, "x", report_type="")
    assert bounce.read(untyped) is None


def test_qmail_lookalikes_are_no_bounce() -> None:
    assert bounce.read(_qmail(PROBE_HEAD, sender="postmaster@x.org")) is None, "not qmail's From"
    assert bounce.read(_qmail(PROBE_HEAD, sender="mailer-daemon-fan@x.org")) is None
    body_only = _qmail(f"Subject: lunch\n\nX-Mailbox-Probe-Id: {PROBE_ID}\n")
    assert bounce.read(body_only) is None, "the id below the returned header"
    forwarded = _qmail(PROBE_HEAD).replace(b"Hi. This", b"> Hi. This")
    assert bounce.read(forwarded) is None


def test_what_is_not_a_bounce_of_a_probe() -> None:
    assert bounce.read(PROBE) is None, "the probe itself"
    ordinary = _report(
        "Final-Recipient: rfc822; x@x.org\nAction: failed\nStatus: 5.1.1\n",
        "text/rfc822-headers",
        "Subject: hello\nFrom: a@x.org\n",
        "could not be delivered",
    )
    assert bounce.read(ordinary) is None, "a bounce of an ordinary message"
    assert bounce.read(b"Subject: hi\r\n\r\njust mail\r\n") is None


def test_a_delay_notice_is_no_failure() -> None:
    delayed = _report(
        "Reporting-MTA: dns; mail.x.org\n\n"
        "Final-Recipient: rfc822; b@x.org\nAction: delayed\nStatus: 4.4.1\n"
        "Diagnostic-Code: smtp; 451 4.4.1 connection timed out\n",
        "text/rfc822-headers",
        PROBE_HEAD,
        "Your message is delayed.",
    )
    found = bounce.read(delayed)
    assert found is not None and not found.failed and found.code == 451


def _nested(depth: int, kind: str = "multipart/mixed") -> bytes:
    """A report whose first part nests ``depth`` levels deep, the probe header at the
    bottom."""
    opening = b"".join(
        b'Content-Type: %s; boundary="n%d"\n\n--n%d\n' % (kind.encode(), level, level)
        if kind.startswith("multipart")
        else b"Content-Type: %s\n\n" % kind.encode()
        for level in range(depth)
    )
    return (
        b"From: MAILER-DAEMON@x.org\nContent-Type: multipart/report; report-type=delivery-status;"
        b' boundary="top"\n\n--top\n'
        + opening
        + b"Content-Type: text/plain\nX-Content: CONTENT-MARKER\n\n"
        + PROBE_HEAD.encode()
        + b"\n--top--\n"
    )


@pytest.mark.parametrize(
    ("raw", "bound"),
    [
        (_nested(3000), "Content-Type fields"),
        (_nested(3000, "message/rfc822"), "Content-Type fields"),
        (_nested(60), "multipart types"),
    ],
    ids=["3000 multiparts", "3000 messages", "60 multiparts"],
)
def test_a_message_nested_beyond_bounds_is_skipped_quickly_and_logged(
    raw: bytes, bound: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nesting the email package reads by recursion, or whose every line it checks against
    every enclosing boundary (seconds per message), is refused before it is parsed."""
    started = time.thread_time()  # CPU time: tests running in parallel share the cores
    with caplog.at_level(logging.WARNING, logger="exporter.bounce"):
        assert bounce.read(raw + b"\n" * bounce.MAX_REPORT) is None
    assert time.thread_time() - started < 0.5
    [record] = caplog.records
    assert bound in record.getMessage() and len(record.getMessage()) < 200
    assert "MARKER" not in record.getMessage() and PROBE_ID not in record.getMessage()


def test_a_long_header_field_costs_no_quadratic_time() -> None:
    """The email package splits parameters in time quadratic in a field's length."""
    raw = _report(POSTFIX_STATUS, "text/rfc822-headers", PROBE_HEAD, "x").replace(
        b'boundary="b0"', b'boundary="b0"' + b";" * 200_000, 1
    )
    started = time.thread_time()  # CPU time: tests running in parallel share the cores
    found = bounce.read(raw)
    assert time.thread_time() - started < 0.5
    assert found is not None and found.probe_id == PROBE_ID, "read, as far as it matters"


# Property tests: whatever arrives, reading it ends in a bounce or None, within bounds.

CHARSETS = (
    "us-ascii",
    "utf-8",
    "unknown-8bit",
    "x-unknown",
    "utf-16",
    "utf-7",
    "idna",
    "undefined",
    "rot13",
    "base64",
    "utf-8\x00",
    "iso-2022-jp",
    "x" * 300,
)
ENCODINGS = ("7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus")
LEAF_TYPES = (
    "text/plain",
    "text/html",
    "text/rfc822-headers",
    "message/delivery-status",
    "message/rfc822",
    "application/octet-stream",
    "message/global-delivery-status",
)
BODIES = (
    PROBE_HEAD,
    POSTFIX_STATUS,
    f"Status: 5.1.1\nX-Mailbox-Probe-Id: {PROBE_ID}\n",
    "Hi. This is the qmail-send program at x.\n\n--- Below this line is a copy of the message.\n"
    f"\nReturn-Path: <>\n{PROBE_HEAD}",
    "=?utf-8?b?/w==?= =FF=\n",
    "begin 644 x\n#86)C\n`\nend\n",
)
FIELD_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)


def _line(name: str, value: str) -> bytes:
    return f"{name}: {value}\n".encode("utf-8", "surrogateescape")


@st.composite
def _leaf(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(LEAF_TYPES) | FIELD_TEXT)
    charset = draw(st.sampled_from(CHARSETS) | FIELD_TEXT)
    params = draw(st.sampled_from(("", "; charset*=undefined''x", "; charset*=utf-8''%FF")))
    head = _line("Content-Type", f'{kind}; charset="{charset}"{params}')
    head += _line("Content-Transfer-Encoding", draw(st.sampled_from(ENCODINGS)))
    if draw(st.booleans()):
        head += _line(message.PROBE_HEADER, draw(st.just(PROBE_ID) | FIELD_TEXT))
    body = draw(st.sampled_from(BODIES).map(str.encode) | st.binary(max_size=200))
    return head + b"\n" + body


def _multipart(children: list[bytes], subtype: str, boundary: str, params: str) -> bytes:
    head = _line("Content-Type", f'multipart/{subtype}; boundary="{boundary}"{params}')
    marker = f"--{boundary}".encode("utf-8", "surrogateescape")
    return head + b"\n" + b"".join(marker + b"\n" + c + b"\n" for c in children) + marker + b"--\n"


@st.composite
def _tree(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    if draw(st.booleans()):
        return _line("Content-Type", "message/rfc822") + b"\n" + draw(children)
    return _multipart(
        draw(st.lists(children, max_size=4)),
        draw(st.sampled_from(("report", "mixed", "alternative", "digest"))),
        draw(st.sampled_from(("b", "=_x", "b'", "")) | FIELD_TEXT),
        draw(
            st.sampled_from(
                (
                    "; report-type=delivery-status",
                    "; report-type*=undefined''delivery-status",
                    "; report-type*=utf-8'en'%FFdelivery-status",
                    "",
                )
            )
        ),
    )


ENTITIES = st.recursive(_leaf(), _tree, max_leaves=12)


@st.composite
def _mail(draw: st.DrawFn) -> bytes:
    """A message: a sender a mail system might use, an odd field or two, and a MIME tree."""
    sender = draw(
        st.sampled_from(("MAILER-DAEMON@x.org", "postmaster@x.org", "<>", "a@x.org", '"@"@'))
        | FIELD_TEXT
    )
    head = _line("From", sender) + _line("MIME-Version", "1.0")
    if draw(st.booleans()):
        head += _line(
            draw(st.sampled_from(("Subject", "Content-Type", "X-Long"))), draw(FIELD_TEXT)
        )
    raw = head + draw(ENTITIES)
    return raw.replace(b"\n", b"\r\n") if draw(st.booleans()) else raw


def _check(raw: bytes) -> None:
    """Reading ends in None or a well-formed bounce the round trip can use, soon."""
    started = time.thread_time()  # CPU time: tests running in parallel share the cores
    found = bounce.read(raw)
    assert time.thread_time() - started < 2.0
    if found is None:
        return
    assert found.probe_id and isinstance(found.probe_id, str)
    assert found.status == "" or re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", found.status)
    assert 200 <= found.code <= 599 and len(found.text) <= bounce.MAX_TEXT
    words = f"{found.status} {found.text}".strip()
    assert classify.smtp_reply(found.code, words, "send") in set(Reason)
    message.ProbeIds(b"k" * 32).verify(found.probe_id, "t")


REAL_REPORTS = (
    _report(POSTFIX_STATUS, "text/rfc822-headers", PROBE_HEAD, "not delivered"),
    _report(POSTFIX_STATUS, "message/rfc822", PROBE.decode(), "not delivered"),
    _qmail(PROBE_HEAD),
)


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    """A real report with bytes cut, replaced and inserted anywhere."""
    raw = draw(st.sampled_from(REAL_REPORTS))
    edits = st.tuples(st.integers(0, 4000), st.integers(0, 8), st.binary(max_size=8))
    for at, cut, insert in draw(st.lists(edits, max_size=6)):
        at %= len(raw) + 1
        raw = raw[:at] + insert + raw[at + cut :]
    return raw


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), _mail(), _damaged()))
def test_any_message(raw: bytes) -> None:
    """Arbitrary bytes, arbitrary MIME trees (odd charsets, encodings, parameters), and real
    reports damaged at random."""
    _check(raw)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    st.sampled_from(("multipart/mixed", "multipart/report", "message/rfc822", "text/plain")),
    st.integers(0, 12) | st.integers(0, 3000),
    st.sampled_from((";", "a", " ", '"', "=?utf-8?q?=FF?=", "\n ", "(")),
    st.integers(0, 100_000),
    st.sampled_from(("Content-Type", "X-Mailbox-Probe-Id", "From", "Content-Transfer-Encoding")),
)
def test_any_depth_and_field_length(
    kind: str, depth: int, piece: str, repeat: int, field: str
) -> None:
    """Deep nesting of any type, and one field of up to hundreds of kilobytes."""
    raw = _nested(depth, kind).replace(
        b"From: MAILER-DAEMON@x.org\n",
        b"From: MAILER-DAEMON@x.org\n" + _line(field, "x" + piece * repeat),
    )
    _check(raw)

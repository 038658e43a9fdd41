"""Reading bounces: the report forms of Postfix, Exchange and Gmail, and what is not one."""

from __future__ import annotations

from exporter import bounce, message

PROBE_ID = "0123456789ab.0123456789abcdef.0123456789abcdef01234567"
PROBE = message.build(target="t", mail_from="a@x.org", mail_to="b@x.org", probe_id=PROBE_ID)


def _report(status_part: str, returned_type: str, returned: str, text: str) -> bytes:
    """A multipart/report (RFC 3464) as MTAs write them."""
    return (
        "From: MAILER-DAEMON@x.org\n"
        f"Subject: Undeliverable: mailbox-exporter probe {PROBE_ID}\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b0"\n\n'
        f"--b0\nContent-Type: text/plain\n\n{text}\n\n"
        f"--b0\nContent-Type: message/delivery-status\n\n{status_part}\n"
        f"--b0\nContent-Type: {returned_type}\n\n{returned}\n--b0--\n"
    ).encode()


PROBE_HEAD = PROBE.split(b"\r\n\r\n")[0].decode().replace("\r\n", "\n")


def test_a_postfix_bounce_with_the_returned_headers() -> None:
    raw = _report(
        "Reporting-MTA: dns; mail.x.org\n\n"
        "Final-Recipient: rfc822; nobody@x.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@x.org> User doesn't exist: nobody@x.org\n",
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


def test_a_plain_text_bounce_quoting_the_header() -> None:
    raw = (
        "From: MAILER-DAEMON@x.org\r\nSubject: failure notice\r\n\r\n"
        "Sorry, I couldn't deliver your message.\r\n"
        "<nobody@x.org>: 552 5.2.2 mailbox full\r\n\r\n--- Below this line is a copy.\r\n\r\n"
        f"X-Mailbox-Probe-Id: {PROBE_ID}\r\nSubject: mailbox-exporter probe\r\n"
    ).encode()
    found = bounce.read(raw)
    assert found is not None
    assert (found.probe_id, found.status, found.code) == (PROBE_ID, "5.2.2", 550)


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


def test_a_delay_notice_is_no_failure_and_a_quoting_message_no_bounce() -> None:
    delayed = _report(
        "Reporting-MTA: dns; mail.x.org\n\n"
        "Final-Recipient: rfc822; b@x.org\nAction: delayed\nStatus: 4.4.1\n"
        "Diagnostic-Code: smtp; 451 4.4.1 connection timed out\n",
        "text/rfc822-headers",
        PROBE_HEAD,
        "Your message is delayed.",
    )
    found = bounce.read(delayed)
    assert found is not None and not found.failed
    forwarded = (
        "From: colleague@x.org\r\nSubject: Fwd: look at this\r\n\r\n"
        f"see 5.1.1 below\r\nX-Mailbox-Probe-Id: {PROBE_ID}\r\n"
    ).encode()
    assert bounce.read(forwarded) is None, "a person's message quoting a probe is no bounce"

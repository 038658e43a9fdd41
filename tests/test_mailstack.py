"""The mail stack the exporter's tests rely on, checked with real SMTP/IMAP traffic.

If these fail, every exporter test built on `MailStack` is meaningless.
They also print the servers' exact answers in the fault states (see them
with ``pytest -rP tests/test_mailstack.py``).
"""

from __future__ import annotations

import base64
import imaplib
import smtplib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.mailstack import MailStack, MailStackError, MailUser

DELIVERY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    # No skip when postfix/dovecot are missing: MailStack raises, and a skipped
    # stack would hide a missing install step.
    mail = MailStack(tmp_path_factory.mktemp("mailstack"))
    mail.add_user("alice", "alice-secret")  # before start()
    started = time.monotonic()
    with mail:
        print(f"\nstart() took {time.monotonic() - started:.2f}s: {mail!r}")
        yield mail
    assert mail.pids() == []
    mail.cleanup()


@pytest.fixture
def alice(stack: MailStack) -> MailUser:
    return stack.add_user("alice", "alice-secret")  # same user again: idempotent


def wait_for(condition: Callable[[], bool], timeout: float = DELIVERY_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def make_message(user: MailUser) -> tuple[bytes, str]:
    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"] = user.address
    msg["To"] = user.address
    msg["Subject"] = f"probe {token}"
    msg["Message-ID"] = f"<{token}@example.test>"
    msg.set_content("hello from test_mailstack\n")
    return msg.as_bytes(), token


def send(stack: MailStack, user: MailUser, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.login(user.address, user.password)
        smtp.sendmail(user.address, [user.address], raw)


def delivered(stack: MailStack, user: MailUser, token: str) -> bool:
    return any(token.encode() in path.read_bytes() for path in stack.message_files(user))


def imap_login(stack: MailStack, login: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", stack.imap_port, timeout=10)
    imap.login(login, password)
    return imap


def imap_login_error(stack: MailStack, login: str, password: str) -> str:
    """The text of the tagged NO reply to LOGIN."""
    imap = imaplib.IMAP4("127.0.0.1", stack.imap_port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error) as failure:
            imap.login(login, password)
        detail = failure.value.args[0]
        return detail.decode() if isinstance(detail, bytes) else str(detail)
    finally:
        imap.shutdown()


def smtp_auth_plain(stack: MailStack, login: str, password: str) -> tuple[int, str]:
    """One raw AUTH PLAIN exchange: smtplib.login() would retry with LOGIN and hide the reply."""
    token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", f"PLAIN {token}")
    return code, text.decode()


def test_imap_login(stack: MailStack, alice: MailUser) -> None:
    imap = imap_login(stack, alice.address, alice.password)
    try:
        typ, data = imap.capability()
        capabilities = data[0].split()
        assert typ == "OK"
        assert b"IDLE" in capabilities and b"UIDPLUS" in capabilities
    finally:
        imap.logout()
    imap_login(stack, alice.name, alice.password).logout()  # bare name: auth_default_realm

    answer = imap_login_error(stack, alice.address, "wrong")
    print(f"\nIMAP LOGIN, wrong password: NO {answer}")
    assert "AUTHENTICATIONFAILED" in answer


def test_smtp_auth(stack: MailStack, alice: MailUser) -> None:
    assert smtp_auth_plain(stack, alice.address, alice.password)[0] == 235
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.login(alice.address, alice.password)  # whatever mechanism smtplib picks (LOGIN too)

    code, text = smtp_auth_plain(stack, alice.address, "wrong")
    print(f"\nSMTP AUTH PLAIN, wrong password: {code} {text}")
    assert code == 535


def test_unauthenticated_mail_is_refused(stack: MailStack, alice: MailUser) -> None:
    raw, _ = make_message(alice)
    with (
        smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        smtp.sendmail(alice.address, [alice.address], raw)
    print(f"\nSMTP RCPT without AUTH: {refused.value.recipients}")


def test_smtp_message_reaches_maildir_and_imap(stack: MailStack, alice: MailUser) -> None:
    raw, token = make_message(alice)
    send(stack, alice, raw)
    assert wait_for(lambda: delivered(stack, alice, token)), stack.log_tail()

    imap = imap_login(stack, alice.address, alice.password)
    try:
        imap.select("INBOX")
        typ, data = imap.search(None, "HEADER", "Message-ID", token)
        assert typ == "OK" and data[0].split(), data
    finally:
        imap.logout()
    assert stack.queue_size() == 0


def test_defer_delivery_keeps_mail_queued(stack: MailStack, alice: MailUser) -> None:
    raw, token = make_message(alice)
    stack.defer_delivery()
    try:
        send(stack, alice, raw)
        assert wait_for(lambda: stack.queue_size() == 1, 5.0), stack.log_tail()
        time.sleep(2.0)  # longer than queue_run_delay and the backoff times
        assert stack.queue_size() == 1
        assert not delivered(stack, alice, token)
    finally:
        stack.resume_delivery()
    assert wait_for(lambda: delivered(stack, alice, token)), stack.log_tail()
    assert wait_for(lambda: stack.queue_size() == 0, 5.0)


def test_stop_dovecot_refuses_imap(stack: MailStack, alice: MailUser) -> None:
    stack.stop_dovecot()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", stack.imap_port), timeout=2).close()
        # without Dovecot's auth, smtpd drops new sessions before the greeting
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp_auth_plain(stack, alice.address, alice.password)
    finally:
        stack.start_dovecot()
    imap_login(stack, alice.address, alice.password).logout()
    assert smtp_auth_plain(stack, alice.address, alice.password)[0] == 235


def test_broken_passwd_file_fails_logins(stack: MailStack, alice: MailUser) -> None:
    stack.break_passwd_file()
    try:
        imap_answer = imap_login_error(stack, alice.address, alice.password)
        smtp_code, smtp_text = smtp_auth_plain(stack, alice.address, alice.password)
        print(f"\nIMAP LOGIN, passwd-file broken: NO {imap_answer}")
        print(f"SMTP AUTH PLAIN, passwd-file broken: {smtp_code} {smtp_text}")
        assert imap_answer.startswith("[UNAVAILABLE] Temporary authentication failure.")
        # Postfix's Dovecot SASL client turns every FAIL into 535, ignoring Dovecot's
        # "temp" flag: over SMTP this looks exactly like a wrong password.
        assert (smtp_code, smtp_text) == smtp_auth_plain(stack, alice.address, "wrong")
        assert smtp_code == 535
        # every attempt fails, not just the first in a second (Dovecot caches per second)
        assert "UNAVAILABLE" in imap_login_error(stack, alice.address, alice.password)
        assert smtp_auth_plain(stack, alice.address, alice.password)[0] == 535
    finally:
        stack.restore_passwd_file()
    imap_login(stack, alice.address, alice.password).logout()
    assert smtp_auth_plain(stack, alice.address, alice.password)[0] == 235


def test_put_message_counts_in_select_exists(stack: MailStack) -> None:
    carol = stack.add_user("carol", "carol-secret")  # added while running
    for _ in range(2):
        raw, _token = make_message(carol)
        stack.put_message(carol, raw)
    assert len(stack.message_files(carol)) == 2

    imap = imap_login(stack, carol.address, carol.password)
    try:
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data[0] is not None
        assert int(data[0]) == 2  # EXISTS
    finally:
        imap.logout()
    # Dovecot moved them from new/ to cur/ on SELECT; message_files() still counts them
    assert {p.parent.name for p in stack.message_files(carol)} == {"cur"}
    assert len(stack.message_files(carol)) == 2


def test_second_stack_runs_alongside_and_leaves_nothing(
    stack: MailStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = MailStack(tmp_path_factory.mktemp("other"))
    dave = other.add_user("dave", "dave-secret")
    ports = {other.smtp_port, other.imap_port, other.lmtp_port, other.auth_port}
    assert not ports & {stack.smtp_port, stack.imap_port, stack.lmtp_port, stack.auth_port}
    with other:
        raw, token = make_message(dave)
        send(other, dave, raw)
        assert wait_for(lambda: delivered(other, dave, token)), other.log_tail()
        assert other.pids()
    assert other.pids() == []
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    other.stop()  # idempotent
    other.cleanup()
    imap_login(stack, "alice@example.test", "alice-secret").logout()  # first stack unharmed


def test_failed_start_reports_log_and_leaves_nothing(tmp_path: Path) -> None:
    broken = MailStack(tmp_path / "broken")
    broken.dovecot_conf.write_text(broken.dovecot_conf.read_text() + "\nno_such_setting = 1\n")
    with pytest.raises(MailStackError, match="no_such_setting"):
        broken.start()
    assert broken.pids() == []
    broken.cleanup()

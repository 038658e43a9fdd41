"""The mail stack the exporter's tests rely on, checked with real SMTP/IMAP traffic.

If these fail, every exporter test built on `MailStack` is meaningless.
They also print the servers' exact answers in the fault states (see them
with ``pytest -rP tests/test_mailstack.py``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import imaplib
import json
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailStackError, MailUser, TlsFiles

pytestmark = pytest.mark.services  # stacks of its own

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


# ---------------------------------------------------------------- TLS


def test_plain_stack_offers_neither_starttls_nor_oauth(stack: MailStack) -> None:
    assert stack.smtps_port is None and stack.imaps_port is None
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        assert "XOAUTH2" not in smtp.esmtp_features["auth"].upper().split()
    imap = imaplib.IMAP4("127.0.0.1", stack.imap_port, timeout=10)
    try:
        assert "STARTTLS" not in imap.capabilities
        assert "AUTH=XOAUTH2" not in imap.capabilities
    finally:
        imap.shutdown()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(directory: Path, leaf: trustme.LeafCert) -> TlsFiles:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return TlsFiles.write(directory, chain, leaf.private_key_pem.bytes())


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context (name and dates checked) that trusts only `ca`."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    return context


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[MailStack]:
    files = tls_files(tmp_path_factory.mktemp("certs"), ca.issue_cert("localhost", "127.0.0.1"))
    mail = MailStack(tmp_path_factory.mktemp("tlsstack"), tls=files)
    mail.add_user("alice", "alice-secret")
    started = time.monotonic()
    with mail:
        print(f"\nstart() with TLS took {time.monotonic() - started:.2f}s: {mail!r}")
        yield mail
    assert mail.pids() == []
    mail.cleanup()


def test_smtp_starttls_and_smtps(tls_stack: MailStack, ca: trustme.CA) -> None:
    assert tls_stack.smtps_port is not None
    context = client_context(ca)
    with smtplib.SMTP("127.0.0.1", tls_stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert "PLAIN" in smtp.esmtp_features["auth"].split()  # smtpd_tls_auth_only = no
        smtp.starttls(context=context)  # checks the name against 127.0.0.1
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.login("alice@example.test", "alice-secret")
    with smtplib.SMTP_SSL("localhost", tls_stack.smtps_port, context=context, timeout=10) as smtps:
        assert isinstance(smtps.sock, ssl.SSLSocket)
        smtps.login("alice@example.test", "alice-secret")


def test_imap_starttls_and_imaps(tls_stack: MailStack, ca: trustme.CA) -> None:
    assert tls_stack.imaps_port is not None
    context = client_context(ca)
    imap = imaplib.IMAP4("127.0.0.1", tls_stack.imap_port, timeout=10)
    try:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(context)
        assert "STARTTLS" not in imap.capabilities
        imap.login("alice@example.test", "alice-secret")
    finally:
        imap.logout()
    imaps = imaplib.IMAP4_SSL("localhost", tls_stack.imaps_port, ssl_context=context, timeout=10)
    try:
        imaps.login("alice@example.test", "alice-secret")
    finally:
        imaps.logout()


def test_tls_names_are_checked(tls_stack: MailStack, ca: trustme.CA) -> None:
    """The certificate is only good for localhost/127.0.0.1: name checks are really made."""
    assert tls_stack.imaps_port is not None
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
        socket.create_connection(("127.0.0.1", tls_stack.imaps_port), timeout=10) as raw,
    ):
        client_context(ca).wrap_socket(raw, server_hostname="mail.example.test")


def test_expired_certificate_is_served(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA
) -> None:
    """Neither daemon checks dates: the stack starts and the client must refuse."""
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    mail = MailStack(
        tmp_path_factory.mktemp("expiredstack"),
        tls=tls_files(tmp_path_factory.mktemp("expired"), leaf),
    )
    user = mail.add_user("alice", "alice-secret")
    context = client_context(ca)
    with mail:
        assert mail.imaps_port is not None and mail.smtps_port is not None
        for port in (mail.imaps_port, mail.smtps_port):
            with (
                pytest.raises(ssl.SSLCertVerificationError) as failure,
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ):
                context.wrap_socket(raw, server_hostname="localhost")
            print(f"\nexpired certificate on {port}, verifying client: {failure.value}")
            assert failure.value.verify_message == "certificate has expired"
        imap = imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=10)
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
                imap.starttls(context)
        finally:
            with contextlib.suppress(OSError):  # the failed handshake closed the socket
                imap.shutdown()
        with (
            smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=10) as smtp,
            pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"),
        ):
            smtp.starttls(context=context)
        trusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        trusting.check_hostname = False
        trusting.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", mail.smtps_port, context=trusting, timeout=10) as smtps:
            smtps.login(user.address, user.password)
    assert mail.pids() == []
    mail.cleanup()


def test_key_not_matching_the_certificate_fails_at_once(tmp_path: Path, ca: trustme.CA) -> None:
    good = tls_files(tmp_path / "good", ca.issue_cert("localhost"))
    other = tls_files(tmp_path / "other", ca.issue_cert("localhost"))
    with pytest.raises(ValueError, match="KEY_VALUES_MISMATCH"):
        MailStack(tmp_path / "stack", tls=TlsFiles(good.cert_file, other.key_file))


# ---------------------------------------------------------------- OAuth2


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def oauth_stack(
    tmp_path_factory: pytest.TempPathFactory, idp: IdentityProvider
) -> Iterator[MailStack]:
    mail = MailStack(
        tmp_path_factory.mktemp("oauthstack"), oauth2_introspection_url=idp.introspection_url
    )
    mail.add_user("alice", "alice-secret")
    mail.add_user("bob", "bob-secret")
    with mail:
        yield mail
    assert mail.pids() == []
    mail.cleanup()


def xoauth2(address: str, token: str) -> str:
    return base64.b64encode(f"user={address}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(address: str, token: str, port: int) -> str:
    gs2 = f"n,a={address},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(gs2.encode()).decode()


def imap_exchange(stack: MailStack, command: str) -> list[str]:
    """Send one tagged command (SASL-IR), answer each ``+`` with an empty line; all replies."""
    with socket.create_connection(("127.0.0.1", stack.imap_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        sock.sendall(f"t1 {command}\r\n".encode())
        lines: list[str] = []
        while True:
            line = reader.readline().decode().rstrip("\r\n")
            if not line:
                raise AssertionError(f"connection closed after {lines}")
            lines.append(line)
            if line.startswith("+"):
                sock.sendall(b"\r\n")
            elif line.startswith("t1 "):
                return lines


def smtp_xoauth2(stack: MailStack, address: str, token: str) -> list[tuple[int, str]]:
    """AUTH XOAUTH2 with an initial response; a 334 challenge gets the empty answer."""
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        replies = [smtp.docmd("AUTH", f"XOAUTH2 {xoauth2(address, token)}")]
        if replies[0][0] == 334:
            replies.append(smtp.docmd(""))
    return [(code, text.decode()) for code, text in replies]


def test_oauth_is_offered_next_to_passwords(oauth_stack: MailStack) -> None:
    with smtplib.SMTP("127.0.0.1", oauth_stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
    imap = imaplib.IMAP4("127.0.0.1", oauth_stack.imap_port, timeout=10)
    try:
        assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "AUTH=PLAIN"} <= set(imap.capabilities)
    finally:
        imap.shutdown()
    imap_login(oauth_stack, "alice@example.test", "alice-secret").logout()
    assert smtp_auth_plain(oauth_stack, "alice@example.test", "alice-secret")[0] == 235
    assert smtp_auth_plain(oauth_stack, "alice@example.test", "wrong")[0] == 535


def test_imap_xoauth2(oauth_stack: MailStack, idp: IdentityProvider) -> None:
    token = idp.issue_token("alice@example.test")
    before = idp.introspections
    imap = imaplib.IMAP4("127.0.0.1", oauth_stack.imap_port, timeout=10)
    try:
        typ, _ = imap.authenticate(
            "XOAUTH2",
            lambda _challenge: f"user=alice@example.test\x01auth=Bearer {token}\x01\x01".encode(),
        )
        assert typ == "OK"
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    assert idp.introspections == before + 1  # no cache: one introspection per login
    sent = idp.introspection_requests()[-1]
    print(f"\nDovecot introspects: {sent.method} {sent.path} {sent.headers} {sent.body!r}")
    assert sent.method == "POST" and sent.form()["token"] == token
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"

    ok = imap_exchange(oauth_stack, f"AUTHENTICATE XOAUTH2 {xoauth2('alice@example.test', token)}")
    assert len(ok) == 1 and ok[0].startswith("t1 OK ") and ok[0].endswith(" Logged in")

    bad = imap_exchange(oauth_stack, f"AUTHENTICATE XOAUTH2 {xoauth2('alice@example.test', 'x')}")
    challenge = json.loads(base64.b64decode(bad[0][2:]))
    print(f"IMAP XOAUTH2, bad token: {bad} (challenge {challenge})")
    assert bad[0].startswith("+ ")
    assert challenge == {"status": "401", "schemes": "bearer", "scope": "mail"}
    assert bad[1:] == ["t1 NO [AUTHENTICATIONFAILED] Authentication failed."]

    foreign = imap_exchange(oauth_stack, f"AUTHENTICATE XOAUTH2 {xoauth2('bob', token)}")
    assert foreign[-1] == "t1 NO [AUTHENTICATIONFAILED] Authentication failed."


def test_imap_oauthbearer(oauth_stack: MailStack, idp: IdentityProvider) -> None:
    token = idp.issue_token("bob@example.test")
    port = oauth_stack.imap_port
    ok = imap_exchange(
        oauth_stack, f"AUTHENTICATE OAUTHBEARER {oauthbearer('bob@example.test', token, port)}"
    )
    assert ok[-1].startswith("t1 OK ")
    bad = imap_exchange(
        oauth_stack, f"AUTHENTICATE OAUTHBEARER {oauthbearer('bob@example.test', 'x', port)}"
    )
    print(f"\nIMAP OAUTHBEARER, bad token: {bad} ({base64.b64decode(bad[0][2:])!r})")
    assert json.loads(base64.b64decode(bad[0][2:])) == {"status": "invalid_token"}
    assert bad[1:] == ["t1 NO [AUTHENTICATIONFAILED] Authentication failed."]


def test_smtp_xoauth2(oauth_stack: MailStack, idp: IdentityProvider) -> None:
    token = idp.issue_token("alice@example.test")
    assert smtp_xoauth2(oauth_stack, "alice@example.test", token) == [
        (235, "2.7.0 Authentication successful")
    ]
    bad = smtp_xoauth2(oauth_stack, "alice@example.test", "garbage")
    challenge = json.loads(base64.b64decode(bad[0][1]))
    print(f"\nSMTP XOAUTH2, bad token: {bad} (challenge {challenge})")
    assert bad[0][0] == 334
    assert challenge == {"status": "401", "schemes": "bearer", "scope": "mail"}
    assert bad[1] == (535, "5.7.8 Error: authentication failed: (reason unavailable)")

    alice = oauth_stack.add_user("alice", "alice-secret")
    raw, marker = make_message(alice)
    with smtplib.SMTP("127.0.0.1", oauth_stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", f"XOAUTH2 {xoauth2('alice@example.test', token)}")[0] == 235
        smtp.sendmail("alice@example.test", ["alice@example.test"], raw)
    assert wait_for(lambda: delivered(oauth_stack, alice, marker)), oauth_stack.log_tail()


def test_revoked_token_fails(oauth_stack: MailStack, idp: IdentityProvider) -> None:
    token = idp.issue_token("bob@example.test")
    assert smtp_xoauth2(oauth_stack, "bob@example.test", token)[0][0] == 235
    idp.revoke_all()
    assert [code for code, _ in smtp_xoauth2(oauth_stack, "bob@example.test", token)] == [334, 535]
    answer = imap_exchange(oauth_stack, f"AUTHENTICATE XOAUTH2 {xoauth2('bob', token)}")
    assert answer[-1] == "t1 NO [AUTHENTICATIONFAILED] Authentication failed."
    fresh = idp.issue_token("bob@example.test")
    assert smtp_xoauth2(oauth_stack, "bob@example.test", fresh)[0][0] == 235


def test_unreachable_identity_provider_is_a_temporary_failure(
    oauth_stack: MailStack, idp: IdentityProvider
) -> None:
    token = idp.issue_token("alice@example.test")
    idp.stop()
    try:
        imap = imap_exchange(oauth_stack, f"AUTHENTICATE XOAUTH2 {xoauth2('alice', token)}")
        smtp = smtp_xoauth2(oauth_stack, "alice@example.test", token)
        print(f"\nidentity provider down: IMAP {imap}, SMTP {smtp}")
        assert len(imap) == 1  # no challenge
        assert imap[0].startswith("t1 NO [UNAVAILABLE] Temporary authentication failure.")
        assert smtp == [(535, "5.7.8 Error: authentication failed: (reason unavailable)")]
    finally:
        idp.start()
    assert smtp_xoauth2(oauth_stack, "alice@example.test", token)[0][0] == 235

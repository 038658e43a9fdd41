"""The whole truth of a round trip, against a real Postfix and Dovecot with Junk, Sent and
Trash folders: every copy cleaned, junk placement, bounces, and no report taken for the
arrival."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from exporter import config, message, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing import gmaillike
from testing.mailstack import MailStack, MailUser
from testing.targets import fixed_ids, make_target

FOLDERS = ("", "Sent", "Junk")
_users = itertools.count(1)


@pytest.fixture(scope="module")
def folders_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """Dovecot with Junk, Sent and Trash (special use), Sieve, and Postfix keeping a Sent copy
    of what is submitted, as Exchange does."""
    with MailStack(tmp_path_factory.mktemp("folders"), folders=True) as stack:
        yield stack


@pytest.fixture
def mailbox(folders_stack: MailStack) -> MailUser:
    return folders_stack.add_user(f"truth{next(_users)}", "pw-truth-1")


def _ordinary(index: int, folder: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "someone@example.org"
    mail["Subject"] = f"ordinary {folder or 'INBOX'} {index}"
    mail.set_content(f"an ordinary message, {index}")
    return mail.as_bytes()


def _files(stack: MailStack, user: MailUser) -> dict[str, dict[str, bytes]]:
    """Every message file of every folder, by folder, name and content."""
    return {
        folder: {
            path.name.split(":")[0]: path.read_bytes()
            for path in (
                stack.message_files(user) if not folder else stack.folder_files(user, folder)
            )
        }
        for folder in (*FOLDERS, "Trash")
    }


def _probes_in(files: dict[str, dict[str, bytes]]) -> list[str]:
    return [
        f"{folder}/{name}"
        for folder, messages in files.items()
        for name, raw in messages.items()
        if b"mailbox-exporter probe" in raw
    ]


async def test_a_hundred_round_trips_leave_no_copy_in_any_folder(
    folders_stack: MailStack, mailbox: MailUser, context: ProbeContext
) -> None:
    target = make_target(folders_stack, mailbox, timeout="10s")
    for folder in FOLDERS:
        for index in range(50):
            folders_stack.put_message(mailbox, _ordinary(index, folder), folder)
    ids = fixed_ids(context)
    lookalike = EmailMessage()
    lookalike[message.PROBE_HEADER] = f"{ids.prefix}.0123456789abcdef.{'0' * 24}"
    lookalike["Subject"] = "mailbox-exporter probe forged"
    lookalike.set_content("forged")
    for folder in FOLDERS:
        folders_stack.put_message(mailbox, lookalike.as_bytes(), folder)
    before = _files(folders_stack, mailbox)

    results = [await probes.run(target, Check.ROUNDTRIP, context) for _ in range(100)]
    assert [r for r in results if not r.success] == []
    await asyncio.sleep(0.5)
    after = _files(folders_stack, mailbox)
    for folder in FOLDERS:
        kept = {name: raw for name, raw in after[folder].items() if name in before[folder]}
        assert kept == before[folder], f"{folder or 'INBOX'}: ordinary mail and lookalikes"
    left = [
        path
        for path in _probes_in(after)
        if path.split("/", 1)[1] not in before[path.split("/", 1)[0]]
    ]
    assert left == [], "no probe copy left in any folder"
    assert sum(r.found.cleanup_deleted for r in results) >= 200, "inbox and Sent copies"


async def test_a_probe_filed_as_junk_fails_at_once_and_is_cleaned(
    folders_stack: MailStack, mailbox: MailUser, context: ProbeContext
) -> None:
    target = make_target(folders_stack, mailbox, timeout="20s", interval="20s")
    folders_stack.file_into_junk(mailbox)
    try:
        result = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        folders_stack.file_into_junk(mailbox, on=False)
    assert (result.reason, result.phase) == (Reason.JUNK, Phase.DELIVERY), result
    assert result.duration < 5, "found within a few seconds of arrival, not at the timeout"
    assert result.found.junk and result.found.delivery_seconds is not None
    assert _probes_in(_files(folders_stack, mailbox)) == []


def _bounce_target(stack: MailStack, user: MailUser) -> Target:
    """A probe to a recipient Dovecot does not know: Postfix accepts it, LMTP refuses it,
    and Postfix bounces it to the sender, whose mailbox is watched."""
    return make_target(
        stack,
        user,
        timeout="20s",
        interval="20s",
        extra=f"    to: nobody-{user.name}@{stack.domain}\n",
    )


async def test_a_bounce_fails_the_probe_with_its_reason_and_is_deleted(
    folders_stack: MailStack, mailbox: MailUser, context: ProbeContext
) -> None:
    ordinary_bounce = (
        b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail Returned to Sender\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
        b'boundary="b"\n\n--b\nContent-Type: text/plain\n\nnot delivered\n'
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        b"Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        b"--b\nContent-Type: text/rfc822-headers\n\nSubject: lunch\nFrom: a@example.org\n--b--\n"
    )
    folders_stack.put_message(mailbox, ordinary_bounce)
    result = await probes.run(_bounce_target(folders_stack, mailbox), Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.DELIVERY), result
    assert "5.1.1" in result.detail and result.detail.startswith("bounced:")
    assert result.duration < 5, "failed when the bounce arrived, not at the timeout"
    assert result.found.bounces == 1
    inbox = _files(folders_stack, mailbox)[""]
    assert list(inbox.values()) == [ordinary_bounce], "only the ordinary bounce is left"


async def test_a_report_carrying_a_probe_header_is_never_the_arrival(
    folders_stack: MailStack, mailbox: MailUser, context: ProbeContext
) -> None:
    target = make_target(folders_stack, mailbox, timeout="10s")
    ids = fixed_ids(context)
    report = EmailMessage()
    report[message.PROBE_HEADER] = ids.new(target.name)
    report["Subject"] = f"Undeliverable: {message.subject(report[message.PROBE_HEADER])}"
    report.set_content("Delivery has failed to these recipients.")
    folders_stack.put_message(mailbox, report.as_bytes())
    started = time.monotonic()
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.lookalikes == 1 and time.monotonic() - started < 5
    inbox = _files(folders_stack, mailbox)[""]
    assert [raw for raw in inbox.values() if b"Undeliverable" in raw], "left alone"


async def test_on_gmail_a_probe_is_moved_to_trash_and_expunged_there(
    context: ProbeContext,
) -> None:
    """Expunging in INBOX only archives on Gmail: the probe must leave All Mail too."""
    async with gmaillike.serve() as (gmail, smtp_port, imap_port):
        target = config.parse(
            "targets:\n  - name: gmail\n    checks: [roundtrip]\n    timeout: 5s\n"
            f"    smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none, "
            "username: probe@gmail.example, password: app-pw-1}\n"
            f"    imap: {{host: 127.0.0.1, port: {imap_port}, tls: none, "
            "username: probe@gmail.example, password: app-pw-1}\n"
        ).targets[0]
        ordinary = b"From: a@example.org\r\nSubject: keep me\r\n\r\nhello\r\n"
        gmail.deliver(ordinary)
        result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert [stored.raw for stored in gmail.messages.values()] == [ordinary], "All Mail"
    moves = [c for c in gmail.commands if " UID MOVE " in c]
    assert moves and moves[0].endswith('"[Gmail]/Trash"'), gmail.commands
    after_move = gmail.commands[gmail.commands.index(moves[0]) :]
    assert any('SELECT "[Gmail]/Trash"' in c for c in after_move)
    assert any(" UID EXPUNGE " in c for c in after_move)


async def test_a_probe_filed_as_junk_after_its_round_trip_is_cleaned_by_the_next(
    folders_stack: MailStack, mailbox: MailUser, context: ProbeContext
) -> None:
    target = make_target(folders_stack, mailbox, timeout="10s")
    earlier = fixed_ids(context).new(target.name)
    folders_stack.put_message(
        mailbox,
        message.build(
            target=target.name, mail_from=target.mail_from, mail_to=target.mail_to, probe_id=earlier
        ),
        "Junk",
    )
    result = await probes.run(target, Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.late_arrivals == 1
    assert _probes_in(_files(folders_stack, mailbox)) == []

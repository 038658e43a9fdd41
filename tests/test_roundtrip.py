"""Only our own mail is ever deleted: a property test over arbitrary mailbox contents, and the
same kinds of mail in a real Dovecot mailbox."""

from __future__ import annotations

import string
import time
from email.message import EmailMessage
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import message, probes
from exporter.message import LATE_ARRIVAL_WINDOW, PROBE_HEADER, ProbeIds
from exporter.outcome import Check
from exporter.probekey import read_or_create
from exporter.probes.roundtrip import sort_out
from exporter.transports import Envelope
from testing.mailstack import MailStack, MailUser
from testing.targets import make_target, probe_context, probe_files

OURS = ProbeIds(b"k" * 32)
OTHER_EXPORTER = ProbeIds(b"o" * 32)
OURS_LONG_AGO = ProbeIds(b"k" * 32, clock=lambda: time.time() - LATE_ARRIVAL_WINDOW - 60)
"""The same key, making ids older than the late-arrival window: replayed, they are lookalikes."""
TARGET = "corp"

KINDS = (
    "real",
    "ours",
    "ours_duplicate",
    "forged",
    "expired",
    "other_exporter",
    "other_target",
    "truncated",
    "garbage",
)


def _header(kind: str, draw: st.DrawFn) -> str | None:
    nonce = draw(st.text("0123456789abcdef", min_size=16, max_size=16))
    if kind == "real":
        return None
    if kind in ("ours", "ours_duplicate"):
        return OURS.new(TARGET)
    if kind == "forged":
        mac = draw(st.text("0123456789abcdef", min_size=24, max_size=24))
        made = f"{int(time.time()):08x}"
        return f"{OURS.prefix}.{made}.{nonce}.{mac}"
    if kind == "expired":
        return OURS_LONG_AGO.new(TARGET)
    if kind == "other_exporter":
        return OTHER_EXPORTER.new(TARGET)
    if kind == "other_target":
        return OURS.new("another-target")
    if kind == "truncated":
        return OURS.new(TARGET)[:-3]
    printable = string.ascii_letters + string.digits + string.punctuation + " "
    return draw(st.text(printable, max_size=60).map(lambda t: f"{OURS.prefix}.{t}".strip()))


@st.composite
def mailboxes(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    """A mailbox: (kind, probe id header or None) per message, in UID order."""
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=60))
    box: list[tuple[str, str | None]] = []
    for kind in kinds:
        header = _header(kind, draw)
        box.append((kind, header))
        if kind == "ours_duplicate":
            box.append((kind, header))
    return box


@given(mailboxes())
@settings(max_examples=400, deadline=None)
def test_exactly_our_probe_messages_are_selected(box: list[tuple[str, str | None]]) -> None:
    # What a server's substring SEARCH on our prefix would return, with the header values.
    candidates = {
        str(uid): Envelope(header, subject=message.subject(header))
        for uid, (_, header) in enumerate(box, start=1)
        if header is not None and OURS.prefix + "." in header
    }
    ours, lookalikes = sort_out(candidates, OURS, TARGET)
    expected = {
        str(uid) for uid, (kind, _) in enumerate(box, start=1) if kind in ("ours", "ours_duplicate")
    }
    assert set(ours) == expected
    assert lookalikes == set(candidates) - expected


def test_keys_survive_restarts(tmp_path: Path) -> None:
    path = tmp_path / "state" / "probe.key"
    first = ProbeIds(read_or_create(path))
    assert path.stat().st_mode & 0o777 == 0o600
    probe_id = first.new(TARGET)
    assert ProbeIds(read_or_create(path)).verify(probe_id, TARGET), "the same key after a restart"
    assert not ProbeIds().verify(probe_id, TARGET)


def _mail(subject: str, header: str | None) -> bytes:
    mail = EmailMessage()
    mail["From"] = "someone@example.test"
    mail["To"] = "probe@example.test"
    mail["Subject"] = subject
    if header is not None:
        mail[PROBE_HEADER] = header
    mail.set_content("hello\n")
    return mail.as_bytes()


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(box=mailboxes())
async def test_a_real_mailbox_keeps_everything_but_our_probes(
    mailstack: MailStack, user: MailUser, box: list[tuple[str, str | None]]
) -> None:
    for path in mailstack.message_files(user):
        path.unlink()
    for index, (kind, header) in enumerate(box):
        mailstack.put_message(user, _mail(f"{kind} {index}", header))
    ours_before = {h for kind, h in box if kind in ("ours", "ours_duplicate")}
    others_before = sorted(
        p.read_bytes()
        for p in mailstack.message_files(user)
        if not any(h and h.encode() in p.read_bytes() for h in ours_before)
    )

    target = make_target(mailstack, user, name=TARGET)
    context = probe_context(OURS)
    try:
        result = await probes.run(target, Check.ROUNDTRIP, context)
    finally:
        await context.close()

    assert result.success, result
    assert result.found.late_arrivals == len(ours_before)
    assert result.found.cleanup_deleted == 1 + sum(
        1 for kind, _ in box if kind in ("ours", "ours_duplicate")
    )
    left = sorted(p.read_bytes() for p in mailstack.message_files(user))
    assert left == others_before
    forged = sum(
        1
        for kind, h in box
        if h and OURS.prefix + "." in h and kind not in ("ours", "ours_duplicate")
    )
    assert result.found.lookalikes == forged
    assert not [
        p
        for p in probe_files(mailstack, user)
        if any(h and h.encode() in p.read_bytes() for h in ours_before)
    ]
    assert message.PROBE_HEADER == "X-Mailbox-Probe-Id"


def test_a_report_is_no_arrival_even_behind_a_transport_rules_tag() -> None:
    probe_id = OURS.new(TARGET)
    subjects = {
        "1": message.subject(probe_id),
        "2": f"Undeliverable: {message.subject(probe_id)}",
        "3": f"[EXTERNAL] [SPAM?] Undeliverable: {message.subject(probe_id)}",
        "4": f"[EXTERNAL] {message.subject(probe_id)}",
    }
    envelopes = {ref: Envelope(probe_id, subject=subject) for ref, subject in subjects.items()}
    ours, lookalikes = sort_out(envelopes, OURS, TARGET)
    assert set(ours) == {"1", "4"} and lookalikes == {"2", "3"}

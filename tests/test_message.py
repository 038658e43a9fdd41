"""The probe message: the fast path writes what the email package would, for any input."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import message


@pytest.mark.parametrize(
    ("target", "mail_from", "mail_to"),
    [
        ("corp", "monitor@corp.example", "monitor@corp.example"),
        ("m365:eu-1", "probe@contoso.com", "inbox@partner.example"),
        ("unicode", "prøbe@exämple.test", "inbox@exämple.test"),
    ],
)
def test_the_message_says_what_it_is(target: str, mail_from: str, mail_to: str) -> None:
    ids = message.ProbeIds()
    probe_id = ids.new(target)
    raw = message.build(target=target, mail_from=mail_from, mail_to=mail_to, probe_id=probe_id)
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["From"] == mail_from and parsed["To"] == mail_to
    assert parsed[message.PROBE_HEADER] == probe_id
    assert probe_id in parsed["Subject"]
    assert parsed["Message-ID"] == f"<{probe_id}@mailbox-exporter.invalid>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Date"].datetime is not None
    assert f"(target {target})" in parsed.get_content()
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_a_forged_id_of_any_characters_simply_does_not_verify() -> None:
    ids = message.ProbeIds()
    for forged in (
        f"{ids.prefix}.{'0' * 16}.{'é' * 24}",
        f"{ids.prefix}.{'é' * 16}.{'0' * 24}",
        f"{ids.prefix}.{'0' * 16}.{'G' * 24}",
    ):
        assert not ids.verify(forged, "t")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_id_verifies_within_the_late_arrival_window_only() -> None:
    clock = Clock(1_800_000_000.0)
    ids = message.ProbeIds(b"k" * 32, clock=clock)
    probe_id = ids.new("t")
    assert ids.verify(probe_id, "t")
    clock.now += message.LATE_ARRIVAL_WINDOW - 1
    assert ids.verify(probe_id, "t"), "a late arrival within the window"
    clock.now += 2
    assert not ids.verify(probe_id, "t"), "replayed after the window: a lookalike"
    clock.now = 1_800_000_000.0 - message.CLOCK_SKEW - 1
    assert not ids.verify(probe_id, "t"), "made too far in the future"


def test_the_time_in_an_id_is_authenticated() -> None:
    clock = Clock(1_800_000_000.0)
    ids = message.ProbeIds(b"k" * 32, clock=clock)
    prefix, made, nonce, mac = ids.new("t").split(".")
    assert int(made, 16) == 1_800_000_000
    for other in (int(made, 16) + 1, int(made, 16) - 3600):
        assert not ids.verify(f"{prefix}.{other:08x}.{nonce}.{mac}", "t")


@given(st.text(max_size=120) | st.builds(".".join, st.lists(st.text(max_size=30), max_size=6)))
@settings(max_examples=500, derandomize=True, deadline=None)
def test_any_header_value_is_simply_an_id_or_not(value: str) -> None:
    """Probe ids come from mail anyone can send: whatever the header holds, verify answers."""
    ids = message.ProbeIds(b"k" * 32)
    assert ids.verify(value, "t") is False
    assert ids.verify(f"{ids.prefix}.{value}", "t") is False


def test_no_part_of_an_id_depends_on_anything_but_the_key_time_and_target() -> None:
    """Ids are made from the random key alone: two exporters with one key file make ids each
    can verify, whatever credentials their targets use."""
    key = b"\x01" * 32
    first, second = message.ProbeIds(key), message.ProbeIds(key)
    assert first.prefix == second.prefix
    assert second.verify(first.new("t"), "t")
    assert not message.ProbeIds().verify(first.new("t"), "t")

"""The probe message: the fast path writes what the email package would, for any input."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default

import pytest

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

"""A failure's words are redacted whole, before they are shortened for a page: a credential
cut in two by the shortening would escape a redaction that came after."""

from __future__ import annotations

import pytest

from exporter import probes
from exporter.config import Target, parse
from exporter.outcome import DETAIL_LIMIT, Check, ProbeFailure, Reason
from exporter.probes.registry import PROBERS
from exporter.trace import Trace
from testing.targets import probe_context

PASSWORD = "correct-horse-battery-staple"


def _target() -> Target:
    return parse(
        "targets:\n  - name: t\n"
        f"    imap: {{host: 127.0.0.1, username: u@x.org, password: {PASSWORD}}}\n"
    ).targets[0]


@pytest.mark.parametrize("cut", range(4, len(PASSWORD)))
async def test_a_credential_across_the_cut_is_redacted(
    monkeypatch: pytest.MonkeyPatch, cut: int
) -> None:
    async def echoing(target: Target, trace: Trace, context: object) -> None:
        padding = "x" * (DETAIL_LIMIT - 1 - cut)
        raise ProbeFailure(Reason.PROTOCOL_ERROR, f"{padding}{PASSWORD} and more words after")

    monkeypatch.setitem(PROBERS, Check.IMAP_LOGIN, echoing)
    context = probe_context()
    try:
        result = await probes.run(_target(), Check.IMAP_LOGIN, context, transcript=True)
    finally:
        await context.close()
    shown = [result.detail, *result.transcript]
    for text in shown:
        assert PASSWORD[:cut] not in text, text
    assert len(result.detail) <= DETAIL_LIMIT

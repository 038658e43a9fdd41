"""Providers' outage replies, end to end: scripted servers say exactly what Exchange and the
RFCs say in an outage, and the running exporter reports the right reason in the right phase
on ``/metrics``, ``/probe`` and the status page, in the provider's own words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import NamedTuple

import pytest

from testing import fakeserver
from testing.exporter_process import Running, Samples, start, value

SECRET = "secret-pw-9"


class Case(NamedTuple):
    check: str
    server: fakeserver.Server
    when: str
    """The command answered with the reply ("" for the greeting)."""
    reply: bytes
    reason: str
    phase: str
    words: str
    """What on-call should find in the detail."""


CASES = {
    "greeting_421": Case(
        "smtp_login",
        fakeserver.smtp,
        "",
        b"421 4.3.2 Service not active",
        "unavailable",
        "smtp_connect",
        "4.3.2 Service not active",
    ),
    "login_unavailable": Case(
        "imap_login",
        fakeserver.imap,
        "LOGIN",
        b"NO Server Unavailable. 15",
        "unavailable",
        "imap_auth",
        "Server Unavailable. 15",
    ),
    "not_connected": Case(
        "imap_login",
        fakeserver.imap,
        "SELECT",
        b"BAD User is authenticated but not connected.",
        "mailbox_unavailable",
        "imap_select",
        "User is authenticated but not connected.",
    ),
}


@pytest.fixture
async def exporter(tmp_path: Path) -> AsyncIterator[Running]:
    async with AsyncExitStack() as stack:
        entries = []
        for name, case in CASES.items():
            handler = case.server("reply", case.when, case.reply)
            port = await stack.enter_async_context(fakeserver.serve(handler))
            section = "smtp" if case.check == "smtp_login" else "imap"
            entries.append(
                f"  - name: {name}\n"
                f"    checks: [{case.check}]\n"
                "    interval: 1s\n    timeout: 1s\n"
                f"    {section}: {{host: 127.0.0.1, port: {port}, tls: none, "
                f"username: u@x.org, password: {SECRET}}}\n"
            )
        config = tmp_path / "c.yml"
        config.write_text("targets:\n" + "".join(entries))
        async for running in start(config, tmp_path):
            yield running


async def test_outage_replies_have_their_reason_and_phase(exporter: Running) -> None:
    def reported(samples: Samples) -> bool:
        return all(
            value(
                samples,
                "mailbox_probe_failed_info",
                target=name,
                check=case.check,
                phase=case.phase,
                reason=case.reason,
            )
            == 1
            for name, case in CASES.items()
        )

    await exporter.until(reported, seconds=15)
    for name, case in CASES.items():
        status, text = await exporter.get(f"/probe?target={name}&check={case.check}")
        assert status == 200
        assert f'probe_failed_info{{phase="{case.phase}",reason="{case.reason}"}} 1' in text
    status, body = await exporter.get("/api/v1/status")
    details = {
        target["name"]: target["checks"][0]["last"]["detail"]
        for target in json.loads(body)["targets"]
    }
    for name, case in CASES.items():
        assert case.words in details[name], (name, details[name])
        assert SECRET not in details[name]

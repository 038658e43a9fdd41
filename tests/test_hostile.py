"""Hostile servers: every misbehaviour ends the probe within its timeout plus one second, with
the right reason, in bounded memory, leaking neither sockets nor tasks, and never holding up
other targets or a scrape."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from exporter import config, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from exporter.result import ProbeResult
from testing import fakeserver
from testing.exporter_process import start, value
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

TIMEOUT = 2.0


def _target(smtp_port: int, imap_port: int, tls: str = "none", timeout: float = TIMEOUT) -> Target:
    return config.parse(
        "targets:\n"
        "  - name: hostile\n"
        f"    timeout: {timeout * 1000:.0f}ms\n"
        f"    smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: {tls}, username: u@x.org, "
        "password: secret-pw}\n"
        f"    imap: {{host: 127.0.0.1, port: {imap_port}, tls: {tls}, username: u@x.org, "
        "password: secret-pw}\n"
    ).targets[0]


IMAP_CASES = [
    ("never greets", "silent", "", "none", Reason.TIMEOUT, Phase.IMAP_CONNECT),
    ("one byte a second", "dribble", "", "none", Reason.TIMEOUT, Phase.IMAP_CONNECT),
    ("endless line", "endless_line", "", "none", Reason.PROTOCOL_ERROR, Phase.IMAP_CONNECT),
    ("100 MB literal", "huge_literal", "", "none", Reason.PROTOCOL_ERROR, Phase.IMAP_CONNECT),
    ("garbage greeting", "garbage", "", "none", Reason.PROTOCOL_ERROR, Phase.IMAP_CONNECT),
    ("garbage after LOGIN", "garbage", "LOGIN", "none", Reason.PROTOCOL_ERROR, Phase.IMAP_AUTH),
    ("BYE at LOGIN", "bye", "LOGIN", "none", Reason.NETWORK, Phase.IMAP_AUTH),
    ("BYE at SELECT", "bye", "SELECT", "none", Reason.NETWORK, Phase.IMAP_SELECT),
    ("reset at LOGIN", "reset", "LOGIN", "none", Reason.NETWORK, Phase.IMAP_AUTH),
    ("silent after SELECT", "silent", "SELECT", "none", Reason.TIMEOUT, Phase.IMAP_SELECT),
    ("STARTTLS never handshakes", "no_handshake", "", "starttls", Reason.TIMEOUT, Phase.IMAP_TLS),
]

SMTP_CASES = [
    ("never greets", "silent", "", "none", Reason.TIMEOUT, Phase.SMTP_CONNECT),
    ("one byte a second", "dribble", "", "none", Reason.TIMEOUT, Phase.SMTP_CONNECT),
    ("endless line", "endless_line", "", "none", Reason.PROTOCOL_ERROR, Phase.SMTP_CONNECT),
    ("garbage greeting", "garbage", "", "none", Reason.PROTOCOL_ERROR, Phase.SMTP_CONNECT),
    ("hangs up at EHLO", "hangup", "EHLO", "none", Reason.NETWORK, Phase.SMTP_CONNECT),
    ("reset at AUTH", "reset", "AUTH", "none", Reason.NETWORK, Phase.SMTP_AUTH),
    ("silent after MAIL", "silent", "MAIL", "none", Reason.TIMEOUT, Phase.SMTP_SEND),
    ("STARTTLS never handshakes", "no_handshake", "", "starttls", Reason.TIMEOUT, Phase.SMTP_TLS),
]


async def _probe(
    check: Check, target: Target, context: ProbeContext
) -> tuple[probes.ProbeResult, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = await probes.run(target, check, context)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


@pytest.mark.parametrize(
    ("name", "misbehave", "at", "tls", "reason", "phase"),
    IMAP_CASES,
    ids=[c[0] for c in IMAP_CASES],
)
async def test_hostile_imap(
    name: str,
    misbehave: str,
    at: str,
    tls: str,
    reason: Reason,
    phase: Phase,
    context: ProbeContext,
) -> None:
    async with fakeserver.serve(fakeserver.imap(misbehave, at)) as port:
        result, elapsed, peak = await _probe(Check.IMAP_LOGIN, _target(1, port, tls), context)
    assert (result.reason, result.phase) == (reason, phase), result
    assert elapsed <= TIMEOUT + 1, elapsed
    assert peak < 8 * 1024 * 1024, f"{peak} bytes allocated at the peak"
    assert "secret-pw" not in result.detail


@pytest.mark.parametrize(
    ("name", "misbehave", "at", "tls", "reason", "phase"),
    SMTP_CASES,
    ids=[c[0] for c in SMTP_CASES],
)
async def test_hostile_smtp(
    name: str,
    misbehave: str,
    at: str,
    tls: str,
    reason: Reason,
    phase: Phase,
    context: ProbeContext,
) -> None:
    check = Check.ROUNDTRIP if at == "MAIL" else Check.SMTP_LOGIN
    async with (
        fakeserver.serve(fakeserver.smtp(misbehave, at)) as port,
        fakeserver.serve(fakeserver.imap("none")) as imap_port,
    ):
        result, elapsed, peak = await _probe(check, _target(port, imap_port, tls), context)
    assert (result.reason, result.phase) == (reason, phase), result
    assert elapsed <= TIMEOUT + 1, elapsed
    assert peak < 8 * 1024 * 1024, f"{peak} bytes allocated at the peak"


async def test_idle_that_never_returns(context: ProbeContext) -> None:
    async with (
        fakeserver.serve(fakeserver.imap("silent", "DONE")) as imap_port,
        fakeserver.serve(fakeserver.smtp("none")) as smtp_port,
    ):
        target = _target(smtp_port, imap_port)
        watching = replace(target, imap=replace(target.imap, idle=True))  # type: ignore[arg-type]
        result, elapsed, _ = await _probe(Check.ROUNDTRIP, watching, context)
    assert (result.reason, result.phase) == (Reason.TIMEOUT, Phase.DELIVERY), result
    assert elapsed <= TIMEOUT + 1


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.services  # seconds of CPU: not in the quick tier
async def test_a_thousand_failing_probes_leak_nothing(context: ProbeContext) -> None:
    behaviours = [("reset", "LOGIN"), ("bye", "SELECT"), ("garbage", "LOGIN"), ("silent", "")]
    async with AsyncExitStack() as stack:
        ports = [
            await stack.enter_async_context(fakeserver.serve(fakeserver.imap(m, at)))
            for m, at in behaviours
        ]
        targets = [_target(1, port, timeout=0.3) for port in ports]

        async def batch(n: int) -> list[ProbeResult]:
            return await asyncio.gather(
                *(
                    probes.run(
                        targets[i % len(targets)],
                        Check.ROUNDTRIP if i % 2 else Check.IMAP_LOGIN,
                        context,
                    )
                    for i in range(n)
                )
            )

        await batch(40)
        await asyncio.sleep(0.2)
        gc.collect()
        descriptors, tasks = _open_descriptors(), len(asyncio.all_tasks())
        results = []
        for _ in range(25):
            results += await batch(40)
        await asyncio.sleep(0.2)
        gc.collect()
        assert len(results) == 1000
        assert not any(r.success for r in results)
        assert _open_descriptors() <= descriptors + 2, "sockets leaked"
        assert len(asyncio.all_tasks()) <= tasks + 2, "tasks leaked"


async def test_a_hung_server_holds_up_neither_others_nor_scrapes(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    async with fakeserver.serve(fakeserver.imap("silent")) as port:
        hung = target_yaml(mailstack, user, name="hung", interval="3s", timeout="3s").replace(
            f"port: {mailstack.imap_port}", f"port: {port}"
        )
        healthy = target_yaml(
            mailstack,
            user,
            name="healthy",
            interval="1s",
            timeout="1s",
            extra="    checks: [smtp_login]\n",
        )
        path = tmp_path / "c.yml"
        path.write_text("global: {max_concurrent_probes: 8}\ntargets:\n" + hung + healthy)
        async for running in start(path, tmp_path):
            await running.until(
                lambda s: (
                    (value(s, "mailbox_probes_total", target="healthy", check="smtp_login") or 0)
                    >= 1
                    and (
                        value(
                            s,
                            "mailbox_probe_failures_total",
                            target="hung",
                            check="imap_login",
                            reason="timeout",
                        )
                        or 0
                    )
                    >= 1
                ),
                seconds=30,
            )
            before = (
                value(
                    await running.samples(),
                    "mailbox_probes_total",
                    target="healthy",
                    check="smtp_login",
                )
                or 0
            )
            slowest = 0.0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                started = time.monotonic()
                await running.samples()
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.1)
            samples = await running.samples()
            assert (
                value(samples, "mailbox_probes_total", target="healthy", check="smtp_login") or 0
            ) >= before + 3, "the healthy target kept its schedule"
            assert slowest < 0.5, f"a scrape took {slowest:.2f}s"

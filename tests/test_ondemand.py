"""On-demand probes: ``GET /probe`` and ``mailbox-exporter probe``, against the real stack."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from random import Random

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as configuration
from exporter.app import Exporter
from exporter.outcome import Check, Reason
from exporter.shard import ALL
from testing import fakeserver
from testing.exporter_process import Running, start
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_context, probe_files, target_yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def exporter(tmp_path: Path, mailstack: MailStack, user: MailUser) -> AsyncIterator[Running]:
    """An exporter whose scheduled probes are rare, so that only on-demand ones run."""
    config = tmp_path / "c.yml"
    config.write_text("targets:\n" + target_yaml(mailstack, user, interval="10m", timeout="10s"))
    async for running in start(config, tmp_path):
        yield running


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("check", ["roundtrip", "smtp_login", "imap_login"])
async def test_probe_answers_with_that_probes_metrics(exporter: Running, check: str) -> None:
    status, text = await exporter.get(f"/probe?target=local&check={check}")
    assert status == 200, text
    samples = _samples(text)
    assert samples[("probe_success", frozenset())] == 1
    assert samples[("probe_duration_seconds", frozenset())] > 0
    phases = {
        dict(labels)["phase"] for name, labels in samples if name == "probe_phase_duration_seconds"
    }
    assert {"roundtrip": "delivery", "smtp_login": "smtp_auth", "imap_login": "imap_select"}[
        check
    ] in phases
    assert not any(name.startswith("mailbox_") for name, _ in samples), "that probe's metrics only"


async def test_probe_reports_the_reason(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n"
        + target_yaml(mailstack, user, password="wrong-password-1", interval="10m", timeout="10s")
    )
    async for running in start(config, tmp_path):
        status, text = await running.get("/probe?target=local&check=imap_login")
        assert status == 200
        samples = _samples(text)
        assert samples[("probe_success", frozenset())] == 0
        key = (
            "probe_failed_info",
            frozenset({("phase", "imap_auth"), ("reason", "auth_rejected")}),
        )
        assert samples[key] == 1
        status, report = await running.get("/probe?target=local&check=smtp_login&debug=true")
        assert status == 200
        assert "AUTH PLAIN <redacted>" in report and "535" in report
        assert "result: FAILED in phase smtp_auth: auth_rejected" in report
        assert "wrong-password-1" not in report


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("target=elsewhere.example.com", "unknown target 'elsewhere.example.com'"),
        ("check=imap_login", "the target parameter is missing"),
        ("target=local&check=smtp_logout", "unknown check 'smtp_logout'"),
        ("target=local&check=pop3_login", "target 'local' does not run the pop3_login check"),
    ],
)
async def test_only_configured_targets_can_be_probed(
    exporter: Running, query: str, message: str
) -> None:
    status, text = await exporter.get(f"/probe?{query}")
    assert status == 400
    assert message in text
    await asyncio.sleep(0.2)
    assert "probe finished" not in exporter.log.read_text()


async def test_debug_transcript_has_no_credentials(exporter: Running, user: MailUser) -> None:
    status, report = await exporter.get("/probe?target=local&check=roundtrip&debug=true")
    assert status == 200, report
    for step in ("LOGIN", "<redacted>", "AUTH PLAIN", "MAIL FROM", "UID EXPUNGE", "delivery"):
        assert step in report, step
    assert "result: success" in report
    assert user.password not in report


async def test_probe_fits_within_the_scrape_timeout(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    async with fakeserver.serve(fakeserver.never_greet) as port:
        config = tmp_path / "c.yml"
        text = target_yaml(mailstack, user, interval="10m", timeout="10s").replace(
            f"port: {mailstack.imap_port}", f"port: {port}"
        )
        config.write_text("targets:\n" + text)
        async for running in start(config, tmp_path):
            started = time.monotonic()
            async with running.session.get(
                running.url + "/probe?target=local&check=imap_login",
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                body = await response.text()
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, elapsed
            samples = _samples(body)
            assert samples[("probe_success", frozenset())] == 0
            assert (
                samples[
                    (
                        "probe_failed_info",
                        frozenset({("phase", "imap_connect"), ("reason", "timeout")}),
                    )
                ]
                == 1
            )


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(config),
            "--storage.path",
            str(config.parent / "state"),
            "probe",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )


def test_probe_command_prints_the_transcript_and_exits_by_result(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    good = tmp_path / "good.yml"
    good.write_text("targets:\n" + target_yaml(mailstack, user))
    run = _cli(good, "local")
    assert run.returncode == 0, run.stdout + run.stderr
    for check in ("roundtrip", "smtp_login", "imap_login"):
        assert f"{check} probe of target local" in run.stdout
    assert run.stdout.count("result: success") == 3
    assert user.password not in run.stdout + run.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text("targets:\n" + target_yaml(mailstack, user, password="not-it-42"))
    run = _cli(bad, "local", "--check", "imap_login")
    assert run.returncode == 1
    assert "result: FAILED in phase imap_auth: auth_rejected" in run.stdout
    assert "not-it-42" not in run.stdout + run.stderr

    run = _cli(good, "nowhere")
    assert run.returncode == 1
    assert "unknown target 'nowhere'; configured targets: local" in run.stderr


async def test_an_on_demand_message_that_arrives_late_is_cleaned_by_the_schedule(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """On-demand and scheduled probes share one probe context (key and sent ids), so the
    message of an on-demand round trip that gave up is recognised and deleted later."""
    config = tmp_path / "c.yml"
    config.write_text("targets:\n" + target_yaml(mailstack, user, interval="10m", timeout="10s"))
    exporter = Exporter(
        config,
        ALL,
        probe_context(),
        Random(1),
        key_persistent=False,
    )
    loaded = configuration.load(config)
    target = loaded.targets[0]
    exporter.config = loaded
    mailstack.defer_delivery()
    try:
        stalled = await exporter.probe_now("local", "roundtrip", 3.0, False)
    finally:
        mailstack.resume_delivery()
    try:
        assert stalled.reason is Reason.NOT_DELIVERED, stalled
        deadline = time.monotonic() + 10
        while not probe_files(mailstack, user) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(probe_files(mailstack, user)) == 1, "the on-demand probe was delivered"

        scheduled = await exporter.run_scheduled(target, Check.ROUNDTRIP)
        assert scheduled.success, scheduled
        assert scheduled.found.late_arrivals == 1
        assert scheduled.found.cleanup_deleted == 2
        assert probe_files(mailstack, user) == []
    finally:
        await exporter.stop()


def _sent_to(mailstack: MailStack, user: MailUser) -> int:
    """Messages Postfix has delivered to the user's mailbox, by its own log."""
    log = mailstack.postfix_log.read_text(errors="replace")
    return sum(
        1 for line in log.splitlines() if f"to=<{user.address}>" in line and "status=sent" in line
    )


async def test_a_burst_of_on_demand_round_trips_sends_one_message(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    other = mailstack.add_user(f"{user.name}-other", "pw-other-1")
    config = tmp_path / "c.yml"
    config.write_text(
        "global: {on_demand: {roundtrip_every: 1m, login_every: 10s}}\n"
        "targets:\n"
        + target_yaml(
            mailstack,
            user,
            interval="{roundtrip: 24h, smtp_login: 1s, imap_login: 1s}",
            timeout="{roundtrip: 10s, smtp_login: 1s, imap_login: 1s}",
        )
        + target_yaml(mailstack, other, name="other", interval="24h", timeout="10s")
    )
    login = frozenset({("target", "local"), ("check", "imap_login")})
    async for running in start(config, tmp_path):
        scheduled = (await running.samples()).get(("mailbox_probes_total", login), 0)
        before = _sent_to(mailstack, user)
        answers = await asyncio.gather(
            *(running.get("/probe?target=local&check=roundtrip") for _ in range(30))
        )
        assert [status for status, _ in answers] == [200] * 30
        assert len({text for _, text in answers}) == 1, "all thirty share one run"
        assert _samples(answers[0][1])[("probe_success", frozenset())] == 1
        await asyncio.sleep(1)
        assert _sent_to(mailstack, user) - before == 1, "exactly one message was sent"

        async with running.session.get(
            running.url + "/probe?target=local&check=roundtrip"
        ) as response:
            assert response.status == 429
            retry_after = int(response.headers["Retry-After"])
            assert 50 <= retry_after <= 60
        status, text = await running.get("/probe?target=other&check=roundtrip")
        assert status == 200 and _samples(text)[("probe_success", frozenset())] == 1
        status, _ = await running.get("/probe?target=local&check=imap_login")
        assert status == 200, "a login check is rationed apart from round trips"
        samples = await running.samples()
        refused = ("mailbox_on_demand_refused_total", {"target": "local", "check": "roundtrip"})
        assert samples[(refused[0], frozenset(refused[1].items()))] == 1
        assert _sent_to(mailstack, user) - before == 1
        went_on = scheduled + 3  # the target's scheduled probes go on
        await running.until(
            lambda now, n=went_on: now.get(("mailbox_probes_total", login), 0) >= n, seconds=10
        )

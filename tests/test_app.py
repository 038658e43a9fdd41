"""The exporter as users run it: a process, its HTTP endpoints, reloads and its logs."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from random import Random

import pytest

from exporter.app import Exporter
from exporter.config import load
from exporter.config.checks import CHECKS
from exporter.message import PROBE_HEADER
from exporter.outcome import Check
from exporter.shard import ALL
from testing.exporter_process import Running, Samples, start, value
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_context, probe_files, target_yaml


@pytest.fixture
def config_file(tmp_path: Path, mailstack: MailStack, user: MailUser) -> Path:
    path = tmp_path / "mailbox-exporter.yml"
    path.write_text("targets:\n" + target_yaml(mailstack, user, interval="3s", timeout="3s"))
    return path


@pytest.fixture
async def exporter(config_file: Path, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start(config_file, tmp_path, "--log.level", "debug"):
        yield running


async def test_probes_appear_in_metrics(
    exporter: Running, mailstack: MailStack, user: MailUser
) -> None:
    def all_checks_succeeded(s: Samples) -> bool:
        return all(
            value(s, "mailbox_probe_success", target="local", check=c) == 1
            for c in ("roundtrip", "smtp_login", "imap_login")
        )

    await exporter.until(all_checks_succeeded)
    samples = await exporter.samples()
    rt = {"target": "local", "check": "roundtrip"}
    for phase in (
        "imap_connect",
        "imap_auth",
        "imap_select",
        "smtp_connect",
        "smtp_auth",
        "smtp_send",
        "delivery",
        "imap_fetch",
        "imap_cleanup",
    ):
        assert value(samples, "mailbox_probe_phase_duration_seconds", **rt, phase=phase) is not None
    assert (value(samples, "mailbox_roundtrip_delivery_seconds_count", target="local") or 0) >= 1
    assert (value(samples, "mailbox_cleanup_deleted_total", target="local") or 0) >= 1
    for check in (Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN):
        # Failures by reason appear at their first one; the count of all is there from the start.
        assert value(samples, "mailbox_probes_failed_total", target="local", check=check) == 0
        for reason in CHECKS[check].reasons:
            assert (
                value(
                    samples,
                    "mailbox_probe_failures_total",
                    target="local",
                    check=check.value,
                    reason=reason.value,
                )
                is None
            )
        assert (value(samples, "mailbox_probes_total", target="local", check=check) or 0) >= 1
        # While a check succeeds, its last probe is its last success.
        assert value(
            samples, "mailbox_probe_last_timestamp_seconds", target="local", check=check
        ) == pytest.approx(time.time(), abs=30)
        assert (
            value(
                samples,
                "mailbox_probe_last_success_timestamp_seconds",
                target="local",
                check=check,
            )
            is None
        )
    assert value(samples, "mailbox_exporter_config_last_reload_successful") == 1
    assert value(samples, "mailbox_exporter_build_info", version="0.1.0") == 1

    status, page = await exporter.get("/")
    assert status == 200 and 'href="metrics"' in page
    assert (await exporter.get("/-/healthy"))[0] == 200


async def test_promtool_accepts_the_exposition(exporter: Running) -> None:
    await exporter.until(
        lambda s: value(s, "mailbox_probes_total", target="local", check="imap_login") is not None
    )
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/bootstrap"
    _, text = await exporter.get("/metrics")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_broken_file_on_reload_keeps_the_old_config(
    exporter: Running, config_file: Path
) -> None:
    def probes(s: Samples) -> float:
        return value(s, "mailbox_probes_total", target="local", check="smtp_login") or 0

    good = config_file.read_text()
    config_file.write_text(good + "    bogus_key: 1\n")
    status, body = await exporter.post("/-/reload")
    assert status == 500 and "bogus_key: unknown key" in body
    samples = await exporter.samples()
    assert value(samples, "mailbox_exporter_config_last_reload_successful") == 0
    before = probes(samples)
    await exporter.until(lambda s: probes(s) >= before + 1, seconds=15)

    config_file.write_text("targets: [\n")
    exporter.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    samples = await exporter.samples()
    assert value(samples, "mailbox_exporter_config_last_reload_successful") == 0
    before = probes(samples)
    await exporter.until(lambda s: probes(s) >= before + 1, seconds=15)

    config_file.write_text(good)
    status, _ = await exporter.post("/-/reload")
    assert status == 200
    assert value(await exporter.samples(), "mailbox_exporter_config_last_reload_successful") == 1


async def test_a_target_removed_by_reload_loses_its_series(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    config = tmp_path / "two.yml"
    two = (
        "targets:\n"
        + target_yaml(mailstack, user, name="kept", interval="3s", timeout="3s")
        + target_yaml(mailstack, user, name="gone", interval="3s", timeout="3s")
    )
    config.write_text(
        two.replace("    timeout: 3s\n", "    timeout: 3s\n    checks: [smtp_login]\n")
    )
    async for running in start(config, tmp_path):
        await running.until(
            lambda s: (
                value(s, "mailbox_probes_total", target="gone", check="smtp_login") is not None
            )
        )
        config.write_text(config.read_text().split("  - name: gone")[0])
        assert (await running.post("/-/reload"))[0] == 200
        _, text = await running.get("/metrics")
        assert 'target="gone"' not in text
        assert 'target="kept"' in text


async def test_passwords_stay_out_of_metrics_pages_and_debug_logs(
    exporter: Running, mailstack: MailStack, user: MailUser, tmp_path: Path
) -> None:
    await exporter.until(
        lambda s: value(s, "mailbox_probe_success", target="local", check="roundtrip") == 1
    )
    exposed = [(await exporter.get(path))[1] for path in ("/metrics", "/", "/-/ready")]
    exporter.process.send_signal(signal.SIGTERM)
    exporter.process.wait(10)
    log = exporter.log.read_text()
    assert "level=debug" in log or "probe finished" in log
    for text in [*exposed, log]:
        assert user.password not in text
    assert probe_files(mailstack, user) == []


async def test_wrong_password_fails_every_check_in_its_auth_phase(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    config = tmp_path / "wrong.yml"
    config.write_text(
        "targets:\n"
        + target_yaml(mailstack, user, password="wrong-pw-123", interval="3s", timeout="3s")
    )
    async for running in start(config, tmp_path, "--log.level", "debug"):
        await running.until(
            lambda s: all(
                value(
                    s,
                    "mailbox_probe_failures_total",
                    target="local",
                    check=c,
                    reason="auth_rejected",
                )
                for c in ("roundtrip", "smtp_login", "imap_login")
            )
        )
        samples = await running.samples()
        for check in ("roundtrip", "smtp_login", "imap_login"):
            assert value(samples, "mailbox_probe_success", target="local", check=check) == 0
    log = (tmp_path / "exporter.log").read_text()
    assert "wrong-pw-123" not in log
    assert re.search(
        r"check=smtp_login outcome=failure phase=smtp_auth reason=auth_rejected", log
    ), log[-2000:]


def test_config_check_exits_nonzero_with_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("targets:\n  - name: a\n    smtp: {host: h, port: x}\n")
    run = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(bad), "--config.check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert run.returncode == 1
    assert "line 3: targets[0].smtp.port: expected an integer" in run.stderr
    assert "Traceback" not in run.stderr


ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
ALIAS_BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + ALIAS_BOMB
ALIAS_BOMB += "targets: *i\n"
"""Ten lines that expand to 9**9 (387 million) values."""


def test_an_alias_bomb_is_refused_at_once_naming_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(ALIAS_BOMB)
    # The CPU time of the check (Python's start included): parallel tests share the cores.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(bomb), "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert done.returncode == 1
    assert "line 1: the document expands to more than 100,000 keys and values" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 1.0, f"{elapsed:.2f}s"


async def test_an_alias_bomb_on_reload_holds_up_neither_scrapes_nor_probes(
    exporter: Running, config_file: Path
) -> None:
    """Scrapes are answered on the event loop that runs the probes: while they stay fast, no
    probe waited either."""

    def probes(s: Samples) -> float:
        return value(s, "mailbox_probes_total", target="local", check="imap_login") or 0

    await exporter.until(lambda s: probes(s) >= 1)
    good = config_file.read_text()
    config_file.write_text(ALIAS_BOMB)
    latencies: list[float] = []
    exporter.process.send_signal(signal.SIGHUP)
    until = time.monotonic() + 2.0
    while time.monotonic() < until:
        begin = time.monotonic()
        status, _ = await exporter.get("/metrics")
        latencies.append(time.monotonic() - begin)
        assert status == 200
        await asyncio.sleep(0.02)
    samples = await exporter.samples()
    assert value(samples, "mailbox_exporter_config_last_reload_successful") == 0
    assert "expands to more than 100,000" in exporter.log.read_text()
    # Loose enough for a machine busy with other tests; a reload on the event loop would hold
    # a scrape for the whole refusal (about 0.75 s).
    assert max(latencies) < 0.5, f"slowest scrape during the reload: {max(latencies):.3f}s"
    before = probes(samples)
    await exporter.until(lambda s: probes(s) >= before + 1, seconds=15)
    config_file.write_text(good)
    print(f"scrapes during the reload: {len(latencies)}, slowest {max(latencies) * 1000:.1f} ms")


async def test_the_key_survives_a_restart_and_no_probe_value_depends_on_a_secret(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """With the default configuration (no probe_key_file) the key is made at first start in
    the state directory and read by the next process, so that it recognises the messages the
    old one sent. The probe messages sent with two passwords carry the same prefix: nothing a
    reader of a probe sees is a function of the mailbox's credentials."""
    config = tmp_path / "c.yml"
    storage = tmp_path / "state"
    mailstack.defer_delivery()
    try:
        for run, password in enumerate(("first-Pa55word", "second-S3cret")):
            user = mailstack.add_user(user.name, password)
            config.write_text(
                "targets:\n" + target_yaml(mailstack, user, interval="1h", timeout="6s")
            )
            async for running in start(config, tmp_path / f"run{run}", storage=storage):
                status, text = await running.get("/probe?target=local&check=roundtrip")
                assert status == 200 and 'reason="not_delivered"' in text
                samples = await running.samples()
                assert value(samples, "mailbox_exporter_probe_key_persistent") == 1
    finally:
        mailstack.resume_delivery()
    key_file = storage / "probe.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    deadline = time.monotonic() + 10
    while len(probe_files(mailstack, user)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    sent = [path.read_bytes() for path in probe_files(mailstack, user)]
    assert len(sent) == 2, "both deferred probes were delivered"
    first, second = (_what_a_reader_sees(raw) for raw in sent)
    assert first == second, "a probe message shows nothing that depends on the password"

    config.write_text("targets:\n" + target_yaml(mailstack, user, interval="2s", timeout="2s"))
    async for third in start(config, tmp_path / "run2", storage=storage):
        await third.until(
            lambda s: (value(s, "mailbox_roundtrip_late_arrivals_total", target="local") or 0) >= 2,
            seconds=15,
        )
    assert probe_files(mailstack, user) == []


def _what_a_reader_sees(raw: bytes) -> dict[str, str]:
    """A delivered probe's own fields and body, with what differs between any two probes (when
    and its nonce: the id less its prefix, and the Date) taken out."""
    parsed = message_from_bytes(raw, policy=default)
    probe_id = str(parsed[PROBE_HEADER])
    _, made, nonce, mac = probe_id.split(".")
    own = ("From", "To", "Subject", "Message-ID", PROBE_HEADER, "Auto-Submitted")
    shown = {name: str(parsed[name]) for name in own}
    shown["body"] = parsed.get_content()
    return {
        name: text.replace(f"{made}.{nonce}.{mac}", "<per probe>") for name, text in shown.items()
    }


def test_a_log_value_ending_in_a_line_break_is_quoted() -> None:
    """A server's words end up in log values: one ending in a newline must not end the line."""
    import logging

    from exporter import logs

    record = logging.LogRecord("exporter", logging.INFO, __file__, 1, "probe finished", (), None)
    record.fields = {"detail": "closing\n", "target": "a"}
    line = logs._Formatter("logfmt").format(record)
    assert "\n" not in line and 'detail="closing\\n"' in line


async def test_what_is_alive_after_every_check_ran_is_frozen_out_of_collections(
    tmp_path: Path,
) -> None:
    """An interval and a timeout after a load, every check has run: what is alive then is
    handed to ``gc.freeze()`` (a full collection at 10,000 targets held the loop for 1.5 s);
    a reload starts the wait afresh."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    config_file = tmp_path / "config.yml"
    config_file.write_text(
        "targets:\n  - name: t\n    checks: [smtp_login]\n    interval: 1s\n    timeout: 500ms\n"
        f"    smtp: {{host: 127.0.0.1, port: {port}, tls: none, username: u, password: p}}\n"
    )
    gc.unfreeze()
    exporter = Exporter(config_file, ALL, probe_context(), Random(1), key_persistent=False)
    try:
        exporter.start(load(config_file))
        await asyncio.sleep(1.0)
        assert await exporter.reload() is None
        await asyncio.sleep(1.0)
        assert gc.get_freeze_count() == 0, "the reload started the wait afresh"
        await asyncio.sleep(1.0)
        assert gc.get_freeze_count() > 0
    finally:
        await exporter.stop()
        gc.unfreeze()

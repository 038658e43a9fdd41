"""The lock-out guard against the real stack: with a wrong password the servers see few failed
logins, the failure keeps being reported, and the right password is taken at once on reload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from testing.exporter_process import Running, start, value
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

AFTER, INITIAL, MAXIMUM = 3, 2.0, 8.0
WINDOW = 40.0
PROTOCOLS = 2
"""SMTP and IMAP: each server's refusals are counted apart."""
CHECKS_PER_PROTOCOL = 2
"""Checks that log in to each: its login check and the round trip."""


def _failed_logins(mailstack: MailStack, user: MailUser) -> int:
    """Failed logins of the user, as Dovecot (IMAP) and Postfix (SMTP AUTH) logged them."""
    text = mailstack.dovecot_log.read_text(errors="replace") + mailstack.postfix_log.read_text(
        errors="replace"
    )
    return sum(
        1
        for line in text.splitlines()
        if user.address in line and ("auth failed" in line or "authentication failed" in line)
    )


def bound(window: float) -> int:
    """Failed logins the guard allows in ``window`` seconds, for each protocol: ``after``
    refusals (and one more per other check already under way when the last of them came back),
    then one trial at the end of each wait, the waits doubling from ``initial`` to
    ``maximum``."""
    allowed, elapsed, wait = AFTER + (CHECKS_PER_PROTOCOL - 1), 0.0, INITIAL
    while elapsed + wait <= window:
        elapsed += wait
        allowed += 1
        wait = min(wait * 2, MAXIMUM)
    return PROTOCOLS * allowed


def _config(mailstack: MailStack, user: MailUser, password: str) -> str:
    return (
        f"global: {{login_backoff: {{after: {AFTER}, initial: {INITIAL:g}s, max: {MAXIMUM:g}s}}}}\n"
        "targets:\n"
        + target_yaml(
            mailstack,
            user,
            password=password,
            interval="{roundtrip: 2s, smtp_login: 1s, imap_login: 1s}",
            timeout="{roundtrip: 2s, smtp_login: 1s, imap_login: 1s}",
        )
    )


async def test_a_wrong_password_is_tried_rarely_keeps_failing_and_recovers_on_reload(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    config = tmp_path / "c.yml"
    config.write_text(_config(mailstack, user, "wrong-password-7"))
    before = _failed_logins(mailstack, user)
    async for running in start(config, tmp_path):
        started = time.monotonic()
        await asyncio.sleep(WINDOW)
        failed = _failed_logins(mailstack, user) - before
        elapsed = time.monotonic() - started
        unguarded = int(elapsed * (1 + 1 + 1 / 2))
        assert failed <= bound(elapsed), (failed, bound(elapsed), mailstack.log_tail())
        assert failed >= AFTER
        await _still_failing(running)

        config.write_text(_config(mailstack, user, user.password))
        status, _ = await running.post("/-/reload")
        assert status == 200
        reloaded = time.monotonic()
        await running.until(
            lambda s: value(s, "mailbox_probe_success", target="local", check="imap_login") == 1,
            seconds=5,
        )
        assert time.monotonic() - reloaded <= 1 + 1 + 1, "a success within one interval"
        print(
            f"failed logins in {elapsed:.0f}s: {failed} (bound {bound(elapsed)}, "
            f"{unguarded} without the guard)"
        )


async def _still_failing(running: Running) -> None:
    samples = await running.samples()
    for check in ("smtp_login", "imap_login", "roundtrip"):
        labels = {"target": "local", "check": check}
        assert value(samples, "mailbox_probe_success", **labels) == 0
        assert (value(samples, "mailbox_probe_consecutive_failures", **labels) or 0) >= 2
    held = {
        dict(labels)["check"]
        for name, labels in samples
        if name == "mailbox_login_backoff_since_timestamp_seconds"
    }
    assert held, "the metrics show the target backing off"
    failed = {
        (dict(labels)["check"], dict(labels)["reason"])
        for name, labels in samples
        if name == "mailbox_probe_failed_info"
    }
    assert failed == {(c, "auth_rejected") for c in ("smtp_login", "imap_login", "roundtrip")}
    status, page = await running.get("/")
    assert status == 200 and "Logins held back since" in page

"""The lock-out guard, on a clock the test turns: refusals counted by account, back-off
doubling to its ceiling, one trial at a time, a fresh start on success or new credentials."""

from __future__ import annotations

import time

from exporter import config
from exporter.config.checks import CHECKS
from exporter.config.model import LoginBackoff
from exporter.outcome import Check, Phase, Reason
from exporter.probes.guard import LoginGuard
from exporter.result import Findings, ProbeResult

POLICY = LoginBackoff(after=3, initial=60.0, maximum=240.0)


def _targets(password: str = "p", other_password: str = "p") -> tuple[config.Target, ...]:
    return config.parse(
        "defaults:\n"
        f"  smtp: {{host: h, username: u@x.org, password: {password}}}\n"
        f"  imap: {{host: h, username: u@x.org, password: {password}}}\n"
        "targets:\n"
        "  - name: a\n"
        "  - name: b\n"
        "  - name: c\n"
        f"    smtp: {{username: other@x.org, password: {other_password}}}\n"
        f"    imap: {{username: other@x.org, password: {other_password}}}\n"
    ).targets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused(target: config.Target, check: Check, transport: str = "imap") -> ProbeResult:
    return ProbeResult(
        target=target.name,
        check=check,
        success=False,
        started=time.time(),
        duration=0.1,
        reason=Reason.AUTH_REJECTED,
        phase=Phase.IMAP_AUTH,
        detail="NO [AUTHENTICATIONFAILED] Authentication failed.",
        found=Findings(login_refused=transport),
    )


def _other(target: config.Target, check: Check, reason: Reason | None) -> ProbeResult:
    return ProbeResult(
        target=target.name,
        check=check,
        success=reason is None,
        started=time.time(),
        duration=0.1,
        reason=reason,
    )


def test_refusals_of_one_account_count_together_and_hold_every_check_using_it() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a, b, c = _targets()
    for target, check in ((a, Check.IMAP_LOGIN), (b, Check.IMAP_LOGIN), (a, Check.ROUNDTRIP)):
        assert guard.admit(target, check) is None
        guard.record(target, check, _refused(target, check))
    for target in (a, b):
        for check in target.checks:
            hold = guard.admit(target, check)
            assert hold is not None, (target.name, check)
            assert hold.refusals == 3
            held = CHECKS[check].needs(target)[0]
            assert hold.phase is {"smtp": Phase.SMTP_AUTH, "imap": Phase.IMAP_AUTH}[held], (
                "reported in the check's own login phase"
            )
            assert "AUTHENTICATIONFAILED" in hold.detail
    assert guard.admit(c, Check.IMAP_LOGIN) is None, "another account is not held"


def test_the_wait_doubles_to_its_ceiling_with_one_trial_at_a_time() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a = _targets()[0]
    for _ in range(3):
        guard.admit(a, Check.IMAP_LOGIN)
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    waits = []
    for _ in range(5):
        start = clock.now
        while guard.admit(a, Check.IMAP_LOGIN) is not None:
            clock.now += 1
        waits.append(clock.now - start)
        assert guard.admit(a, Check.SMTP_LOGIN) is not None, "one trial at a time"
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    assert waits == [60, 120, 240, 240, 240]


def test_success_or_a_probe_past_login_clears_it_and_other_failures_do_not() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a = _targets()[0]
    for _ in range(2):
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    guard.record(a, Check.IMAP_LOGIN, _other(a, Check.IMAP_LOGIN, Reason.TIMEOUT))
    guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    assert guard.admit(a, Check.IMAP_LOGIN) is not None, "a timeout says nothing of credentials"
    clock.now += 60
    assert guard.admit(a, Check.IMAP_LOGIN) is None
    guard.record(a, Check.IMAP_LOGIN, _other(a, Check.IMAP_LOGIN, None))
    for _ in range(2):
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    assert guard.admit(a, Check.IMAP_LOGIN) is None, "the count started afresh"
    guard.record(a, Check.ROUNDTRIP, _other(a, Check.ROUNDTRIP, Reason.NOT_DELIVERED))
    guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    assert guard.admit(a, Check.IMAP_LOGIN) is None, "not_delivered comes after a login"


def test_new_credentials_start_afresh() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a = _targets(password="wrong")[0]
    for _ in range(3):
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    assert guard.admit(a, Check.IMAP_LOGIN) is not None
    fixed = _targets(password="right")
    guard.keep_only(fixed)
    assert guard.admit(fixed[0], Check.IMAP_LOGIN) is None


def test_a_cancelled_trial_lets_another_probe_try() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a = _targets()[0]
    for _ in range(3):
        guard.record(a, Check.IMAP_LOGIN, _refused(a, Check.IMAP_LOGIN))
    clock.now += 60
    assert guard.admit(a, Check.IMAP_LOGIN) is None, "the trial"
    assert guard.admit(a, Check.SMTP_LOGIN) is not None, "others wait for it"
    guard.release(a, Check.IMAP_LOGIN)
    assert guard.admit(a, Check.SMTP_LOGIN) is None, "a cancelled trial blocks no one"

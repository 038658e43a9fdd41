"""The lock-out guard, on a clock the test turns: refusals counted by account and protocol,
back-off doubling to its ceiling, one trial at a time, a fresh start on a login or new
credentials; logins with tokens never held."""

from __future__ import annotations

import time

from exporter import config, probes
from exporter.config.checks import CHECKS
from exporter.config.model import LoginBackoff
from exporter.outcome import Check, Phase, Reason
from exporter.probes.guard import LoginGuard
from exporter.result import Findings, ProbeResult
from testing.targets import probe_context

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
        phase={"smtp": Phase.SMTP_AUTH, "imap": Phase.IMAP_AUTH, "graph": Phase.GRAPH_AUTH}[
            transport
        ],
        detail="NO [AUTHENTICATIONFAILED] Authentication failed.",
        found=Findings(login_refused=transport),
    )


def _other(
    target: config.Target, check: Check, reason: Reason | None, logged_in: set[str] | None = None
) -> ProbeResult:
    """A probe that ended otherwise; it logged in to ``logged_in`` (by default every server it
    needs when it succeeded, none when it failed)."""
    if logged_in is None:
        logged_in = set(CHECKS[check].needs(target)) if reason is None else set()
    return ProbeResult(
        target=target.name,
        check=check,
        success=reason is None,
        started=time.time(),
        duration=0.1,
        reason=reason,
        found=Findings(logged_in=logged_in),
    )


def test_refusals_of_one_account_count_together_and_hold_every_check_using_it() -> None:
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a, b, c = _targets()
    for target, check in ((a, Check.IMAP_LOGIN), (b, Check.IMAP_LOGIN), (a, Check.ROUNDTRIP)):
        assert guard.admit(target, check) is None
        guard.record(target, check, _refused(target, check))
    for target in (a, b):
        for check in (Check.IMAP_LOGIN, Check.ROUNDTRIP):
            hold = guard.admit(target, check)
            assert hold is not None, (target.name, check)
            assert hold.refusals == 3
            assert hold.phase is Phase.IMAP_AUTH, "reported in the refused server's login phase"
            assert "AUTHENTICATIONFAILED" in hold.detail
        assert guard.admit(target, Check.SMTP_LOGIN) is None, "the SMTP server did not refuse"
    assert guard.admit(c, Check.IMAP_LOGIN) is None, "another account is not held"


def test_a_login_to_another_protocol_never_clears_a_refused_one() -> None:
    """Exchange's IMAP can log in and then fail ("User is authenticated but not connected")
    while its SMTP refuses the same password: the SMTP refusals keep counting."""
    clock = Clock()
    guard = LoginGuard(POLICY, clock)
    a = _targets()[0]
    for _ in range(3):
        guard.record(a, Check.SMTP_LOGIN, _refused(a, Check.SMTP_LOGIN, "smtp"))
        past_login = _other(a, Check.IMAP_LOGIN, Reason.MAILBOX_UNAVAILABLE, {"imap"})
        guard.record(a, Check.IMAP_LOGIN, past_login)
    hold = guard.admit(a, Check.SMTP_LOGIN)
    assert hold is not None and hold.refusals == 3 and hold.phase is Phase.SMTP_AUTH
    assert guard.admit(a, Check.IMAP_LOGIN) is None


def test_logins_with_tokens_are_never_held() -> None:
    """No lock-out exists for an application's credentials or a token: a refused token or a
    403 from a mail API is reported every time, so that the probe after a fix succeeds."""
    guard = LoginGuard(POLICY, Clock())
    graph, oauth_imap = config.parse(
        "targets:\n"
        "  - name: m365\n"
        "    graph: {tenant: t, client_id: c, client_secret: s, mailbox: u@x.org}\n"
        "  - name: xoauth2\n"
        "    imap: {host: h, username: u@x.org, oauth2: {token_url: 'https://idp.example/t',\n"
        "           client_id: c, client_secret: s, scope: x}}\n"
    ).targets
    for _ in range(10):
        guard.record(graph, Check.GRAPH_LOGIN, _refused(graph, Check.GRAPH_LOGIN, "graph"))
        guard.record(oauth_imap, Check.IMAP_LOGIN, _refused(oauth_imap, Check.IMAP_LOGIN))
    assert guard.admit(graph, Check.GRAPH_LOGIN) is None
    assert guard.admit(graph, Check.ROUNDTRIP) is None
    assert guard.admit(oauth_imap, Check.IMAP_LOGIN) is None


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
        assert guard.admit(a, Check.ROUNDTRIP) is not None, "one trial at a time"
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
    delivered = _other(a, Check.ROUNDTRIP, Reason.NOT_DELIVERED, {"smtp", "imap"})
    guard.record(a, Check.ROUNDTRIP, delivered)
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
    assert guard.admit(a, Check.ROUNDTRIP) is not None, "others wait for it"
    guard.release(a, Check.IMAP_LOGIN)
    assert guard.admit(a, Check.ROUNDTRIP) is None, "a cancelled trial blocks no one"


async def test_a_held_probe_keeps_its_own_checks_last_reason() -> None:
    """Dovecot's auth backend fails: IMAP answers "temporary failure" (auth_temporary, never
    counted), Postfix refuses the same logins (counted, then held). The round trip, held back
    for the SMTP refusals, keeps reporting what it last met itself; the SMTP login check keeps
    its refusal. One reason per alert while the outage lasts."""
    a = _targets()[0]
    context = probe_context()
    context.guard.policy = POLICY
    temporary = ProbeResult(
        target=a.name,
        check=Check.ROUNDTRIP,
        success=False,
        started=time.time(),
        duration=0.1,
        reason=Reason.AUTH_TEMPORARY,
        phase=Phase.IMAP_AUTH,
        detail="NO [UNAVAILABLE] Temporary authentication failure.",
    )
    context.guard.record(a, Check.ROUNDTRIP, temporary)
    for _ in range(3):
        refused = _refused(a, Check.SMTP_LOGIN, "smtp")
        context.guard.record(a, Check.SMTP_LOGIN, refused)
    try:
        held = await probes.run(a, Check.ROUNDTRIP, context)
        assert (held.reason, held.phase) == (Reason.AUTH_TEMPORARY, Phase.IMAP_AUTH)
        assert "lock-out guard" in held.detail and "Temporary authentication" in held.detail
        login = await probes.run(a, Check.SMTP_LOGIN, context)
        assert (login.reason, login.phase) == (Reason.AUTH_REJECTED, Phase.SMTP_AUTH)
        assert login.found.backoff_since is not None
    finally:
        await context.close()

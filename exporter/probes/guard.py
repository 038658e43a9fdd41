"""The lock-out guard: the monitor must never be what locks a mailbox account out.

Providers (Microsoft's smart lockout, Google) and fail2ban lock an account after a run of
failed logins. Refusals are counted by credentials, not by target: every check and target
that logs in with the same account counts together. After ``after`` refusals in a row, logins
with those credentials are held back for ``initial`` seconds; then one probe is let through,
and each further refusal doubles the wait up to ``maximum``. A success, or new credentials
after a reload (they are another key), starts afresh.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from exporter.config import Target
from exporter.config.checks import CHECKS
from exporter.config.model import LoginBackoff
from exporter.outcome import Check, Phase, Reason
from exporter.result import ProbeResult
from exporter.transports.registry import TRANSPORTS

Key = tuple[str, str]

LOGGED_IN: Final = frozenset(
    {Reason.NOT_DELIVERED, Reason.MAILBOX_UNAVAILABLE, Reason.SEND_REJECTED}
)
"""Failures that only come after every login of the probe succeeded: they clear the count.
Others (a timeout, a refused connection) say nothing about the credentials and leave it."""


@dataclass
class _Account:
    refusals: int = 0
    since: float | None = None
    """Wall-clock start of the current back-off."""
    until: float = 0.0
    """Monotonic time before which no login is tried."""
    until_wall: float = 0.0
    trying: bool = False
    """One probe is trying the credentials again: the others wait for its answer."""
    detail: str = ""


@dataclass(frozen=True)
class Hold:
    """Why a probe is not logging in now."""

    since: float
    until: float
    """Wall-clock time of the next attempt."""
    refusals: int
    phase: Phase | None
    detail: str


def _key(target: Target, transport: str) -> Key:
    """The account a transport of a target logs in as: its user name and a digest of its
    secrets (so that new credentials are a new account, and no secret is kept)."""
    secrets = "\0".join(sorted(target.section(transport).secrets()))
    digest = hashlib.sha256(secrets.encode()).hexdigest()
    return (target.section(transport).username.lower(), digest)


class LoginGuard:
    def __init__(self, policy: LoginBackoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._accounts: dict[Key, _Account] = {}

    def _keys(self, target: Target, check: Check) -> list[Key]:
        return [_key(target, transport) for transport in CHECKS[check].needs(target)]

    def admit(self, target: Target, check: Check) -> Hold | None:
        """None if the probe may log in now, else why it may not. A probe admitted after a
        back-off is the one trial: it must be followed by :meth:`record`."""
        now = self._clock()
        for transport in CHECKS[check].needs(target):
            account = self._accounts.get(_key(target, transport))
            if account is None or account.since is None:
                continue
            if now < account.until or account.trying:
                return Hold(
                    since=account.since,
                    until=account.until_wall,
                    refusals=account.refusals,
                    phase=TRANSPORTS[transport].auth,
                    detail=account.detail,
                )
        for key in self._keys(target, check):
            account = self._accounts.get(key)
            if account is not None and account.since is not None:
                account.trying = True
        return None

    def release(self, target: Target, check: Check) -> None:
        """The probe ended without a result (cancelled): another may try instead."""
        for key in self._keys(target, check):
            if key in self._accounts:
                self._accounts[key].trying = False

    def record(self, target: Target, check: Check, result: ProbeResult) -> None:
        """Count a refusal of the credentials the probe used, or clear them on success."""
        refused = result.found.login_refused
        for transport in CHECKS[check].needs(target):
            key = _key(target, transport)
            if refused == transport and result.reason is Reason.AUTH_REJECTED:
                self._refused(self._accounts.setdefault(key, _Account()), result)
            elif result.success or result.reason in LOGGED_IN:
                self._accounts.pop(key, None)
            elif key in self._accounts:
                self._accounts[key].trying = False

    def _refused(self, account: _Account, result: ProbeResult) -> None:
        account.trying = False
        account.refusals += 1
        account.detail = result.detail
        beyond = account.refusals - self.policy.after
        if beyond < 0:
            return
        wait = min(self.policy.maximum, self.policy.initial * 2**beyond)
        if account.since is None:
            account.since = time.time()
        account.until = self._clock() + wait
        account.until_wall = time.time() + wait

    def keep_only(self, targets: Iterable[Target]) -> None:
        """Forget accounts no configured target logs in as any more."""
        wanted = {
            _key(target, transport)
            for target in targets
            for check in target.checks
            for transport in CHECKS[check].needs(target)
        }
        self._accounts = {k: a for k, a in self._accounts.items() if k in wanted}

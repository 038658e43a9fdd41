"""The lock-out guard: the monitor must never be what locks a mailbox account out.

Providers (Microsoft's smart lockout, Google) and fail2ban lock an account after a run of
failed password logins. Refusals are counted by account and protocol: the checks and targets
that log in to one protocol's server with the same user name and password count together, and
a login to another protocol's server (which may succeed while this one refuses) says nothing
about them. After ``after`` refusals in a row, such logins are held back for ``initial``
seconds; then one probe is let through, and each further refusal doubles the wait up to
``maximum``. A successful login to that server, or new credentials after a reload (they are
another key), starts afresh.

Only password logins are guarded (EWS with NTLM or Basic among them: an Active Directory
account locks out as a mailbox password does). Tokens (XOAUTH2, the mail APIs) come from an identity
service, and neither Entra ID nor Google locks out an application's client credentials the
way a mailbox password is locked out: holding those probes back would only keep an alert
firing after an administrator fixed a permission.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from exporter.config import ServerConfig, Target
from exporter.config.checks import CHECKS
from exporter.config.model import LoginBackoff
from exporter.config.sections.ews import EwsConfig
from exporter.outcome import Check, Phase, Reason
from exporter.result import ProbeResult
from exporter.transports.registry import TRANSPORTS

Key = tuple[str, str, str]
"""(transport, user name, digest of the password)."""


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
    """Where the refused login happens."""
    detail: str
    """The refusal, in the server's words."""
    last: ProbeResult | None
    """The check's own last failure that was tried, if it failed since it last succeeded: a
    held probe reports that (the roundtrip whose IMAP login failed for the time being while
    the SMTP server refused the password keeps saying so), so that an alert keeps one reason
    while the guard holds back."""


def _guarded(target: Target, check: Check) -> Iterator[tuple[str, Key]]:
    """The password logins a probe makes, each with its account's key: the user name and a
    digest of the password (so that a new password is a new account, and none is kept), per
    protocol."""
    for transport in CHECKS[check].needs(target):
        section = target.section(transport)
        if isinstance(section, ServerConfig | EwsConfig) and section.oauth2 is None:
            secrets = "\0".join(sorted(section.secrets()))
            digest = hashlib.sha256(secrets.encode()).hexdigest()
            yield transport, (transport, section.username.lower(), digest)


class LoginGuard:
    def __init__(self, policy: LoginBackoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._accounts: dict[Key, _Account] = {}
        self._last: dict[tuple[str, Check], ProbeResult] = {}

    def admit(self, target: Target, check: Check) -> Hold | None:
        """None if the probe may log in now, else why it may not. A probe admitted after a
        back-off is the one trial: it must be followed by :meth:`record`."""
        now = self._clock()
        guarded = list(_guarded(target, check))
        for transport, key in guarded:
            account = self._accounts.get(key)
            if account is None or account.since is None:
                continue
            if now < account.until or account.trying:
                return Hold(
                    since=account.since,
                    until=account.until_wall,
                    refusals=account.refusals,
                    phase=TRANSPORTS[transport].auth,
                    detail=account.detail,
                    last=self._last.get((target.name, check)),
                )
        for _, key in guarded:
            account = self._accounts.get(key)
            if account is not None and account.since is not None:
                account.trying = True
        return None

    def release(self, target: Target, check: Check) -> None:
        """The probe ended without a result (cancelled): another may try instead."""
        for _, key in _guarded(target, check):
            if key in self._accounts:
                self._accounts[key].trying = False

    def record(self, target: Target, check: Check, result: ProbeResult) -> None:
        """Count a refusal of the password the probe used, or clear the count of each server
        that let it log in."""
        found = result.found
        if result.success:
            self._last.pop((target.name, check), None)
        else:
            self._last[(target.name, check)] = result
        for transport, key in _guarded(target, check):
            if found.login_refused == transport and result.reason is Reason.AUTH_REJECTED:
                self._refused(self._accounts.setdefault(key, _Account()), result)
            elif transport in found.logged_in:
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
            key
            for target in targets
            for check in target.checks
            for _, key in _guarded(target, check)
        }
        self._accounts = {k: a for k, a in self._accounts.items() if k in wanted}
        checks = {(target.name, check) for target in targets for check in target.checks}
        self._last = {k: r for k, r in self._last.items() if k in checks}

"""Shared fixtures: one real Postfix + Dovecot for the session (per pytest-xdist worker), a
fresh mailbox per test; and the test tiers: `quick` marks every test that starts no real
server, so that ``pytest -m quick`` runs in well under a minute; and the order and grouping
of the tests across pytest-xdist workers."""

from __future__ import annotations

import inspect
import itertools
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import Phase, settings

from exporter.config.model import LoginBackoff
from exporter.message import ProbeIds
from exporter.probes.context import ProbeContext
from exporter.probes.guard import LoginGuard
from exporter.transports.oauth import TokenCache
from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailUser

_users = itertools.count(1)

# A failing property test would otherwise trace every line of every shrinking step (the
# explain phase; Python 3.11 has only sys.settrace for it) and hold its worker for minutes,
# beyond the per-test timeout, which cannot interrupt Hypothesis. The shrunk example is still
# reported. Tests' own @settings keep everything else they set.
settings.register_profile("suite", phases=[phase for phase in Phase if phase != Phase.explain])
settings.load_profile("suite")

SERVICE_FIXTURES = frozenset({"mailstack", "oauth_mailstack"})
"""Fixtures that start real servers: a test using one (directly or through another fixture,
such as `user`) is not quick."""
SERVICE_TYPES = ("MailStack", "DnsServer", "Milters", "CyrusServer")
"""Nor is a test using a fixture of its module that gives one of these (a stack of its own)."""
LONGEST_FIRST = (
    "test_demo.py",
    "test_alerting.py",
    "test_alert_corpus.py",
    "test_deploy_container.py",
    "test_deploy_image.py",
    "test_soak.py",
    "test_lockout.py",
    "test_pop3.py",
    "test_app.py",
    "test_hostile.py",
    "test_scale.py",
    "test_shard.py",
    "test_mixin.py",
)
"""Modules that take longest (measured: half a minute to two minutes a test; the image build
takes two more minutes on a machine that never built its base), in that order: they start
first, the CPU-bound ones (promtool, thousands of targets, jsonnet) beside the ones that
mostly wait, and the quick tests, which fill the gaps best, come last. pytest-xdist hands
the modules out in collection order."""
SPREAD = frozenset(
    f"tests/{name}"
    for name in (
        "test_demo.py",
        "test_app.py",
        "test_hostile.py",
        "test_ondemand.py",
        "test_probes.py",
        "test_secrets.py",
    )
)
"""Modules of long tests that share no fixture of module scope: with --dist loadfile, their
tests go to workers one by one (the rest of a module's tests stay together on one worker,
so that its module-scoped fixtures are made once)."""
QUICK_LIMIT = 15.0
"""Seconds: a quick test taking longer is named at the end of the run, to be marked."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what is quick, then order: the modules of `LONGEST_FIRST`, the other tests that
    are not quick, the quick ones (each group in collection order)."""
    for item in items:
        if _starts_no_server(item):
            item.add_marker(pytest.mark.quick)

    def rank(item: pytest.Item) -> tuple[int, int, bool]:
        quick = item.get_closest_marker("quick") is not None
        if item.path.name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(item.path.name), quick
        return 1 + quick, 0, False

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """--dist loadfile, but the tests of `SPREAD` modules each on the first free worker.

    (--dist loadgroup with xdist_group marks would say it too, but pytest-xdist 3.8 cannot
    group on pytest 9: it renames node ids in a way pytest 9 ignores.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if module in SPREAD else module

    return Scheduling(config, log)


def _fixtures(item: pytest.Item) -> list[pytest.FixtureDef[object]]:
    """The fixtures a test uses, directly or through others (as its module overrides them)."""
    info = getattr(item, "_fixtureinfo", None)
    return [] if info is None else [chain[-1] for chain in info.name2fixturedefs.values()]


def _starts_no_server(item: pytest.Item) -> bool:
    """No service fixture, no fixture giving a server of the harness, no `services` or
    `image` marker (which tests that start servers in their own body, or run long, carry)."""
    if any(item.get_closest_marker(name) for name in ("services", "image")):
        return False
    if not SERVICE_FIXTURES.isdisjoint(item.fixturenames):
        return False
    return not any(
        kind in str(inspect.signature(definition.func).return_annotation)
        for definition in _fixtures(item)
        for kind in SERVICE_TYPES
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the quick tests that were not: they belong in the full run only."""
    slow = sorted(
        (report.duration, report.nodeid)
        for category in ("passed", "failed")
        for report in terminalreporter.stats.get(category, [])
        if getattr(report, "when", "") == "call"
        and "quick" in report.keywords
        and report.duration > QUICK_LIMIT
    )
    if slow:
        terminalreporter.section("quick tests that took long")
        for duration, nodeid in reversed(slow):
            terminalreporter.write_line(f"{duration:6.1f}s {nodeid}: mark it @pytest.mark.services")


@pytest.fixture(scope="session")
def mailstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    stack = MailStack(tmp_path_factory.mktemp("mailstack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def idp() -> Iterator[IdentityProvider]:
    """A token endpoint and introspection endpoint for OAuth2 tests."""
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture(scope="session")
def oauth_mailstack(
    idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailStack]:
    """A mail stack whose Dovecot checks OAuth2 tokens with ``idp`` (passwords work too)."""
    with MailStack(
        tmp_path_factory.mktemp("oauthstack"), oauth2_introspection_url=idp.introspection_url
    ) as mail:
        yield mail


@pytest.fixture
def user(mailstack: MailStack) -> MailUser:
    """A mailbox of its own for each test, so tests never see each other's mail."""
    return mailstack.add_user(f"probe{next(_users)}", "pw-" + secrets.token_hex(8))


@pytest.fixture
async def context() -> AsyncIterator[ProbeContext]:
    """What probes share, built once per test as the exporter builds it once per process."""
    shared = ProbeContext(ids=ProbeIds(), tokens=TokenCache(), guard=LoginGuard(LoginBackoff()))
    try:
        yield shared
    finally:
        await shared.close()

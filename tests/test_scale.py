"""Many targets in one process: large configurations load, alias bombs do not, a scrape writes
only what changed and stays within the series budget."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import classify, config
from exporter.config.checks import CHECKS
from exporter.config.document import MAX_EXPANSION, MAX_NODES, parse_document
from exporter.config.model import ConfigError
from exporter.outcome import Check, Phase, Reason
from exporter.result import Findings, ProbeResult, TlsSession
from exporter.serve import metrics
from exporter.state import Store
from testing.targets import full_config, short_config

# --- configurations of ten thousand targets and more ---------------------------------------------


@pytest.mark.services  # seconds of CPU: not in the quick tier
def test_ten_thousand_targets_load_and_are_checked(tmp_path: Path) -> None:
    """More than a megabyte and a hundred thousand nodes: the limits against alias bombs no
    longer refuse it (its time is in docs/performance.md, not asserted here)."""
    text = full_config(10_000)
    assert len(text) > 2_000_000
    path = tmp_path / "c.yml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "10000 target(s)" in done.stdout


@pytest.mark.services  # seconds of CPU: not in the quick tier
def test_fifty_thousand_short_targets_load() -> None:
    loaded = config.parse(short_config(50_000))
    assert len(loaded.targets) == 50_000
    assert loaded.targets[-1].name == "t49999"


def test_shared_blocks_by_alias_load_however_many_targets_use_them() -> None:
    """Aliases adding several times the nodes the document writes: a shared block for each
    server, named by every target."""
    text = (
        "x-smtp: &smtp {host: 127.0.0.1, port: 25, tls: none, username: u@x.test, password: p}\n"
        "x-imap: &imap {host: 127.0.0.1, port: 143, tls: none, username: u@x.test, password: p}\n"
        "targets:\n"
        + "".join(f"  - {{name: t{i}, smtp: *smtp, imap: *imap}}\n" for i in range(12_000))
    )
    data, _ = parse_document(text)
    assert len(data["targets"]) == 12_000
    assert data["targets"][-1]["imap"]["port"] == 143


BOMB_LEVEL = "{name}: &{name} [{items}]\n"


def _bomb(levels: int, width: int, padding: int) -> str:
    """``levels`` of aliases ``width`` wide (width**levels values), after ``padding`` plain
    targets: a bomb hidden in a large honest file."""
    text = "".join(f"  - {{name: t{i}, smtp: {{host: h}}}}\n" for i in range(padding))
    text = ("targets:\n" + text) if padding else ""
    names = [f"l{level}" for level in range(levels)]
    text += BOMB_LEVEL.format(name=names[0], items=", ".join(["lol"] * width))
    for below, name in itertools.pairwise(names):
        text += BOMB_LEVEL.format(name=name, items=", ".join([f"*{below}"] * width))
    return text


@pytest.mark.services  # seconds of CPU: not in the quick tier
@pytest.mark.parametrize("padding", [0, 20_000])
def test_an_alias_bomb_is_refused_quickly_even_in_a_large_file(padding: int) -> None:
    text = _bomb(9, 9, padding)
    begin = time.process_time()
    with pytest.raises(ConfigError, match=r"expands to more than [\d,]+ keys and values"):
        parse_document(text)
    assert time.process_time() - begin < 10, "refused long before 9**9 values were built"


@settings(derandomize=True, max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.sampled_from([0, 50, 2_000]))
def test_aliases_add_at_most_the_limit_or_the_document_itself(
    levels: int, width: int, padding: int
) -> None:
    """Whatever the nesting and the size around it: a document whose aliases add little
    loads, one whose aliases add more than the limit and more than the whole file is refused
    with the limit, and nothing else happens. (No node is written in less than a character.)"""
    text = _bomb(levels, width, padding)
    expanded = sum(width**level for level in range(1, levels + 1))
    try:
        parse_document(text)
    except ConfigError as exc:
        assert "expands to more than" in str(exc), exc
        assert expanded > MAX_NODES
    else:
        assert expanded <= max(MAX_NODES, MAX_EXPANSION * len(text)) + len(text)


# --- the reasons each check can fail with --------------------------------------------------------

LOGIN_STAGES: dict[Check, dict[str, tuple[str, ...]]] = {
    Check.SMTP_LOGIN: {"smtp": ("greeting", "tls", "auth")},
    Check.IMAP_LOGIN: {"imap": ("greeting", "tls", "auth", "select", "mailbox")},
    Check.POP3_LOGIN: {"pop3": ("greeting", "tls", "auth", "mailbox")},
    Check.GRAPH_LOGIN: {"http": ("auth", "mailbox")},
    Check.GMAIL_LOGIN: {"http": ("auth", "mailbox")},
}
"""What a login check asks its server: it connects, logs in and opens the mailbox (where its
protocol has one), and never sends or looks for a message."""

WORDS = st.sampled_from(
    [
        "",
        "over quota",
        "mailbox full",
        "message size exceeded",
        "rate limit",
        "too many connections",
        "try again later",
        "temporary",
        "authentication failed",
        "User is authenticated but not connected",
        "[LIMIT]",
        "[UNAVAILABLE]",
        "[AUTHENTICATIONFAILED]",
        "[SYS/PERM]",
        "[SYS/TEMP]",
        "[IN-USE]",
        "[NONEXISTENT]",
        "5.1.8 bad outbound sender",
        "5.1.1 unknown",
        "5.2.2 full",
        "4.7.0 TLS not available",
        "5.7.139 authentication unsuccessful",
        "5.4.5 daily sending quota",
        "looping",
        "junk",
    ]
)
CODES = st.sampled_from(["", "5.1.7", "5.1.8", "5.1.1", "5.2.2", "4.2.2", "4.7.0", "5.7.1"])


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(LOGIN_STAGES)),
    st.integers(400, 599),
    CODES,
    st.lists(WORDS, max_size=3),
    st.sampled_from(["OK", "NO", "BAD", "BYE"]),
    st.sampled_from(["", "throttled", "ErrorAccessDenied", "MailboxNotEnabledForRESTAPI"]),
    st.data(),
)
def test_a_login_check_fails_only_with_its_own_reasons(
    check: Check,
    code: int,
    enhanced: str,
    words: list[str],
    result: str,
    error: str,
    data: st.DataObject,
) -> None:
    """Every answer a login check's server can give, at every stage the check reaches, is
    classified within the check's reasons: the series written at 0 from the start are
    all it can count."""
    ((protocol, stages),) = LOGIN_STAGES[check].items()
    stage = data.draw(st.sampled_from(stages))
    message = " ".join([enhanced, *words]).strip()
    possible = CHECKS[check].reasons
    if protocol == "smtp":
        reason = classify.smtp_reply(code, message, cast(Any, stage))
    elif protocol == "imap":
        reason = classify.imap_reply(result, message, cast(Any, stage))
    elif protocol == "pop3":
        reason = classify.pop3_reply(message, cast(Any, stage))
    else:
        reason = classify.http_reply(code, error, message, cast(Any, stage))
        assert classify.token_reply(code, error, message) in possible
    assert reason in possible, (check, stage, code, message)
    for failure in (OSError(), TimeoutError(), ConnectionRefusedError()):
        assert classify.os_error(failure) in possible


def test_only_a_round_trip_counts_failures_of_sending_and_arrival() -> None:
    assert CHECKS[Check.ROUNDTRIP].reasons == frozenset(Reason)
    for check, spec in CHECKS.items():
        if check is not Check.ROUNDTRIP:
            assert not spec.reasons & {Reason.NOT_DELIVERED, Reason.JUNK}, check
            assert len(spec.reasons) < len(Reason) - 2, check


# --- the series each target costs ----------------------------------------------------------------

SERIES_BUDGET: Final = 60
"""Series of a target with the three default checks once each has run, TLS to both servers
and every phase reached (docs/metrics.md, "Series per target")."""
WITHOUT_TLS: Final = 52
"""The same without TLS: four phases and each server's certificate expiry and TLS version
fewer."""
PHASES_REACHED: Final = {
    Check.ROUNDTRIP: [
        p for p in Phase if p.value.startswith(("smtp", "imap")) or p == Phase.DELIVERY
    ],
    Check.SMTP_LOGIN: [Phase.SMTP_CONNECT, Phase.SMTP_TLS, Phase.SMTP_AUTH],
    Check.IMAP_LOGIN: [Phase.IMAP_CONNECT, Phase.IMAP_TLS, Phase.IMAP_AUTH, Phase.IMAP_SELECT],
}


def _loaded(targets: int) -> Store:
    store = Store()
    store.configure(config.parse(full_config(targets)))
    return store


def _result(
    target: str,
    check: Check,
    success: bool,
    phases: list[Phase] | None = None,
    reason: Reason | None = None,
    **found: Any,
) -> ProbeResult:
    return ProbeResult(
        target=target,
        check=check,
        success=success,
        started=time.time(),
        duration=0.25,
        phase=None if success else Phase.SMTP_AUTH,
        reason=reason,
        phases=dict.fromkeys(phases or [Phase.SMTP_CONNECT, Phase.SMTP_AUTH], 0.1),
        found=Findings(**found),
    )


def _series(text: str, target: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#") and f'target="{target}"' in line
    ]


def _family(line: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", line.split("{", 1)[0])


TLS: Final = {p: TlsSession("TLSv1.3", 1.9e9) for p in ("smtp", "imap")}


def _healthy(tls: bool) -> list[str]:
    """The series of a target whose three default checks have each run once, and succeeded."""
    store = _loaded(2)
    for check, phases in PHASES_REACHED.items():
        if not tls:
            phases = [p for p in phases if p not in (Phase.SMTP_TLS, Phase.IMAP_TLS)]
        found: dict[str, Any] = {"tls": TLS} if tls else {}
        store.record(
            _result("t0", check, True, phases, delivery_seconds=1.0, lookalikes=0, **found)
        )
    return _series(metrics.render(store), "t0")


def test_a_target_with_the_default_checks_stays_within_its_series_budget() -> None:
    series = _healthy(tls=True)
    assert len(series) <= SERIES_BUDGET, len(series)
    assert sum(line.startswith("mailbox_probe_phase_duration_seconds") for line in series) == 18
    assert not any(line.startswith("mailbox_probe_failures_total") for line in series)
    assert sum(line.startswith("mailbox_probes_failed_total") for line in series) == 3
    assert len(_healthy(tls=False)) <= WITHOUT_TLS


def test_the_series_per_target_table_counts_what_a_target_has() -> None:
    """Each row of the table in docs/metrics.md names families and what they cost; the rows
    with a number add up to what a healthy target has, and to the budget stated there."""
    series = _healthy(tls=True)
    text = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    table = text[text.index("## Series per target") :]
    table = table[: table.index("\n## ")]
    counted = 0
    named: set[str] = set()
    for row in re.findall(r"^\| `mailbox_.*$", table, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if not re.fullmatch(r"(up to )?\d+", cells[1]):
            continue  # what failures, OAuth2 and the like add
        names = set(re.findall(r"`(mailbox_[a-z_]+)`", cells[0]))
        cost = int(cells[1].removeprefix("up to "))
        assert sum(_family(line) in names for line in series) == cost, row
        counted, named = counted + cost, named | names
    assert counted == len(series)
    assert {_family(line) for line in series} <= named
    assert f"**at most {SERIES_BUDGET} series**" in table
    assert f"{WITHOUT_TLS} without TLS" in table


def test_a_failure_adds_its_reason_and_no_more() -> None:
    """A reason's counter appears at its first failure; the count of all failures was there
    from the start, at 0."""
    store = _loaded(1)
    before = set(_series(metrics.render(store), "t0"))
    assert 'mailbox_probes_failed_total{target="t0",check="smtp_login"} 0' in before
    store.record(_result("t0", Check.SMTP_LOGIN, False, reason=Reason.AUTH_REJECTED))
    after = _series(metrics.render(store), "t0")
    assert 'mailbox_probes_failed_total{target="t0",check="smtp_login"} 1' in after
    assert [line for line in after if line.startswith("mailbox_probe_failures_total")] == [
        'mailbox_probe_failures_total{target="t0",check="smtp_login",reason="auth_rejected"} 1'
    ]


# --- a scrape writes only what changed -----------------------------------------------------------

ALTERNATIVES = [
    full_config(3),
    full_config(3).replace(
        "checks: [roundtrip, smtp_login, imap_login]", "checks: [smtp_login]", 1
    ),
    full_config(3).replace("  - name: t1\n", '  - name: t1\n    labels: {site: "a\\"b"}\n'),
    full_config(2).replace("  - name: t0\n", "  - name: t0\n    interval: 10s\n"),
]

OPERATIONS = st.one_of(
    st.tuples(
        st.just("record"),
        st.sampled_from(["t0", "t1", "t2"]),
        st.sampled_from([Check.ROUNDTRIP, Check.SMTP_LOGIN, Check.IMAP_LOGIN]),
        st.booleans(),
        st.sampled_from(list(Reason)),
        st.booleans(),
    ),
    st.tuples(st.just("refused"), st.sampled_from(["t0", "t1"]), st.sampled_from(list(Check))),
    st.tuples(st.just("configure"), st.integers(0, len(ALTERNATIVES) - 1)),
    st.tuples(st.just("scrape")),
)


def _from_scratch(store: Store) -> str:
    """What the store renders with nothing kept from earlier scrapes."""
    kept = metrics._EXPOSITIONS.pop(store, None)
    try:
        return metrics.render(store)
    finally:
        if kept is not None:
            metrics._EXPOSITIONS[store] = kept


def _apply(store: Store, operation: Any) -> None:
    kind = operation[0]
    if kind == "record":
        _, target, check, success, reason, roundtrip_found = operation
        found: dict[str, Any] = {}
        if roundtrip_found:
            found = {
                "delivery_seconds": 2.5,
                "cleanup_deleted": 1,
                "tls": {"imap": TlsSession("TLSv1.3", 1.9e9)},
                "token_expiry": {"smtp": 1.8e9},
            }
        store.record(_result(target, check, success, reason=None if success else reason, **found))
    elif kind == "refused":
        store.refused_on_demand(operation[1], operation[2])
    elif kind == "configure":
        store.configure(config.parse(ALTERNATIVES[operation[1]]))
    else:
        metrics.render(store)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.lists(OPERATIONS, max_size=30))
def test_a_scrape_shows_what_writing_everything_again_would(operations: list[Any]) -> None:
    store = Store()
    store.configure(config.parse(ALTERNATIVES[0]))
    for operation in operations:
        _apply(store, operation)
        assert metrics.render(store) == _from_scratch(store)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    st.lists(OPERATIONS.filter(lambda op: op[0] != "scrape"), max_size=6),
    st.lists(st.tuples(st.integers(0, 40), OPERATIONS), max_size=8),
)
def test_what_happens_between_the_slices_of_a_scrape_comes_out_whole(
    before: list[Any], during: list[tuple[int, Any]]
) -> None:
    """Results recorded, refusals and reloads between the slices of a scrape (where the web
    handler lets the probes run): the scrape is a well-formed exposition of each series once,
    and the next one is what writing everything again gives."""
    store = Store()
    store.configure(config.parse(ALTERNATIVES[0]))
    for operation in before:
        _apply(store, operation)
    steps = metrics._render(store)
    at = 0
    while True:
        for _, operation in (item for item in during if item[0] == at):
            if operation[0] != "scrape":  # one scrape at a time (render_async's lock)
                _apply(store, operation)
        try:
            next(steps)
        except StopIteration as done:
            text = "".join(done.value)
            break
        at += 1
    families = list(text_string_to_metric_families(text))
    keys = [(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples]
    assert len(keys) == len(set(keys)), "a series written twice"
    if not any(at >= index for index, _ in during):
        assert text == _from_scratch(store)
    assert metrics.render(store) == _from_scratch(store)


def test_two_reloads_between_scrapes_leave_nothing_of_the_checks_they_replaced() -> None:
    """A check dropped by one reload and back with the next starts afresh: its last failure,
    written before, is gone from the next scrape."""
    store = Store()
    store.configure(config.parse(ALTERNATIVES[0]))
    store.record(_result("t0", Check.ROUNDTRIP, False, reason=Reason.DNS))
    metrics.render(store)
    store.configure(config.parse(ALTERNATIVES[1]))
    store.configure(config.parse(ALTERNATIVES[0]))
    text = metrics.render(store)
    assert 'mailbox_probe_failed_info{target="t0",check="roundtrip"' not in text
    assert text == _from_scratch(store)


def test_a_reload_that_changes_nothing_keeps_what_was_written() -> None:
    store = _loaded(3)
    store.record(_result("t0", Check.ROUNDTRIP, True, delivery_seconds=1.0))
    metrics.render(store)
    page = metrics._EXPOSITIONS[store]
    before = {name: kept.checks[Check.ROUNDTRIP].fragments for name, kept in page.rendered.items()}
    store.configure(config.parse(full_config(3)))
    metrics.render(store)
    after = {name: kept.checks[Check.ROUNDTRIP].fragments for name, kept in page.rendered.items()}
    assert all(after[name] is before[name] for name in before), "not written again"


def test_the_reasons_by_check_table_states_each_checks_set() -> None:
    """docs/metrics.md's table follows ``CHECKS``: the count of reasons and those missing."""
    text = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    table = text[text.index("## Reasons by check") :]
    seen: set[Check] = set()
    for row in re.findall(r"^\| `[a-z_0-9]+`.*$", table, flags=re.MULTILINE):
        names, count, missing = (cell.strip() for cell in row.strip("|").split("|"))
        for name in re.findall(r"`([a-z_0-9]+)`", names):
            check = Check(name)
            seen.add(check)
            reasons = CHECKS[check].reasons
            assert count in (str(len(reasons)), f"all {len(reasons)}"), row
            absent = {Reason(r) for r in re.findall(r"`([a-z_]+)`", missing)} - reasons
            assert absent == set(Reason) - reasons, row
    assert seen == set(CHECKS)

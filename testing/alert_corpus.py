"""The false-alarm corpus: day-long probe histories with the noise real probes see, run through
the shipped rules with promtool, and the pages that reach the pager after the example
Alertmanager's inhibition and grouping.

Each :class:`Scenario` is a day of probes of three targets from one location (without a location
label, as most deployments are) or from three: logins every 30 seconds, a round trip every
minute, each check at its own offset, every result as the exporter exports it and Prometheus
scrapes it every 15 seconds. Faults make the probes that start while they last fail with the
fault's reason; a few single failed probes are spread over every day. :func:`promtool_tests`
writes the scenarios as promtool rule tests (``input_series`` in expanding notation) that assert
the pages and time to page of :data:`RESULTS`, the table in docs/alerting.md;
``python -m testing.alert_corpus`` measures them again and prints the table.

A page is a group of the example Alertmanager (its ``group_by``) whose first critical alert is
not inhibited (its ``inhibit_rules``, written as PromQL over ``ALERTS``); time to page is from the
fault's start to that alert's first firing evaluation plus the paging route's ``group_wait``.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules/mailbox.rules.yml"
ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"
DOC = ROOT / "docs/alerting.md"

DAY = 86400
STEP = 15
"""Seconds between scrapes and between rule evaluations, as shipped."""
CHECKS = {"smtp_login": 30, "imap_login": 30, "roundtrip": 60}
"""The built-in checks of an SMTP + IMAP target and their default intervals (seconds)."""
SUCCESS_SECONDS = {"smtp_login": 0.3, "imap_login": 0.2, "roundtrip": 4.0}
FAILURE_SECONDS = {
    "timeout": 15.0,
    "not_delivered": 28.0,
}
"""How long a failing probe takes, by reason; any other reason fails within a second."""
PHASES = {
    ("smtp_login", "auth"): "smtp_auth",
    ("imap_login", "auth"): "imap_auth",
    ("roundtrip", "auth"): "smtp_auth",
    ("smtp_login", "connect"): "smtp_connect",
    ("imap_login", "connect"): "imap_connect",
    ("roundtrip", "connect"): "smtp_connect",
}
REASON_PHASE = {
    "auth_rejected": "auth",
    "auth_temporary": "auth",
    "throttled": "auth",
    "unavailable": "connect",
    "connect_refused": "connect",
    "timeout": "connect",
    "dns": "connect",
}
TARGETS = {"one-location": ("corp", "sales", "support"), "three-locations": ("hq", "shop", "lab")}
"""Each day's targets, by day: target names are what locations compare, so each day has its own."""
LOCATIONS = ("office", "dc", "cloud")
JOB = "mailbox-exporter"
UNCOUNTED_TICKETS = 'alertname!="MailboxErrorBudgetBurnSlow"'
"""The slow-burn ticket reads 3 days: a day of history makes any 20-minute outage look like a
third of its budget, so it is not counted."""
COUNTER_EVERY = 4
"""Counters are written at every fourth scrape (once a minute): the round trip's change once a
minute, and promtool reads the whole day at every step for the long burn-rate windows, so this
keeps the corpus within a couple of minutes without changing any rate."""
NOISE_PER_DAY = 12
"""Single failed probes spread over every day, with reasons drawn from :data:`NOISE_REASONS`."""
NOISE_REASONS = ("timeout", "auth_temporary", "connect_refused", "throttled")


@dataclass(frozen=True)
class Fault:
    """Probes starting in [start, start + seconds) fail with ``reason``."""

    start: int
    seconds: int
    reason: str
    targets: tuple[str, ...] | None = None
    """None: every target."""
    checks: tuple[str, ...] = tuple(CHECKS)
    locations: tuple[str | None, ...] | None = None
    """None: every location."""

    def hits(self, when: float, location: str | None, target: str, check: str) -> bool:
        return (
            self.start <= when < self.start + self.seconds
            and (self.targets is None or target in self.targets)
            and check in self.checks
            and (self.locations is None or location in self.locations)
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    day: str
    """The history it happens in: :data:`ONE` or :data:`THREE`."""
    at: int
    """When its fault starts (or its window, without a fault), seconds into the day: its pages
    are those that start before the next scenario of the day does."""
    faults: tuple[Fault, ...]
    pages: int
    """Pages expected: 0 for noise."""
    deadline: int | None = None
    """Seconds within which the page must arrive, as docs/alerting.md promises."""


ONE, THREE = "one-location", "three-locations"
DAYS: dict[str, tuple[str | None, ...]] = {ONE: (None,), THREE: LOCATIONS}
"""Each day's locations: one exporter without a location label, or three with one each."""
PROVIDER = {ONE: "microsoft"}
"""The provider label of each day's targets, if any."""
HOUR = 3600
OUTAGE = 1200


def _fault(
    at: int,
    seconds: int,
    reason: str,
    targets: tuple[str, ...] | None = None,
    checks: tuple[str, ...] = tuple(CHECKS),
    locations: tuple[str | None, ...] | None = None,
) -> tuple[Fault, ...]:
    return (Fault(at, seconds, reason, targets, checks, locations),)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "single",
        "single failed probes only (about 20 a day at each location, on both days)",
        ONE,
        0,
        (),
        0,
    ),
    Scenario(
        "throttled",
        "a throttled minute: one mailbox's logins refused as throttled for 60 s",
        ONE,
        3 * HOUR,
        _fault(3 * HOUR, 60, "throttled", ("corp",), ("smtp_login", "imap_login")),
        0,
    ),
    Scenario(
        "slow-delivery",
        "a slow delivery: one probe message arrives after the round trip stopped waiting",
        ONE,
        5 * HOUR,
        _fault(5 * HOUR, 60, "not_delivered", ("corp",), ("roundtrip",)),
        0,
    ),
    Scenario(
        "provider-blip",
        "a provider blip: every check of all three mailboxes unavailable for 2 minutes",
        ONE,
        7 * HOUR,
        _fault(7 * HOUR, 120, "unavailable"),
        0,
    ),
    Scenario(
        "outage-server",
        "a 20-minute outage: one mail server refuses connections",
        ONE,
        10 * HOUR,
        _fault(10 * HOUR, OUTAGE, "connect_refused", ("corp",)),
        1,
        4 * 60,
    ),
    Scenario(
        "outage-logins",
        "a 20-minute outage: logins rejected (a broken password database)",
        ONE,
        13 * HOUR,
        _fault(13 * HOUR, OUTAGE, "auth_temporary", ("sales",)),
        1,
        4 * 60,
    ),
    Scenario(
        "outage-delivery",
        "a 20-minute outage: mail accepted but not delivered",
        ONE,
        16 * HOUR,
        _fault(16 * HOUR, OUTAGE, "not_delivered", ("support",), ("roundtrip",)),
        1,
        5 * 60 + 30,
    ),
    Scenario(
        "outage-provider",
        "a 20-minute provider outage: all three mailboxes unavailable",
        ONE,
        19 * HOUR,
        _fault(19 * HOUR, OUTAGE, "unavailable"),
        1,
        4 * 60,
    ),
    Scenario("single-3", "single failed probes only, three locations", THREE, 0, (), 0),
    Scenario(
        "path-loss",
        "a location's path loss: office cannot reach one mail server for 20 minutes",
        THREE,
        2 * HOUR,
        _fault(2 * HOUR, OUTAGE, "timeout", ("hq",), locations=("office",)),
        0,
    ),
    Scenario(
        "location-network",
        "a location's own network down: office resolves no name for 20 minutes",
        THREE,
        8 * HOUR,
        _fault(8 * HOUR, OUTAGE, "dns", locations=("office",)),
        1,
        4 * 60,
    ),
    Scenario(
        "outage-3-locations",
        "a 20-minute outage seen from all three locations",
        THREE,
        14 * HOUR,
        _fault(14 * HOUR, OUTAGE, "connect_refused", ("hq",)),
        1,
        4 * 60 + 30,
    ),
)


def _window(scenario: Scenario) -> tuple[int, int]:
    """Seconds into the day: from the scenario's start to the next one's of the same day."""
    later = [s.at for s in SCENARIOS if s.day == scenario.day and s.at > scenario.at]
    return scenario.at, min(later, default=DAY)


@dataclass
class _Series:
    """One series' value at every scrape, None where it is absent."""

    name: str
    labels: dict[str, str]
    values: list[float | None] = field(default_factory=lambda: [None] * (DAY // STEP + 1))

    def text(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}}"


def _notation(values: Sequence[float | None]) -> str:
    """Values in promtool's expanding notation: runs as ``vxN``, absences as ``_xN``,
    arithmetic runs as ``a+bxN``."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        v = values[i]
        j = i + 1
        if v is None:
            while j < len(values) and values[j] is None:
                j += 1
            parts.append("_" if j - i == 1 else f"_x{j - i}")
        else:
            following = values[j] if j < len(values) else None
            step = None if following is None else following - v
            if step:
                while j < len(values) and _difference(values[j], values[j - 1]) == step:
                    j += 1
            else:
                while j < len(values) and values[j] == v:
                    j += 1
            n = j - i - 1
            text = _number(v)
            if n == 0:
                parts.append(text)
            elif step:
                parts.append(f"{text}{'+' if step > 0 else '-'}{_number(abs(step))}x{n}")
            else:
                parts.append(f"{text}x{n}")
        i = j
    return " ".join(parts)


def _difference(value: float | None, previous: float | None) -> float | None:
    return None if value is None or previous is None else value - previous


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _probes(
    faults: Sequence[Fault],
    location: str | None,
    target: str,
    check: str,
    rng: random.Random,
    noise: set[tuple[int, str]],
) -> Iterator[tuple[float, float, str | None]]:
    """(start, end, failing reason) of every probe of one check over the day."""
    interval = CHECKS[check]
    offset = rng.uniform(0, interval)
    k = 0
    while True:
        start = offset + k * interval
        if start >= DAY:
            return
        reason = next((f.reason for f in faults if f.hits(start, location, target, check)), None)
        if reason is None and (k, check) in noise:
            reason = rng.choice(NOISE_REASONS)
        if reason == "not_delivered" and check != "roundtrip":
            reason = None
        seconds = SUCCESS_SECONDS[check] if reason is None else FAILURE_SECONDS.get(reason, 0.5)
        yield start, start + seconds, reason
        k += 1


def _phase(check: str, reason: str) -> str:
    if reason == "not_delivered":
        return "delivery"
    return PHASES[(check, REASON_PHASE[reason])]


def series(day: str) -> list[_Series]:
    """Every series the exporters of ``day`` export, as scraped."""
    rng = random.Random(day)
    faults = [f for s in SCENARIOS if s.day == day for f in s.faults]
    out: list[_Series] = []
    steps = DAY // STEP + 1
    for location in DAYS[day]:
        base = {"job": day, "instance": f"{location or 'exporter'}:10025"}
        if location is not None:
            base["location"] = location
        for target in TARGETS[day]:
            info = _Series("mailbox_target_info", {**base, "target": target}, [1.0] * steps)
            if day in PROVIDER:
                info.labels["provider"] = PROVIDER[day]
            out.append(info)
            for check in CHECKS:
                labels = {**base, "target": target, "check": check}
                per_day = DAY // CHECKS[check]
                noise = {
                    (rng.randrange(per_day), check)
                    for _ in range(NOISE_PER_DAY // len(CHECKS) // len(TARGETS[day]) + 1)
                }
                out += _check_series(
                    labels, list(_probes(faults, location, target, check, rng, noise))
                )
    return out


def _check_series(
    labels: dict[str, str], probes: list[tuple[float, float, str | None]]
) -> list[_Series]:
    """The exporter's series of one check, scraped every :data:`STEP` seconds."""
    check = labels["check"]
    failures = _Series("mailbox_probe_consecutive_failures", dict(labels))
    last = _Series("mailbox_probe_last_timestamp_seconds", dict(labels))
    since = _Series("mailbox_probe_failing_since_timestamp_seconds", dict(labels))
    success = _Series("mailbox_probe_success", dict(labels))
    total = _Series("mailbox_probes_total", dict(labels))
    failed = _Series("mailbox_probes_failed_total", dict(labels))
    infos: dict[tuple[str, str], _Series] = {}
    index = 0
    state: dict[str, Any] = {
        "n": 0,
        "since": None,
        "end": None,
        "reason": None,
        "total": 0,
        "failed": {},
    }
    for step in range(DAY // STEP + 1):
        now = step * STEP
        while index < len(probes) and probes[index][1] <= now:
            _, end, reason = probes[index]
            state["end"], state["total"] = end, state["total"] + 1
            if reason is None:
                state["n"], state["since"], state["reason"] = 0, None, None
            else:
                state["n"] += 1
                state["since"] = state["since"] if state["n"] > 1 else end
                state["reason"] = reason
                state["failed"][reason] = state["failed"].get(reason, 0) + 1
            index += 1
        if state["end"] is None:
            continue
        failures.values[step] = state["n"]
        last.values[step] = round(state["end"], 1)
        since.values[step] = None if state["since"] is None else round(state["since"], 1)
        success.values[step] = 1 if state["n"] == 0 else 0
        if state["reason"] is not None:
            key = (_phase(check, state["reason"]), state["reason"])
            if key not in infos:
                infos[key] = _Series(
                    "mailbox_probe_failed_info", {**labels, "phase": key[0], "reason": key[1]}
                )
            infos[key].values[step] = 1
        if check == "roundtrip" and step % COUNTER_EVERY == 0:
            total.values[step] = state["total"]
            failed.values[step] = sum(state["failed"].values())
    found = [failures, last, since, success, *infos.values()]
    if check == "roundtrip":
        # The rules' error ratios read the count of all failures, present from the start.
        found += [total, failed]
    return found


# ------------------------------------------------------------ pages, as Alertmanager sends them


def _matchers(matchers: Sequence[str]) -> str:
    return ", ".join(matchers)


def _delivered(severity: str, offset: str = "") -> str:
    """PromQL: firing alerts of ``severity`` that the example Alertmanager does not inhibit."""
    config = yaml.safe_load(ALERTMANAGER.read_text())

    def alerts(matchers: Sequence[str]) -> str:
        inner = ", ".join(['alertstate="firing"', *matchers])
        return f"ALERTS{{{inner}}}{offset}"

    inhibited = [
        f"({alerts(rule['target_matchers'])} and on ({', '.join(rule['equal'])}) "
        f"{alerts(rule['source_matchers'])})"
        for rule in config["inhibit_rules"]
    ]
    own = [f'severity="{severity}"', *([] if severity == "critical" else [UNCOUNTED_TICKETS])]
    return f"({alerts(own)} unless ({' or '.join(inhibited)}))"


def _group_by() -> str:
    return ", ".join(yaml.safe_load(ALERTMANAGER.read_text())["route"]["group_by"])


def group_wait() -> int:
    """The paging route's group_wait, in seconds."""
    route = next(
        r
        for r in yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"]
        if 'severity="critical"' in r["matchers"]
    )
    match = re.fullmatch(r"(\d+)s", route["group_wait"])
    assert match, route["group_wait"]
    return int(match[1])


def _recorded(severity: str) -> str:
    """PromQL: the delivered alerts of ``severity`` counted by Alertmanager group, with the
    scenario they belong to (its job, or the provider named after it)."""
    day = f'label_replace({_delivered(severity)}, "day", "$1", "job", "(.+)")'
    for name, provider in PROVIDER.items():
        day = f'label_replace({day}, "day", "{name}", "provider", "{provider}")'
    return f"count by (day, {_group_by()}) ({day})"


def corpus_rules() -> dict[str, Any]:
    """Recording rules that keep what reaches the pager and the ticket queue, evaluated after
    the shipped rules at every step."""
    return {
        "groups": [
            {
                "name": "corpus",
                "rules": [
                    {"record": "corpus:pages", "expr": _recorded("critical")},
                    {"record": "corpus:tickets", "expr": _recorded("warning")},
                ],
            }
        ]
    }


def _count_expr(record: str, scenario: Scenario) -> str:
    """PromQL, at the end of the scenario's window: how many Alertmanager groups started in it."""
    start, end = _window(scenario)
    now = f'{record}{{day="{scenario.day}"}}'
    return (
        f"sum(sum_over_time(clamp_max({now} unless {now} offset {STEP}s, 1)"
        f"[{end - start}s:{STEP}s]))"
        " or vector(0)"
    )


def _first_expr(scenario: Scenario) -> str:
    """PromQL, at the end of the scenario's window: seconds from its start to its first page."""
    start, end = _window(scenario)
    now = f'corpus:pages{{day="{scenario.day}"}}'
    return f"min(min_over_time(timestamp({now})[{end - start}s:{STEP}s])) - {start}"


@dataclass(frozen=True)
class Result:
    scenario: str
    pages: int
    tickets: int
    seconds: int | None
    """Time to page, from the fault's start, including group_wait."""


def promtool_tests(results: dict[str, Result] | None) -> dict[str, Any]:
    """The promtool rule-test document of every scenario; with ``results``, asserting them,
    else asserting nothing (for :func:`measure`)."""
    checks: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        expected = None if results is None else results[scenario.name]
        at = f"{_window(scenario)[1]}s"
        for key, expr in (
            ("pages", _count_expr("corpus:pages", scenario)),
            ("tickets", _count_expr("corpus:tickets", scenario)),
        ):
            value = None if expected is None else getattr(expected, key)
            checks.append(
                {
                    "expr": expr,
                    "eval_time": at,
                    "exp_samples": [] if value is None else [{"labels": "{}", "value": value}],
                }
            )
        seconds = (
            None
            if expected is None or expected.seconds is None
            else expected.seconds - group_wait()
        )
        checks.append(
            {
                "expr": _first_expr(scenario),
                "eval_time": at,
                "exp_samples": [] if seconds is None else [{"labels": "{}", "value": seconds}],
            }
        )
    inputs = [
        {"series": s.text(), "values": _notation(s.values)} for day in DAYS for s in series(day)
    ]
    return {
        "rule_files": [str(RULES), CORPUS_RULES],
        "evaluation_interval": f"{STEP}s",
        "group_eval_order": [*_groups(), "corpus"],
        "tests": [{"interval": f"{STEP}s", "input_series": inputs, "promql_expr_test": checks}],
    }


def _groups() -> list[str]:
    """The shipped groups, those with records the alerts read first (as the rule tests do)."""
    names = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]]
    first = ["mailbox-outage-locations"]
    last = ["mailbox-slo"]
    return first + [n for n in names if n not in first + last] + last


CORPUS_RULES = "corpus.rules.yml"
"""The recording rules of :func:`corpus_rules`, beside the test file."""


def run(document: dict[str, Any], work: Path) -> subprocess.CompletedProcess[str]:
    (work / CORPUS_RULES).write_text(yaml.safe_dump(corpus_rules(), sort_keys=False, width=1 << 20))
    path = work / "corpus.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=1 << 20))
    return subprocess.run(
        ["promtool", "test", "rules", path.name],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        cwd=work,
    )


_GOT = re.compile(
    r'expr: "(?P<expr>(?:[^"\\]|\\.)*)", time: (?P<time>[^,]*),'
    r"\s*exp: [^\n]*\n\s*got: (?P<got>[^\n]*)"
)


def measure(work: Path) -> dict[str, Result]:
    """Run the corpus asserting nothing and read what promtool found (an expression that found
    nothing passes, and is not listed)."""
    document = promtool_tests(None)
    done = run(document, work)
    found = {
        (m["expr"].replace('\\"', '"'), m["time"]): m["got"]
        for m in _GOT.finditer(done.stdout + done.stderr)
    }
    results = {}
    for scenario in SCENARIOS:
        values: list[float | None] = []
        at = f"{_window(scenario)[1]}s"
        for expr in (
            _count_expr("corpus:pages", scenario),
            _count_expr("corpus:tickets", scenario),
            _first_expr(scenario),
        ):
            got = found.get((expr, _promtool_time(at)), "nil")
            number = re.search(r"\{\} ([-+0-9.eE]+)", got)
            values.append(None if number is None else float(number[1]))
        pages, tickets, first = values
        assert pages is not None and tickets is not None, (done.stdout + done.stderr)[-2000:]
        results[scenario.name] = Result(
            scenario.name,
            int(pages),
            int(tickets),
            None if first is None else int(first) + group_wait(),
        )
    return results


def _promtool_time(seconds: str) -> str:
    """A time as promtool prints it (Prometheus' duration format: 1d, 3h, 1h30m)."""
    total = int(seconds.rstrip("s"))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


# ------------------------------------------------------------------ the table in docs/alerting.md

TABLE_START = "<!-- corpus table: generated by python -m testing.alert_corpus -->"
TABLE_END = "<!-- end of corpus table -->"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def table(results: dict[str, Result]) -> str:
    rows = [
        "| scenario | locations | pages expected | pages seen | tickets seen | time to page "
        "| promised within |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SCENARIOS:
        r = results[s.name]
        rows.append(
            f"| `{s.name}`: {s.what} | {len(DAYS[s.day])} | {s.pages} | {r.pages} | {r.tickets} "
            f"| {_duration(r.seconds)} | {_duration(s.deadline)} |"
        )
    return "\n".join(rows)


def documented() -> dict[str, Result]:
    """The results the table in docs/alerting.md states."""
    text = DOC.read_text()
    block = text[text.index(TABLE_START) : text.index(TABLE_END)]
    results = {}
    for line in block.splitlines():
        m = re.match(r"\| `([a-z0-9-]+)`: .*? \| \d+ \| \d+ \| (\d+) \| (\d+) \| ([^|]+) \|", line)
        if m:
            t = m[4].strip()
            tm = re.fullmatch(r"(\d+) min (\d+) s", t)
            results[m[1]] = Result(
                m[1], int(m[2]), int(m[3]), None if tm is None else int(tm[1]) * 60 + int(tm[2])
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write-doc", action="store_true", help="replace the table in docs/alerting.md"
    )
    parser.add_argument("--write-tests", type=Path, help="write the promtool tests to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp))
    text = table(results)
    print(text)
    if args.write_doc:
        doc = DOC.read_text()
        a, b = doc.index(TABLE_START) + len(TABLE_START), doc.index(TABLE_END)
        DOC.write_text(doc[:a] + "\n" + text + "\n" + doc[b:])
    if args.write_tests:
        args.write_tests.write_text(
            yaml.safe_dump(promtool_tests(results), sort_keys=False, width=1 << 20)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

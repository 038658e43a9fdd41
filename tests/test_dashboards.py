"""The Grafana dashboards in deploy/grafana: grafana/dashboard-linter's conventions, checked on
the JSON, and every panel query run against real Prometheus (with the shipped rules) scraping the
exporter while it probes a real Postfix + Dovecot, one target healthy and one failing.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.exporter_process import start as start_exporter
from testing.mailstack import MailStack, MailUser
from testing.prometheus_process import start as start_prometheus
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules" / "mailbox.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = ("job", "instance", "target")
TAG = "mailbox-exporter"
DRILL_DOWN = "mailbox-target"

NO_DATA_HERE = {
    "TLS certificate expires in": "the test mail stack offers no TLS, so no certificate is seen",
    "OAuth2 token expires in": "the test targets log in with passwords, so no token exists",
}
"""Panels that legitimately show nothing in the live test, by title: their queries must still
be valid PromQL, and must really return nothing (else the entry is stale and goes)."""

LABELLESS = {"mailbox:roundtrip_availability:objective"}
"""Series without job, instance or target labels by construction (``vector(0.99)``)."""

TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<braces>\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<paren>[()])
  | (?P<other>\S)
    """,
    re.VERBOSE,
)
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {*GROUPING, "bool", "and", "or", "unless", "offset"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "quantile"}
AGGREGATIONS |= {"count_values", "topk", "bottomk"}
RATES = re.compile(r"\b(rate|increase|irate)\s*\(")


def load(path: Path) -> dict[str, Any]:
    """One dashboard's JSON."""
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside (collapsed) rows."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """The series selectors of a PromQL expression: metric name and label matchers."""
    tokens = [(m.lastgroup or "", m.group()) for m in TOKEN.finditer(expr)]
    found: list[tuple[str, dict[str, tuple[str, str]]]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text in GROUPING and following[1] == "(":
            i = tokens.index(("paren", ")"), i)  # a label list holds no nested parentheses
        elif kind == "ident" and (text in KEYWORDS or text in AGGREGATIONS or following[1] == "("):
            pass  # a keyword, an aggregation or a function
        elif kind == "ident" or kind == "braces":
            braces = text if kind == "braces" else following[1] if following[0] == "braces" else ""
            matchers = {n: (op, v) for n, op, v in MATCHER.findall(braces)}
            found.append((text if kind == "ident" else "", matchers))
            i += 1 if kind == "ident" and braces else 0
        i += 1
    return found


def required_labels(metric: str) -> tuple[str, ...]:
    """The variables a selector of ``metric`` must filter on."""
    if metric in LABELLESS:
        return ()
    if metric == "up" or metric.startswith("mailbox_exporter_"):
        return ("job", "instance")  # the exporter's own series have no target
    return VARIABLES


def balanced(text: str, open_at: int) -> str:
    """The text from the parenthesis at ``open_at`` to its match."""
    depth = 0
    for j in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[open_at : j + 1]
    raise AssertionError(f"unbalanced parentheses: {text}")


def known_metrics() -> set[str]:
    """Metrics documented in docs/metrics.md, recorded by the shipped rules, and ``up``."""
    documented = set(re.findall(r"`(mailbox_[a-z_]+)", (ROOT / "docs/metrics.md").read_text()))
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return documented | recorded | {"up"}


def problems_of_expr(expr: str, known: set[str]) -> list[str]:
    """What breaks the conventions in one query."""
    problems = []
    for match in RATES.finditer(expr):
        ranges = re.findall(r"\[([^\]]*)\]", balanced(expr, match.end() - 1))
        if not ranges or any(r != "$__rate_interval" for r in ranges):
            problems.append(f"{match.group(1)} over {ranges}, not [$__rate_interval]")
    for window in re.findall(r"\[([^\]]*)\]", expr):
        if not window.startswith("$__"):
            problems.append(f"fixed range [{window}]")
    found = selectors(expr)
    if not found:
        problems.append("no series selector")
    for metric, matchers in found:
        base = re.sub(r"_(bucket|count|sum)$", "", metric)
        if metric not in known and base not in known:
            problems.append(f"unknown metric {metric!r}")
        for label in required_labels(metric):
            if matchers.get(label) not in (("=~", f"${label}"), ("=~", f"${{{label}}}")):
                problems.append(f'{metric or "selector"} lacks {label}=~"${label}"')
    return problems


def overlaps(boxes: list[dict[str, int]]) -> list[tuple[dict[str, int], dict[str, int]]]:
    """Pairs of grid positions that overlap."""
    return [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    ]


def test_there_are_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"mailbox-overview", "mailbox-target"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_follows_the_conventions(path: Path) -> None:
    board = load(path)
    known = known_metrics()
    assert board["uid"] == path.stem, "a stable uid: the file name"
    assert board["title"] and board["description"]
    assert board["schemaVersion"] >= 39
    assert TAG in board["tags"]
    assert board["editable"] is False

    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = [v for v in variables.values() if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in sources] == [("datasource", "prometheus")]
    for k, name in enumerate(VARIABLES):
        variable = variables[name]
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert variable["type"] == "query", name
        assert variable["datasource"] == DATASOURCE, name
        assert variable["refresh"] == 2, f"{name}: refresh on time range change"
        parts = re.fullmatch(rf"label_values\((.+), {name}\)", query)
        assert parts, name
        [(metric, matchers)] = selectors(parts[1])
        assert metric in known, name
        for label in VARIABLES[:k]:  # each variable narrows down the next
            assert matchers.get(label) == ("=~", f"${label}"), (name, label)
    for name in ("job", "instance"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name
        # A custom ".*" would let "All" select every job's `up`, not only the exporters'.
        assert not variables[name].get("allValue"), name

    problems = []
    ids = [p["id"] for p in board["panels"]] + [
        p["id"] for row in board["panels"] if row["type"] == "row" for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        title = panel.get("title", "")
        if panel["type"] == "text":
            continue
        if not title or not panel.get("description", "").strip():
            problems.append(f"{title!r}: no title or description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{title}: no unit")
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{title}: panel datasource {panel.get('datasource')}")
        if not panel.get("targets"):
            problems.append(f"{title}: no queries")
        refs = [t["refId"] for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            problems.append(f"{title}: refIds repeat")
        for target in panel.get("targets", []):
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{title}: query datasource {target.get('datasource')}")
            problems += [f"{title}: {p}" for p in problems_of_expr(target["expr"], known)]
    assert problems == []

    layouts = [[p["gridPos"] for p in board["panels"]]] + [
        [p["gridPos"] for p in row["panels"]]
        for row in board["panels"]
        if row["type"] == "row" and row.get("collapsed")
    ]
    for boxes in layouts:
        assert all(
            b["x"] >= 0 and b["w"] > 0 and b["h"] > 0 and b["x"] + b["w"] <= 24 for b in boxes
        )
        assert overlaps(boxes) == []


def test_dashboards_link_each_other() -> None:
    boards = {p.stem: load(p) for p in DASHBOARDS}
    assert len({b["title"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        text = json.dumps(board)
        for uid in re.findall(r"/d/([\w-]+)", text):
            assert uid in boards, f"{name} links to a dashboard that does not exist: {uid}"
    overview = boards["mailbox-overview"]
    assert any(DRILL_DOWN in link.get("url", "") for link in overview["links"])
    data_links = [
        link["url"]
        for panel in panels(overview)
        for override in panel["fieldConfig"].get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert data_links and all(
        f"/d/{DRILL_DOWN}/" in url and "var-target=${__data.fields.target}" in url
        for url in data_links
    )


def test_provisioning_points_at_the_dashboards() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/mailbox.yml").read_text())
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    readme = (GRAFANA / "README.md").read_text()
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert f"deploy/grafana/dashboards:{path}" in readme.replace('"', "").replace("$PWD/", "")
    [source] = sources["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")


def all_queries() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard, panel, query) for every query of every dashboard."""
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel.get("targets", []):
                yield path.stem, panel, target


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation, for the variables the dashboards use."""
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: values[m[1] or m[2]], expr)


def numbers(result: list[dict[str, Any]]) -> list[float]:
    """The values of an instant or range query's result that a panel can draw (not NaN)."""
    samples = [s for series in result for s in series.get("values", [series.get("value")])]
    return [float(v) for _, v in samples if v != "NaN"]


LIVE_TIMES = {"__rate_interval": "10s", "__interval": "2s", "__range": "30s"}
"""With 1 s scrapes, rates over 10 s span enough samples; queries look back 30 s."""


def test_queries_parse(tmp_path: Path) -> None:
    values = {
        "job": "mailbox-exporter",
        "instance": ".*",
        "target": ".*",
        "location": ".*",
        **LIVE_TIMES,
    }
    rules = [
        {"record": f"dashboard:query:{n}", "expr": substitute(target["expr"], values)}
        for n, (_, _, target) in enumerate(all_queries())
    ]
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_every_panel_shows_data(mailstack: MailStack, user: MailUser, tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    fast = {"interval": "2s", "timeout": "2s"}
    config.write_text(
        "targets:\n"
        + target_yaml(mailstack, user, name="local", **fast)
        + target_yaml(mailstack, user, name="broken", password="wrong", **fast)
    )
    (tmp_path / "exporter").mkdir()
    queries = list(all_queries())
    async with asynccontextmanager(start_exporter)(config, tmp_path / "exporter") as exporter:
        instance = f"127.0.0.1:{exporter.port}"
        async with asynccontextmanager(start_prometheus)(
            tmp_path / "prometheus", [instance], rule_files=[RULES], job="mailbox-exporter"
        ) as prometheus:
            # Delivered mail, a current failure, and 12 s of scrapes for the rates and rules.
            await prometheus.until('mailbox_roundtrip_delivery_seconds_count{target="local"} > 0')
            await prometheus.until('mailbox_probe_failed_info{target="broken"}')
            await prometheus.until('count_over_time(up{job="mailbox-exporter"}[1m]) >= 12')
            values = {
                "job": "mailbox-exporter",
                "instance": instance,
                "target": "local|broken",
                "location": ".*",  # "All" when Prometheus adds no location label
                **LIVE_TIMES,
            }

            async def run(target: dict[str, Any]) -> dict[str, Any]:
                expr = substitute(target["expr"], values)
                if target.get("instant"):
                    return await prometheus.query(expr)
                return await prometheus.query_range(expr, 30, 2)

            answers = await asyncio.gather(*(run(target) for _, _, target in queries))

    titles = {panel["title"] for _, panel, _ in queries}
    assert set(NO_DATA_HERE) <= titles, "allow-listed panels exist"
    problems = []
    for (board, panel, target), answer in zip(queries, answers, strict=True):
        where = f"{board} / {panel['title']} / {target['refId']}"
        if answer["status"] != "success":
            problems.append(f"{where}: {answer.get('error')}")
        elif panel["title"] in NO_DATA_HERE:
            if answer["data"]["result"]:
                problems.append(f"{where}: has data now, drop it from NO_DATA_HERE")
        elif not numbers(answer["data"]["result"]):
            problems.append(f"{where}: no data for {target['expr']}")
    assert problems == []

"""The overview dashboard's rows per location: a row repeated over the ``location`` variable,
built from the mixin's location label, that degrades to one row without that label; checked
on the JSON, as the mixin writes it for another label name, and against real Prometheus
scraping one exporter as two locations and as none."""

from __future__ import annotations

import json
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from testing.exporter_process import start as start_exporter
from testing.mailstack import MailStack, MailUser
from testing.prometheus_process import start as start_prometheus
from testing.targets import target_yaml
from tests.test_dashboards import GRAFANA, LIVE_TIMES, RULES, numbers, selectors, substitute

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = GRAFANA / "dashboards" / "mailbox-overview.json"
VARIABLE = "location"


def _rows(board: dict[str, Any], label: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The location variable and the panels of the repeated row; checks how both are built."""
    variables = {v["name"]: v for v in board["templating"]["list"]}
    variable = variables[VARIABLE]
    assert variable["type"] == "query" and variable["refresh"] == 2
    assert variable["multi"] and variable["includeAll"]
    assert variable["allValue"] == ".*", "All covers exporters without a location label"
    query = variable["query"]["query"]
    assert query.endswith(f", {label})") and query.startswith("label_values(")
    [(metric, matchers)] = selectors(query[len("label_values(") : -len(f", {label})")])
    assert matchers == {"job": ("=~", "$job"), "instance": ("=~", "$instance")}, query
    assert metric.startswith("mailbox_")

    panels = board["panels"]
    titles = [p["title"] for p in panels if p["type"] == "row"]
    assert "Locations" in titles, "the row of which locations see a target failing stays"
    [start] = [i for i, p in enumerate(panels) if p.get("repeat") == VARIABLE]
    row = panels[start]
    assert row["type"] == "row" and not row["collapsed"] and f"${VARIABLE}" in row["title"]
    inside = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        inside.append(panel)
    assert len(inside) >= 3
    for panel in inside:
        assert f"${VARIABLE}" in panel["title"]
        for target in panel["targets"]:
            for _, found in selectors(target["expr"]):
                assert found.get(label) == ("=~", f"${VARIABLE}"), target["expr"]
    return variable, inside


def test_the_overview_repeats_a_row_per_location() -> None:
    _rows(json.loads(OVERVIEW.read_text()), "location")


@pytest.mark.services  # jsonnet: not in the quick tier
def test_the_rows_follow_the_mixins_location_label(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "deploy/mixin/generate"), str(tmp_path), "{locationLabel: 'site'}"],
        check=True,
        capture_output=True,
    )
    board = json.loads((tmp_path / "deploy/grafana/dashboards/mailbox-overview.json").read_text())
    _rows(board, "site")


async def test_each_location_row_shows_its_location_and_one_row_shows_all_without_a_label(
    mailstack: MailStack, user: MailUser, tmp_path: Path
) -> None:
    """One exporter scraped three times: as ``office``, as ``dc``, and with no location."""
    _, inside = _rows(json.loads(OVERVIEW.read_text()), "location")
    config = tmp_path / "exporter.yml"
    config.write_text(
        "targets:\n" + target_yaml(mailstack, user, name="local", interval="2s", timeout="2s")
    )
    async with asynccontextmanager(start_exporter)(config, tmp_path / "exporter") as exporter:
        instance = f"127.0.0.1:{exporter.port}"
        located = [
            {"targets": [instance], "labels": {"location": "office"}},
            {"targets": [instance], "labels": {"location": "dc"}},
            {"targets": [instance]},
        ]
        async with asynccontextmanager(start_prometheus)(
            tmp_path / "prometheus", [], rule_files=[RULES], static_configs=located
        ) as prometheus:
            await prometheus.until('mailbox_roundtrip_delivery_seconds_count{location="dc"} > 0')
            await prometheus.until('count_over_time(up{location="dc"}[1m]) >= 12')
            async with prometheus.session.get(
                f"{prometheus.url}/api/v1/label/location/values",
                params={"match[]": f'mailbox_probe_success{{instance="{instance}"}}'},
            ) as response:
                assert (await response.json())["data"] == ["dc", "office"]

            async def shows(location: str) -> list[str]:
                """The titles of the row's panels that have data for ``location``."""
                values = {
                    "job": "mailbox-exporter",
                    "instance": instance,
                    "target": "local",
                    "location": location,
                    **LIVE_TIMES,
                }
                found = []
                for panel in inside:
                    [target] = panel["targets"]
                    expr = substitute(target["expr"], values)
                    if target.get("instant"):
                        answer = await prometheus.query(expr)
                    else:
                        answer = await prometheus.query_range(expr, 30, 2)
                    assert answer["status"] == "success", answer
                    if numbers(answer["data"]["result"]):
                        found.append(panel["title"])
                return found

            every = [panel["title"] for panel in inside]
            assert await shows("office") == every
            assert await shows("dc") == every
            assert await shows("nowhere") == [], "a row shows only its own location"
            # No location label: "All" (.*), or the empty value of Grafana's scenes renderer.
            assert await shows(".*") == every
            assert await shows("") == every

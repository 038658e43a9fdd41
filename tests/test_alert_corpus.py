"""False alarms measured: day-long probe histories with the noise real probes see, run through
the shipped rules with promtool (testing/alert_corpus.py). Noise pages nobody, every real
outage pages once within the time docs/alerting.md promises, and the table there is what
promtool finds. Takes about two minutes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testing import alert_corpus
from testing.alert_corpus import SCENARIOS


def test_the_table_covers_every_scenario_and_keeps_its_promises() -> None:
    documented = alert_corpus.documented()
    assert set(documented) == {s.name for s in SCENARIOS}
    for scenario in SCENARIOS:
        seen = documented[scenario.name]
        assert seen.pages == scenario.pages, scenario.name
        if scenario.pages:
            assert scenario.deadline is not None and seen.seconds is not None
            assert seen.seconds <= scenario.deadline, scenario.name
        else:
            assert seen.seconds is None, scenario.name
    names = {s.name for s in SCENARIOS}
    assert {"throttled", "slow-delivery", "provider-blip", "path-loss"} <= names
    doc = alert_corpus.DOC.read_text()
    block = doc[doc.index(alert_corpus.TABLE_START) : doc.index(alert_corpus.TABLE_END)]
    assert alert_corpus.table(documented) in block, "run python -m testing.alert_corpus --write-doc"


@pytest.mark.services  # promtool over day-long histories: about two minutes
def test_promtool_finds_what_the_table_says(tmp_path: Path) -> None:
    assert shutil.which("promtool"), (
        "promtool (Debian: prometheus) is installed by scripts/bootstrap"
    )
    done = alert_corpus.run(alert_corpus.promtool_tests(alert_corpus.documented()), tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "SUCCESS" in done.stdout


def test_every_scenario_is_a_day_of_probes_in_expanding_notation() -> None:
    document = alert_corpus.promtool_tests(None)
    [test] = document["tests"]
    assert test["interval"] == "15s" and document["evaluation_interval"] == "15s"
    faults = [s for s in SCENARIOS if s.faults]
    assert all(s.faults[0].start == s.at for s in faults)
    for item in test["input_series"]:
        values = item["values"].split()
        assert len(values) < 3000, item["series"]
    failures = [i for i in test["input_series"] if "consecutive_failures" in i["series"]]
    assert len(failures) == 3 * 3 + 3 * 3 * 3
    assert any("x" in i["values"] for i in failures)


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([0.0, 0.0, 0.0], "0x2"),
        ([None, None, 1.0, 2.0, 3.0], "_x2 1+1x2"),
        ([5.0, None, 5.0], "5 _ 5"),
        ([1.5, 1.0], "1.5-0.5x1"),
    ],
)
def test_the_notation_is_promtools(values: list[float | None], text: str) -> None:
    assert alert_corpus._notation(values) == text

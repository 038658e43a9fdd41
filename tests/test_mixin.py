"""The monitoring mixin (deploy/mixin) is the source of the shipped rules, the PrometheusRule and
the Grafana dashboards: what ``deploy/mixin/generate`` writes must be what is committed, its
_config must reach the generated files, and its prometheusAlerts, prometheusRules and
grafanaDashboards must be what those files say."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MIXIN = ROOT / "deploy" / "mixin"
RULES = "deploy/prometheus/rules/mailbox.rules.yml"
PROMETHEUSRULE = "deploy/kubernetes/prometheusrule.yaml"
SHIPPED = sorted(
    {
        RULES,
        PROMETHEUSRULE,
        *(str(p.relative_to(ROOT)) for p in (ROOT / "deploy/prometheus/rules").glob("*.yml")),
        *(str(p.relative_to(ROOT)) for p in (ROOT / "deploy/grafana/dashboards").glob("*.json")),
    }
)


def _generate(out: Path, config: str | None = None) -> Path:
    argv = [str(MIXIN / "generate"), str(out)] + ([config] if config else [])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


def _jsonnet(code: str) -> Any:
    done = subprocess.run(
        ["jsonnet", "-J", str(MIXIN), "-e", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


pytestmark = pytest.mark.services  # jsonnet: not in the quick tier


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("mixin"))


def _rules(text: str) -> dict[str, dict[str, Any]]:
    """Every rule by its alert or record name."""
    loaded = yaml.safe_load(text)
    groups = loaded["spec"]["groups"] if "spec" in loaded else loaded["groups"]
    return {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}


@pytest.mark.parametrize("path", SHIPPED)
def test_the_committed_file_is_what_the_mixin_generates(generated: Path, path: str) -> None:
    assert (generated / path).read_bytes() == (ROOT / path).read_bytes(), (
        f"{path} differs from what deploy/mixin generates: edit the mixin, not the file, "
        "and run deploy/mixin/generate"
    )


def test_the_mixin_generates_nothing_else(generated: Path) -> None:
    written = sorted(str(p.relative_to(generated)) for p in generated.rglob("*") if p.is_file())
    assert written == SHIPPED


def test_the_mixin_fields_are_the_shipped_rules_and_dashboards() -> None:
    mixin = _jsonnet(
        "local m = import 'mixin.libsonnet';"
        " {alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards}"
    )
    groups = mixin["alerts"]["groups"] + mixin["rules"]["groups"]
    assert groups == yaml.safe_load((ROOT / RULES).read_text())["groups"]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "kube-prometheus puts both fields in one PrometheusRule"
    assert all("alert" in r for g in mixin["alerts"]["groups"] for r in g["rules"])
    assert all(any("record" in r for r in g["rules"]) for g in mixin["rules"]["groups"])
    for name, board in mixin["dashboards"].items():
        assert board == json.loads((ROOT / "deploy/grafana/dashboards" / name).read_text())


def test_config_values_reach_the_generated_files(tmp_path: Path) -> None:
    out = _generate(
        tmp_path,
        '{jobSelector: \'job="mail"\', sloObjective: 0.995, dashboardRefresh: "5m",'
        " forDurations+: {MailboxExporterDown: '7m'},"
        " keepFiringFor+: {MailboxWidespreadOutage: '4m'}}",
    )
    shipped = _rules((ROOT / RULES).read_text())
    for path in (RULES, PROMETHEUSRULE):
        rules = _rules((out / path).read_text())
        assert rules["mailbox:roundtrip_availability:objective"]["expr"] == "vector(0.995)"
        assert rules["MailboxExporterDown"]["for"] == "7m"
        assert rules["MailboxExporterDown"]["expr"] == 'up{job="mail"} == 0'
        assert 'job="mail"' in rules["MailboxExporterAbsent"]["annotations"]["description"]
        assert rules["MailboxWidespreadOutage"]["keep_firing_for"] == "4m"
        unchanged = {"MailboxExporterDown", "MailboxExporterAbsent", "MailboxWidespreadOutage"}
        assert {
            name for name, rule in rules.items() if rule != shipped[name] and name not in unchanged
        } == {"mailbox:roundtrip_availability:objective"}
    for board in (out / "deploy/grafana/dashboards").glob("*.json"):
        assert json.loads(board.read_text())["refresh"] == "5m"
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian: prometheus) is needed"
    checked = subprocess.run(
        [promtool, "check", "rules", str(out / RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_mixin_source_is_formatted() -> None:
    sources = [str(p) for p in MIXIN.rglob("*") if p.suffix in (".jsonnet", ".libsonnet")]
    done = subprocess.run(
        ["jsonnetfmt", "--test", *sources], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"run jsonnetfmt -i on: {done.stdout}{done.stderr}"

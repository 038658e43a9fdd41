"""The configurations of docs/deployment.md: the exporter's load, Prometheus' pass promtool."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from testing.deploy import RULES, doc_blocks, ok, parse_faking_secrets, run


def test_documented_configurations_are_valid(tmp_path: Path) -> None:
    """Every configuration in docs/deployment.md loads (secret files faked)."""
    configs = [b for b in doc_blocks("yaml") if re.search(r"^targets:", b, re.M)]
    assert len(configs) >= 3
    for number, text in enumerate(configs):
        assert parse_faking_secrets(text, tmp_path / str(number)).targets


def test_documented_prometheus_configurations_are_valid(tmp_path: Path) -> None:
    """promtool on every scrape configuration of the docs, with the shipped rules beside it.

    Debian's promtool is built without Kubernetes discovery: that part is swapped for a static
    target, so that the rest (the relabelling) is still checked.
    """
    blocks = [b for b in doc_blocks("yaml") if re.search(r"^scrape_configs:", b, re.M)]
    assert len(blocks) >= 3
    shutil.copytree(RULES.parent, tmp_path / "rules")
    kubernetes = re.compile(r"kubernetes_sd_configs:\n(?: {6,}.*\n)+")
    for number, text in enumerate(blocks):
        path = tmp_path / f"prometheus-{number}.yml"
        path.write_text(kubernetes.sub("static_configs: [{targets: [pod:10025]}]\n", text))
        ok(run(["promtool", "check", "config", "--syntax-only", str(path)]))

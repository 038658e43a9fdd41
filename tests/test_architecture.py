"""The shape of the code: protocol code stays in transports, readers never import it, and
every closed set (checks, transports, phases, reasons) is covered by its table."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from exporter.config import SECTIONS
from exporter.config.checks import CHECKS
from exporter.outcome import Check, Phase
from exporter.probes.registry import PROBERS
from exporter.transports.registry import TRANSPORTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"
PROTOCOL_LIBRARIES = ("aiosmtplib", "aioimaplib")
READERS = (
    "exporter.serve.status",
    "exporter.serve.metrics",
    "exporter.serve.web",
    "exporter.state",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_transports_import_the_protocol_libraries() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imports(path) if name.startswith(PROTOCOL_LIBRARIES)
        )
        for path in PACKAGE.rglob("*.py")
        if "transports" not in path.parts
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_readers_of_results_load_no_protocol_code() -> None:
    """Importing the status page, metrics, web layer and store pulls in no protocol module,
    directly or through anything they import."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; import {', '.join(READERS)}; "
            "print(sorted(m for m in sys.modules if m.startswith(('aiosmtplib', 'aioimaplib', "
            "'exporter.transports', 'exporter.probes'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    assert loaded == "[]"


def test_every_check_has_its_facts_and_its_prober() -> None:
    assert set(CHECKS) == set(Check)
    assert set(PROBERS) == set(Check)


def test_every_transport_has_a_configuration_section_playing_the_same_roles() -> None:
    assert set(TRANSPORTS) == set(SECTIONS)
    for name, transport in TRANSPORTS.items():
        section = SECTIONS[name]
        assert (transport.sender is not None) == section.sends, name
        assert (transport.receiver is not None) == section.receives, name
    logins = {spec.login_of for spec in CHECKS.values() if spec.login_of}
    assert logins == {name for name, t in TRANSPORTS.items() if t.login is not None}


def test_every_phase_is_documented() -> None:
    documented = (ROOT / "docs" / "metrics.md").read_text()
    assert [p.value for p in Phase if f"`{p.value}`" not in documented] == []


def test_every_transport_section_is_read_by_its_own_module() -> None:
    """A transport's configuration (its dataclass, keys and reader) lives in
    ``exporter/config/sections/NAME.py``; the loader reads only what targets share."""
    for name, section in SECTIONS.items():
        module = importlib.import_module(f"exporter.config.sections.{name}")
        assert module.SECTION is section, name
        assert section.keys == module.KEYS, name
        assert section.read is module.read_section, name
    loader = ast.parse((PACKAGE / "config" / "load.py").read_text())
    defined = {
        node.name for node in ast.walk(loader) if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    assert {f"_{name}" for name in SECTIONS} & defined == set()
    assert [n for n in defined if n.endswith("Config")] == []

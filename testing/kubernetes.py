"""The Kubernetes manifests checked against published schemas, offline: Kubernetes' own API
schemas for each supported version (kubernetes-validate, strict: an unknown field fails, as
under kubectl's strict field validation), and the Prometheus Operator's for its objects
(testing/crd-validate/, in Node.js; scripts/bootstrap installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate

Yaml = dict[str, Any]

# The oldest Kubernetes the StatefulSet runs on (its pods' apps.kubernetes.io/pod-index label
# came in 1.28) and the newest kubernetes-validate (pinned in pyproject.toml) has schemas for.
KUBERNETES_VERSIONS = ("1.28", "1.37")

OPERATOR_GROUP = "monitoring.coreos.com"
# testing/crd-validate/package.json pins the models, generated from this operator release's
# API types (the types its CRDs are generated from).
PROMETHEUS_OPERATOR = "v0.91.0"
OPERATOR_MODELS = ("@kubernetes-models/prometheus-operator", "6.0.0")

CRD_VALIDATE = Path(__file__).resolve().parent / "crd-validate"
CRD_VALIDATE_TIMEOUT = 120  # seconds; about two on this machine


def is_operators(doc: Yaml) -> bool:
    """Whether the object is one of the Prometheus Operator's custom resources."""
    return str(doc.get("apiVersion", "")).split("/")[0] == OPERATOR_GROUP


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else key
    return text or "(object)"


def kubernetes_errors(doc: Yaml, version: str) -> list[str]:
    """Why the API server of that Kubernetes version would refuse the object (empty if it
    would not): the first schema violation, or a kind it does not serve at that apiVersion.

    Raises if the installed kubernetes-validate has no schemas for that exact version (it
    would otherwise validate against an older one)."""
    try:
        used = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_dotted(error.path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [str(error.message)]
    if used != version:
        raise LookupError(f"kubernetes-validate has no schemas for {version} (used {used})")
    return []


def _installed_models() -> str:
    name, _ = OPERATOR_MODELS
    package = CRD_VALIDATE / "node_modules" / name / "package.json"
    if not package.is_file():
        raise FileNotFoundError(f"{package} is missing: run scripts/bootstrap")
    version: str = json.loads(package.read_text())["version"]
    return version


def operator_errors(docs: list[Yaml]) -> list[list[str]]:
    """For each Prometheus Operator object, why the API server with the operator's CRDs
    installed would refuse it (an empty list if it would not): wrong types, missing fields,
    values outside an enum or pattern, unknown fields, unknown kinds."""
    name, pinned = OPERATOR_MODELS
    installed = _installed_models()
    if installed != pinned:
        raise RuntimeError(
            f"{name} {installed} is installed, {pinned} pinned: run scripts/bootstrap"
        )
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is missing: run scripts/bootstrap")
    done = subprocess.run(
        [node, str(CRD_VALIDATE / "validate.mjs")],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=CRD_VALIDATE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"validate.mjs failed ({done.returncode}):\n{done.stderr}")
    results = json.loads(done.stdout)
    if not (
        isinstance(results, list)
        and len(results) == len(docs)
        and all(isinstance(r, list) and all(isinstance(e, str) for e in r) for r in results)
    ):
        raise RuntimeError(f"validate.mjs answered {done.stdout[:200]!r}")
    return results

"""The Kubernetes manifests: no cluster runs here, so each object is checked against the
published schemas of Kubernetes and of the Prometheus Operator (testing/kubernetes.py), against
the other objects and the image, and through the exporter's own configuration parser and
sharding."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter import shard
from testing.deploy import (
    DOCS,
    K8S,
    ROOT,
    RULE_JOB,
    RULES,
    Yaml,
    doc_blocks,
    ok,
    parse_faking_secrets,
    probe_key_file,
    run,
    secret_files,
    stage_args,
)
from testing.kubernetes import (
    CRD_VALIDATE,
    KUBERNETES_VERSIONS,
    OPERATOR_MODELS,
    PROMETHEUS_OPERATOR,
    is_operators,
    kubernetes_errors,
    operator_errors,
)


@functools.cache
def manifests() -> dict[str, list[Yaml]]:
    """Every YAML document of deploy/kubernetes/, by file name (parsed once: copy to change)."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for path in sorted(K8S.glob("*.yaml"))
    }


def _objects() -> dict[tuple[str, str], Yaml]:
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for name, docs in manifests().items()
        if name != "kustomization.yaml"
        for doc in docs
    }


def _only(kind: str) -> Yaml:
    (found,) = [doc for (k, _), doc in _objects().items() if k == kind]
    return found


# What kubectl is told to apply: the kustomization's resources, and the Secret, made by hand.
BUILT_IN_KINDS = {"Namespace", "Secret", "ConfigMap", "StatefulSet", "Service"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _to_apply() -> list[tuple[str, Yaml]]:
    """Every object of the kustomization's resources and of the example Secret, by file."""
    (kustomization,) = manifests()["kustomization.yaml"]
    files = [*kustomization["resources"], "secret.example.yaml"]
    return [(name, doc) for name in files for doc in manifests()[name]]


def test_kubernetes_objects_are_named_and_in_the_kustomization_namespace() -> None:
    """What the schemas leave out: every object named, in the namespace the kustomization
    sets, and an image for the container (optional in the API, needed to start a pod)."""
    docs = manifests()
    assert set(docs) >= {
        f"{name}.yaml"
        for name in (
            "secret.example",
            "configmap",
            "statefulset",
            "service",
            "servicemonitor",
            "prometheusrule",
            "kustomization",
        )
    }
    namespace = docs["kustomization.yaml"][0]["namespace"]
    for name, doc in _to_apply():
        assert doc["kind"] in BUILT_IN_KINDS | OPERATOR_KINDS, (name, doc["kind"])
        assert doc["metadata"]["name"], name
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, name
    for container in _only("StatefulSet")["spec"]["template"]["spec"]["containers"]:
        assert container["name"] and container["image"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_the_oldest_and_newest_supported_kubernetes(
    version: str,
) -> None:
    """Each object as that Kubernetes' API schemas define it: required fields, types, and no
    field the API server does not know (strict)."""
    built_in = [(name, doc) for name, doc in _to_apply() if not is_operators(doc)]
    assert {doc["kind"] for _, doc in built_in} == BUILT_IN_KINDS
    errors = {f"{name}: {doc['kind']}": kubernetes_errors(doc, version) for name, doc in built_in}
    assert not any(errors.values()), errors


def test_servicemonitor_and_prometheusrule_are_valid_for_the_prometheus_operator() -> None:
    """Both as the operator's CRDs define them (generated deploy/kubernetes/prometheusrule.yaml
    included): types, required fields, enums, patterns, and no unknown field."""
    operators = [(name, doc) for name, doc in _to_apply() if is_operators(doc)]
    assert {doc["kind"] for _, doc in operators} == OPERATOR_KINDS
    results = operator_errors([doc for _, doc in operators])
    errors = {name: found for (name, _), found in zip(operators, results, strict=True)}
    assert not any(errors.values()), errors


def _broken(doc: Yaml, dotted: str, value: Any) -> Yaml:
    """A copy of the object with the field at that path (a.b.0.c) set to value."""
    broken = copy.deepcopy(doc)
    *parents, last = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    node: Any = broken
    for key in parents:
        node = node[key]
    node[last] = value
    return broken


def test_validation_refuses_a_misspelt_field_a_wrong_type_and_an_unknown_kind() -> None:
    """The validators are not a no-op: each breakage is refused with an error that names it,
    while the object it was made from passes."""
    statefulset, service = _only("StatefulSet"), _only("Service")
    monitor, rule = _only("ServiceMonitor"), _only("PrometheusRule")
    container = "spec.template.spec.containers.0"
    # (object, field to set, value, what every error must name)
    built_in = [
        (statefulset, f"{container}.securityContext.readOnlyRootFileSystem", True, "FileSystem"),
        (statefulset, "spec.replicas", "2", "spec.replicas"),
        (statefulset, f"{container}.ports.0.containerPort", "metrics", "containerPort"),
        (service, "spec.clusterIp", "None", "clusterIp"),
        (service, "apiVersion", "v2", "api version v2"),
    ]
    for version in KUBERNETES_VERSIONS:
        assert kubernetes_errors(statefulset, version) == kubernetes_errors(service, version) == []
        for doc, dotted, value, named in built_in:
            (error,) = kubernetes_errors(_broken(doc, dotted, value), version)
            assert named in error, (version, dotted, error)
    operators = [
        (monitor, "spec.endpoints.0.relabellings", [], "endpoints[0].relabellings: "),
        (monitor, "spec.endpoints.0.interval", 15, "endpoints[0].interval: "),
        (monitor, "spec.endpoints.0.scheme", "ftp", "endpoints[0].scheme: "),
        (rule, "spec.groups.0.rules.0.for", "ten minutes", "rules[0].for: "),
        (rule, "spec.groups.0.rules.0.labels", {"severity": 2}, "labels.severity: "),
        (rule, "metadata.label", {}, "metadata.label: "),
        (monitor, "kind", "ServiceMonitors", "ServiceMonitors"),
    ]
    broken = [_broken(doc, dotted, value) for doc, dotted, value, _ in operators]
    *refused, monitor_errors, rule_errors = operator_errors([*broken, monitor, rule])
    assert (monitor_errors, rule_errors) == ([], [])
    for (_, dotted, _, named), errors in zip(operators, refused, strict=True):
        assert errors and all(named in e for e in errors), (dotted, errors)


def test_docs_name_the_kubernetes_and_operator_versions_validated() -> None:
    """docs/deployment.md tells which versions the manifests are checked against, and those
    are the versions the validators have."""
    (kubernetes,) = [s for s in DOCS.read_text().split("\n## ") if s.startswith("Kubernetes\n")]
    for version in (*KUBERNETES_VERSIONS, PROMETHEUS_OPERATOR):
        assert version in kubernetes, version
    assert kubernetes_validate.latest_version().startswith(f"{KUBERNETES_VERSIONS[-1]}.")
    package = json.loads((CRD_VALIDATE / "package.json").read_text())
    name, version = OPERATOR_MODELS
    assert package["dependencies"][name] == version


def test_kustomization_lists_every_manifest_but_the_example_secret(tmp_path: Path) -> None:
    """`kubectl apply -k` must bring up everything but the Secret, which it must never overwrite."""
    (kustomization,) = manifests()["kustomization.yaml"]
    resources = kustomization["resources"]
    assert all((K8S / r).is_file() for r in resources)
    others = set(manifests()) - {"kustomization.yaml", "secret.example.yaml"}
    assert set(resources) == others, "secret.example.yaml stays out: applying must not replace it"
    kubectl = shutil.which("kubectl")
    if kubectl:  # an offline build, when kubectl is there
        built = list(yaml.safe_load_all(ok(run([kubectl, "kustomize", str(K8S)]))))
        assert sorted(d["kind"] for d in built) == sorted(
            d["kind"] for r in resources for d in manifests()[r]
        )


def _container() -> Yaml:
    (container,) = _only("StatefulSet")["spec"]["template"]["spec"]["containers"]
    result: Yaml = container
    return result


def _mount(volume_kind: str) -> tuple[str, Yaml]:
    """The mount path and the volume source of the container's volume of that kind."""
    volumes = _only("StatefulSet")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if volume_kind in v]
    (mount,) = [m for m in _container()["volumeMounts"] if m["name"] == volume["name"]]
    return mount["mountPath"], volume[volume_kind]


def test_statefulset_shards_by_ordinal_and_runs_unprivileged() -> None:
    """One shard per pod, and a pod the `restricted` Pod Security Standard admits."""
    statefulset = _only("StatefulSet")
    spec, pod = statefulset["spec"], statefulset["spec"]["template"]["spec"]
    container = _container()
    shards = [a for a in container["args"] if a.startswith("--shard=")]
    assert shards == [f"--shard=$(POD_INDEX)/{spec['replicas']}"], "COUNT must equal replicas"
    assert spec["replicas"] == 2
    (index,) = [e for e in container["env"] if e["name"] == "POD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["serviceName"] == _only("Service")["metadata"]["name"]
    user = stage_args(1, "USER")[0].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user, "the image's user"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 10025)
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_configmap_config_is_valid_and_names_only_secrets_that_exist(tmp_path: Path) -> None:
    """The config the pods read validates, and every secret file it names is a key of the
    Secret, at the path the StatefulSet mounts it."""
    config_dir, config_volume = _mount("configMap")
    secret_dir, secret_volume = _mount("secret")
    configmap, secret = _only("ConfigMap"), _only("Secret")
    assert config_volume["name"] == configmap["metadata"]["name"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    (config_arg,) = [a for a in _container()["args"] if a.startswith("--config.file=")]
    config_path = Path(config_arg.split("=", 1)[1])
    assert config_path.parent == Path(config_dir)
    text = configmap["data"][config_path.name]
    keys = set(secret.get("stringData") or secret["data"])
    named = secret_files(text) | {probe_key_file(text)}
    assert {Path(p).parent for p in named} == {Path(secret_dir)}
    assert {Path(p).name for p in named} == keys, "the Secret has exactly the files named"
    key = secret.get("stringData", {})["probe.key"]
    assert len(bytes.fromhex(key)) == 32, "the exporter only reads an existing key"
    parsed = parse_faking_secrets(text, tmp_path)
    assert len(parsed.targets) >= 3, "something to shard"


def test_every_pod_gets_a_valid_shard_and_every_target_one_pod(tmp_path: Path) -> None:
    """--shard as each pod runs it, through the exporter's own parser and split."""
    replicas = _only("StatefulSet")["spec"]["replicas"]
    (template,) = [a for a in _container()["args"] if a.startswith("--shard=")]
    parsed = parse_faking_secrets(_only("ConfigMap")["data"]["config.yml"], tmp_path)
    shares = [
        {
            t.name
            for t in shard.parse(template[len("--shard=") :].replace("$(POD_INDEX)", str(i)))
            .select(parsed)
            .targets
        }
        for i in range(replicas)
    ]
    assert all(shares), "every pod probes something"
    assert sorted(n for share in shares for n in share) == sorted(t.name for t in parsed.targets)


def test_service_and_servicemonitor_scrape_every_pod_as_the_rules_expect() -> None:
    """Every shard scraped, as job="mailbox-exporter", or the exporter alerts never fire."""
    service, monitor = _only("Service"), _only("ServiceMonitor")
    pod_labels = _only("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None", "headless: one endpoint per pod"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == RULE_JOB
    assert relabel["instance"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]
    assert f'job="{RULE_JOB}"' in RULES.read_text()


def test_prometheusrule_groups_are_the_rules_files_groups() -> None:
    """The operator's copy of the rules must not drift from the shipped file."""
    rule = _only("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "deploy/kubernetes/prometheusrule.yaml is out of date: regenerate it as "
        "docs/deployment.md says"
    )


@pytest.mark.services  # jsonnet: not in the quick tier
def test_the_documented_regeneration_reproduces_the_prometheusrule(tmp_path: Path) -> None:
    """The command the docs give to regenerate the PrometheusRule works (from the mixin)."""
    (block,) = [b for b in doc_blocks("sh") if "deploy/mixin/generate" in b]
    shutil.copytree(ROOT / "deploy" / "mixin", tmp_path / "deploy" / "mixin")
    ok(run(["/bin/bash", "-c", block], cwd=tmp_path))
    regenerated = tmp_path / "deploy" / "kubernetes" / "prometheusrule.yaml"
    assert yaml.safe_load(regenerated.read_text()) == _only("PrometheusRule")

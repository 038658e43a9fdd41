"""The Kubernetes manifests: no cluster runs here, so each object is checked against the fields
its kind requires, against the other objects and the image, and through the exporter's own
configuration parser and sharding."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from exporter import shard
from testing.deploy import (
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


def manifests() -> dict[str, list[Yaml]]:
    """Every YAML document of deploy/kubernetes/, by file name."""
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


REQUIRED: dict[str, list[str]] = {
    "Namespace": [],
    "Secret": [],
    "ConfigMap": ["data"],
    "StatefulSet": [
        "spec.selector.matchLabels",
        "spec.serviceName",
        "spec.template.metadata.labels",
        "spec.template.spec.containers",
    ],
    "Service": ["spec.ports", "spec.selector"],
    "ServiceMonitor": ["spec.selector", "spec.endpoints"],
    "PrometheusRule": ["spec.groups"],
}


def _field(doc: Yaml, dotted: str) -> Any:
    value: Any = doc
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"missing {dotted}"
        value = value[key]
    return value


def test_kubernetes_manifests_carry_what_their_kinds_require() -> None:
    """No cluster here: each object has what the API server would insist on."""
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
    for name, objects in docs.items():
        if name == "kustomization.yaml":
            continue
        for doc in objects:
            assert doc.get("apiVersion") and doc.get("kind") in REQUIRED, (name, doc.get("kind"))
            assert doc["metadata"]["name"], name
            for dotted in REQUIRED[doc["kind"]]:
                assert _field(doc, dotted), (name, dotted)
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, name
    for kind in ("Secret", "ConfigMap"):
        data = _only(kind).get("stringData") or _only(kind)["data"]
        assert all(isinstance(v, str) for v in data.values()), f"{kind}: quote every value"
    for container in _field(_only("StatefulSet"), "spec.template.spec.containers"):
        assert container["name"] and container["image"]
    for port in _only("Service")["spec"]["ports"]:
        assert port["port"] and port["name"]
    for endpoint in _only("ServiceMonitor")["spec"]["endpoints"]:
        assert endpoint["port"]
    assert _only("PrometheusRule")["apiVersion"] == "monitoring.coreos.com/v1"
    assert _only("ServiceMonitor")["apiVersion"] == "monitoring.coreos.com/v1"


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


def test_the_documented_regeneration_reproduces_the_prometheusrule(tmp_path: Path) -> None:
    """The command the docs give to regenerate the PrometheusRule works (from the mixin)."""
    (block,) = [b for b in doc_blocks("sh") if "deploy/mixin/generate" in b]
    shutil.copytree(ROOT / "deploy" / "mixin", tmp_path / "deploy" / "mixin")
    ok(run(["/bin/bash", "-c", block], cwd=tmp_path))
    regenerated = tmp_path / "deploy" / "kubernetes" / "prometheusrule.yaml"
    assert yaml.safe_load(regenerated.read_text()) == _only("PrometheusRule")

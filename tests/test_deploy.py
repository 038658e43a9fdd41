"""Deployment assets: the image's install steps, Kubernetes, Compose, systemd, and their docs.

No container engine or cluster runs here, so each asset is checked by what can run: the
Dockerfile's own pip steps in fresh virtual environments (then the installed exporter probes
the real mail stack), the manifests against the fields their kinds require and against each
other, the mail server's configs by Postfix's and Dovecot's own parsers, and the systemd unit
by systemd-analyze.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

import exporter
from exporter import config, shard
from exporter.config import Config
from testing.exporter_process import free_port
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
RULES = DEPLOY / "prometheus" / "rules" / "mailbox.rules.yml"
UNIT = DEPLOY / "systemd" / "mailbox-exporter.service"
DOCS = ROOT / "docs" / "deployment.md"
RULE_JOB = "mailbox-exporter"  # the job the shipped rules match on

Yaml = dict[str, Any]

# ------------------------------------------------------------------ helpers


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


_SECRET_FILE = re.compile(r"\b(?:password|client_secret|refresh_token)_file:\s*([^\s,}]+)")
_SECRET_ENV = re.compile(r"\b\w+_env:\s*([A-Za-z_]\w*)")
_KEY_FILE = re.compile(r"\bprobe_key_file:\s*([^\s,}]+)")


def secret_files(text: str) -> set[str]:
    """The secret file paths a configuration names."""
    return set(_SECRET_FILE.findall(text))


def probe_key_file(text: str) -> str:
    """The configuration's global.probe_key_file."""
    (path,) = _KEY_FILE.findall(text)
    return str(path)


def parse_faking_secrets(text: str, root: Path) -> Config:
    """Parse with every named secret file created under `root`, every `*_env` variable set.

    The paths only exist where the exporter runs (a container, a pod, a systemd service), so
    each is moved below `root`: the rest is validated by the exporter's own parser.
    """

    def move(match: re.Match[str]) -> str:
        fake = root / match.group(1).lstrip("/")
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text("secret\n")
        return match.group(0).replace(match.group(1), str(fake))

    environ = dict.fromkeys(_SECRET_ENV.findall(text), "secret")
    return config.parse(_SECRET_FILE.sub(move, text), base_dir=root, environ=environ)


# ------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped, by build stage."""
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), " ".join(args.split())))
    return instructions


def _stage(stage: int, keyword: str) -> list[str]:
    return [i.args for i in dockerfile() if i.stage == stage and i.keyword == keyword]


def _env(stage: int) -> dict[str, str]:
    return dict(token.split("=", 1) for args in _stage(stage, "ENV") for token in shlex.split(args))


def _run_command(args: str) -> str:
    """A RUN instruction's shell command, without its flags (--mount=...)."""
    return re.sub(r"^(--\S+\s+)*", "", args)


def test_dockerfile_has_the_required_instructions() -> None:
    """What `docker build` cannot check here: the shape of the image."""
    froms = [i.args for i in dockerfile() if i.keyword == "FROM"]
    assert froms == ["python:3.12-slim AS build", "python:3.12-slim"], "multi-stage, slim"
    final = {k: _stage(1, k) for k in ("USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD")}
    assert final["USER"] == ["10001:10001"], "numeric, so runAsNonRoot can check it"
    assert any("--uid 10001" in run and "--gid 10001" in run for run in _stage(1, "RUN"))
    assert final["EXPOSE"] == ["10025"]
    assert final["ENTRYPOINT"] == ['["mailbox-exporter"]']
    assert final["CMD"] == ['["--config.file=/etc/mailbox-exporter/config.yml"]']
    (healthcheck,) = final["HEALTHCHECK"]
    assert "HEALTHCHECK_URL" in healthcheck and "python" in healthcheck
    assert _env(1)["HEALTHCHECK_URL"] == "http://127.0.0.1:10025/-/healthy"
    labels = dict(token.split("=", 1) for token in shlex.split(" ".join(_stage(1, "LABEL"))))
    assert labels["org.opencontainers.image.licenses"] == "GPL-3.0-or-later"
    assert labels["org.opencontainers.image.title"] == "mailbox-exporter"
    # The runtime stage takes nothing from the build context: only the wheels, by a mount.
    assert not _stage(1, "COPY") and not _stage(1, "ADD")
    assert [_run_command(r).split()[:2] for r in _stage(0, "RUN")] == [["pip", "wheel"]]


def _ignore_rules() -> list[tuple[bool, list[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, os.path.normpath(line.lstrip("!")).split("/")))
    return rules


def _matches(pattern: list[str], parts: list[str]) -> bool:
    """Docker's matching: the path or one of its parents matches; `**` spans directories."""
    if not pattern:
        return True
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps `relative` out of the build context (the last match wins)."""
    ignored = False
    for negated, pattern in _ignore_rules():
        if _matches(pattern, relative.split("/")):
            ignored = not negated
    return ignored


def build_context(destination: Path) -> Path:
    """A copy of the files `docker build .` would send, by the .dockerignore rules."""
    for directory, dirs, files in os.walk(ROOT):
        base = Path(directory).relative_to(ROOT)
        dirs[:] = [d for d in dirs if d != ".git"]  # asserted ignored separately
        for name in files:
            relative = (base / name).as_posix()
            if not dockerignored(relative):
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, destination / relative)
    return destination


def test_dockerignore_lets_in_the_package_and_nothing_else(tmp_path: Path) -> None:
    """Secrets, tests and local state must never reach an image or a build cache."""
    context = build_context(tmp_path)
    sent = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "README.md", "LICENSE", "exporter/__init__.py"} <= sent
    assert all(
        p in {"pyproject.toml", "README.md", "LICENSE"} or p.startswith("exporter/") for p in sent
    )
    assert not any("__pycache__" in p for p in sent)
    for private in (".git/config", "tests/conftest.py", ".venv/bin/python", "deploy/compose"):
        assert dockerignored(private), private


def _copy_into(context: Path, workdir: Path, args: str) -> None:
    """COPY SRC... DEST from the build context: files by name, directories by content."""
    *sources, dest = shlex.split(args)
    target = workdir / dest
    for source in sources:
        path = context / source
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            into = target / path.name if dest.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)


def _clean_env() -> dict[str, str]:
    """This environment without what could make Python import the source tree instead."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _environment(venv_dir: Path, stage: int, isolated: bool) -> dict[str, str]:
    """The stage's ENV over this machine's, with the virtual environment first on PATH.

    `isolated` drops every pip setting of this machine (its extra indexes and find-links), so
    that an install from `--no-index --find-links /wheels` can use nothing but the wheels.
    """
    env = _clean_env()
    if isolated:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    env.update(_env(stage))
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env['PATH']}"
    return env


@dataclass(frozen=True)
class Installed:
    """The exporter as the image's steps installed it, in a virtual environment of its own."""

    venv: Path
    script: Path
    python: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Run the Dockerfile's pip steps, as written, with this machine's Python.

    Stage 1's COPY instructions fill a work directory from the .dockerignore'd context, and
    its pip RUN builds the wheels; stage 2's pip RUN installs them into a fresh virtual
    environment from those wheels alone. Only the path /wheels is changed.
    """
    base = tmp_path_factory.mktemp("image")
    context = build_context(base / "context")
    wheels = base / "wheels"
    (workdir,) = _stage(0, "WORKDIR")
    src = base / "stage1" / workdir.lstrip("/")
    src.mkdir(parents=True)
    for args in _stage(0, "COPY"):
        _copy_into(context, src, args)
    for stage, venv_dir, cwd in ((0, base / "build-venv", src), (1, base / "venv", base)):
        venv.create(venv_dir, with_pip=True)
        runs = [_run_command(r) for r in _stage(stage, "RUN") if "pip " in r]
        assert runs, f"no pip step in stage {stage + 1}"
        for command in runs:
            done = _run(
                ["/bin/sh", "-c", command.replace("/wheels", str(wheels))],
                cwd=cwd,
                env=_environment(venv_dir, stage, isolated=stage == 1),
            )
            _ok(done)
    assert sorted(p.name for p in wheels.glob("mailbox_exporter-*.whl"))
    target = base / "venv"
    return Installed(target, target / "bin" / "mailbox-exporter", target / "bin" / "python")


def test_the_image_steps_install_a_working_exporter(
    installed: Installed, tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """What the image will run is the installed package, complete: it checks a configuration
    and probes a real mailbox (dependencies missing from the wheels would fail here)."""
    where = _ok(
        _run(
            [str(installed.python), "-c", "import exporter; print(exporter.__file__)"],
            cwd=tmp_path,
            env=_clean_env(),
        )
    )
    assert Path(where.strip()).is_relative_to(installed.venv), "the installed copy, not the tree"
    version = _ok(_run([str(installed.script), "--version"], cwd=tmp_path, env=_clean_env()))
    assert version.strip() == f"mailbox-exporter {exporter.__version__}"
    path = tmp_path / "config.yml"
    path.write_text("targets:\n" + target_yaml(mailstack, user))
    checked = _ok(
        _run(
            [str(installed.script), f"--config.file={path}", "--config.check"],
            cwd=tmp_path,
            env=_clean_env(),
        )
    )
    assert "OK" in checked and "local" in checked
    probe = _run(
        [str(installed.script), f"--config.file={path}", "probe", "local"],
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.count("result: success") == 3, probe.stdout


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _mdwe_supported() -> bool:
    """Linux 6.3+ can refuse writable-executable memory to a process, as systemd's
    MemoryDenyWriteExecute= does with seccomp."""
    code = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return _run([sys.executable, "-c", code]).returncode == 0


def _deny_write_execute() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _healthcheck(installed: Installed, url: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, as written, with HEALTHCHECK_URL set to `url`."""
    (healthcheck,) = _stage(1, "HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert argv[0] == "python"
    env = _env(1) | {"HEALTHCHECK_URL": url}
    return _run([str(installed.python), *argv[1:]], env=env, timeout=10)


def _wait(predicate: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def running(self) -> None:
        assert self.process.poll() is None, self.log.read_text()


@contextlib.contextmanager
def serve(
    installed: Installed,
    config_file: Path,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Server]:
    """The installed console script serving on a free port; killed if the test did not stop it."""
    port, log = free_port(), config_file.parent / "exporter.log"
    argv = [str(installed.script), f"--config.file={config_file}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, f"--web.listen-address=127.0.0.1:{port}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config_file.parent,
            env=_clean_env(),
            preexec_fn=preexec_fn,
        )
    try:
        yield Server(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _http(
    url: str, *, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_the_installed_server_runs_as_deployed_without_writable_code(
    installed: Installed, tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """The installed server, with writable-executable memory refused as systemd's
    MemoryDenyWriteExecute=yes does (where the kernel can), probes successfully, makes its
    probe key, answers the image's health check, and stops on SIGTERM as a container's PID 1
    must."""
    key = tmp_path / "state" / "probe.key"
    path = tmp_path / "config.yml"
    path.write_text(
        f"global:\n  probe_key_file: {key}\ntargets:\n"
        + target_yaml(mailstack, user, interval="3s", timeout="3s")
    )
    deny = _deny_write_execute if _mdwe_supported() else None
    with serve(installed, path, preexec_fn=deny) as server:
        url = f"http://127.0.0.1:{server.port}"

        def probed() -> bool:
            server.running()
            try:
                status, text = _http(f"{url}/metrics")
            except OSError:
                return False
            return status == 200 and any(
                sample.name == "mailbox_probe_success"
                and sample.labels == {"target": "local", "check": "roundtrip"}
                and sample.value == 1
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            )

        _wait(probed, 30, "no successful round trip", server.log)
        assert _healthcheck(installed, f"{url}/-/healthy").returncode == 0
        assert key.stat().st_mode & 0o777 == 0o600
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0, server.log.read_text()
    assert _healthcheck(installed, f"{url}/-/healthy").returncode != 0, "stopped is unhealthy"


def test_the_documented_web_config_guards_every_endpoint_but_healthy(
    installed: Installed, tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """The docs' --web.config.file example as it stands (its bcrypt hash is of the password
    it names), with a certificate of our own; and the image's health check over HTTPS."""
    (web,) = [b for b in _blocks("yaml") if "basic_auth_users:" in b]
    password = re.search(r'this one is of "([^"]+)"', web)
    assert password, "the example names the password its hash is of"
    ca = trustme.CA()
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    tls = yaml.safe_load(web)["tls_server_config"]
    web_file = tmp_path / "web.yml"
    web_file.write_text(
        web.replace(tls["cert_file"], str(cert_file)).replace(tls["key_file"], str(key_file))
    )
    path = tmp_path / "config.yml"
    path.write_text("targets:\n" + target_yaml(mailstack, user, interval="10m"))
    with serve(installed, path, f"--web.config.file={web_file}") as server:
        url = f"https://127.0.0.1:{server.port}"
        context = ssl.create_default_context(cafile=str(ca_file))

        def healthy() -> bool:
            server.running()
            return _healthcheck(installed, f"{url}/-/healthy").returncode == 0

        _wait(healthy, 20, "the health check over HTTPS never passed", server.log)
        assert _http(f"{url}/-/healthy", context=context)[0] == 200
        for path_ in ("/metrics", "/-/ready", "/", "/probe?target=local&check=smtp_login"):
            assert _http(f"{url}{path_}", context=context)[0] == 401, path_
        (name,) = yaml.safe_load(web)["basic_auth_users"]
        good, bad = (name, password.group(1)), (name, "not-" + password.group(1))
        assert _http(f"{url}/metrics", auth=good, context=context)[0] == 200
        assert _http(f"{url}/-/ready", auth=good, context=context)[0] == 200
        assert _http(f"{url}/metrics", auth=bad, context=context)[0] == 401


# ------------------------------------------------------------------ Kubernetes


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
        built = list(yaml.safe_load_all(_ok(_run([kubectl, "kustomize", str(K8S)]))))
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
    user = _stage(1, "USER")[0].split(":")[0]
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
    """The command the docs give to regenerate the PrometheusRule works."""
    (block,) = [b for b in _blocks("sh") if "sed '/^spec:/q'" in b]
    for path in (RULES, K8S / "prometheusrule.yaml"):
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    _ok(_run(["/bin/bash", "-c", block], cwd=tmp_path))
    regenerated = tmp_path / "deploy" / "kubernetes" / "prometheusrule.yaml"
    assert yaml.safe_load(regenerated.read_text()) == _only("PrometheusRule")


# ------------------------------------------------------------------ Compose


def _compose() -> Yaml:
    loaded: Yaml = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _binds(service: Yaml) -> dict[str, str]:
    """Bind mounts of a service (short syntax), container path -> host path."""
    binds = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            binds[target] = source
    return binds


def test_compose_has_the_five_services_and_everything_they_mount() -> None:
    """`docker compose up` fails on a missing bind-mount source: all must exist."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {
        "mailbox-exporter",
        "mailserver",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for name, service in services.items():
        for source in _binds(service).values():
            assert (COMPOSE.parent / source).exists(), f"{name}: {source}"
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build["context"]
            dockerfile_name = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
            assert (COMPOSE.parent / context / dockerfile_name).is_file(), name
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)
    for secret in compose["secrets"].values():
        assert (COMPOSE.parent / secret["file"]).is_file()
    assert (COMPOSE.parent / services["mailbox-exporter"]["build"]["context"]).resolve() == ROOT
    grafana = _binds(services["grafana"])
    for kind, name in (("dashboards", "mailbox.yml"), ("datasources", "prometheus.yml")):
        mounted = f"/etc/grafana/provisioning/{kind}/{name}"
        assert grafana[mounted] == f"./grafana/provisioning/{kind}/{name}"
        readme = (DEPLOY / "grafana" / "README.md").read_text()
        assert f":{mounted}:ro" in readme, "mounted as deploy/grafana/README.md says"
    (provider,) = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "mailbox.yml").read_text()
    )["providers"]
    assert grafana[provider["options"]["path"]] == "./grafana/dashboards", "where Grafana looks"
    assert _binds(services["alertmanager"]) == {
        "/etc/alertmanager/alertmanager.yml": "./alertmanager/alertmanager.yml"
    }


def test_compose_exporter_config_is_valid_and_reads_its_secret(tmp_path: Path) -> None:
    """The demo's exporter starts, with its password from the compose secret."""
    compose = _compose()
    exporter_service = compose["services"]["mailbox-exporter"]
    (config_arg,) = [a for a in exporter_service["command"] if a.startswith("--config.file=")]
    source = _binds(exporter_service)[config_arg.split("=", 1)[1]]
    text = (COMPOSE.parent / source).read_text()
    granted = {f"/run/secrets/{s}" for s in exporter_service["secrets"]}
    assert secret_files(text) and secret_files(text) <= granted
    volumes = dict(v.split(":")[1::-1] for v in exporter_service["volumes"])
    state = volumes[str(Path(probe_key_file(text)).parent)]
    assert state in _compose()["volumes"], "the probe key survives restarts in a named volume"
    assert exporter_service["read_only"] is True
    (target,) = parse_faking_secrets(text, tmp_path).targets
    mailserver = (DEPLOY / "compose" / "mailserver" / "Dockerfile").read_text()
    assert (target.smtp.host, target.imap.host) == ("mailserver", "mailserver")
    assert f"EXPOSE {target.smtp.port} {target.imap.port}" in mailserver
    assert (target.smtp.tls, target.imap.tls) == ("none", "none")


def test_compose_prometheus_config_is_valid_where_it_is_mounted(tmp_path: Path) -> None:
    """promtool on the config and the rules laid out as the container sees them."""
    prometheus = _compose()["services"]["prometheus"]
    binds = _binds(prometheus)
    for target, source in binds.items():
        place = tmp_path / target.lstrip("/")
        place.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (COMPOSE.parent / source).is_dir() else shutil.copy)(
            COMPOSE.parent / source, place
        )
    config_file = tmp_path / "etc" / "prometheus" / "prometheus.yml"
    out = _ok(_run(["promtool", "check", "config", str(config_file)]))
    assert "SUCCESS: 1 rule files found" in out, out
    scraped = yaml.safe_load(config_file.read_text())["scrape_configs"]
    (job,) = [j for j in scraped if j["job_name"] == RULE_JOB]
    assert job["static_configs"][0]["targets"] == ["mailbox-exporter:10025"]


def test_compose_mail_server_configs_pass_postfix_and_dovecot(tmp_path: Path) -> None:
    """The demo's mail server configs, by Postfix's and Dovecot's own parsers."""
    mailserver = DEPLOY / "compose" / "mailserver"
    for args in [i.args for i in dockerfile(mailserver / "Dockerfile") if i.keyword == "COPY"]:
        for source in shlex.split(args)[:-1]:
            assert (mailserver / source).is_file(), source
    done = _run(["postconf", "-c", str(mailserver), "-n"])
    assert done.returncode == 0 and not done.stderr, done.stderr  # unknown names warn
    assert "virtual_mailbox_domains = example.test" in done.stdout
    services = _ok(_run(["postconf", "-c", str(mailserver), "-M"]))
    assert re.search(r"^587\s+inet\b.*\bsmtpd\b", services, re.M), "submission, as configured"
    dovecot = _ok(_run(["doveconf", "-n", "-c", str(mailserver / "dovecot.conf")]))
    assert re.search(r"inet_listener imap \{\s+port = 143\s", dovecot)
    _ok(_run(["sh", "-n", str(mailserver / "entrypoint.sh")]))


# ------------------------------------------------------------------ systemd


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """Section.Key -> values, in order (keys such as SystemCallFilter= may repeat)."""
    settings: dict[str, list[str]] = {}
    section, pending = "", ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(" ".join(value.split()))
    return settings


HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "StateDirectory": "mailbox-exporter",
}


def test_systemd_unit_is_hardened_and_loads_credentials() -> None:
    """The hardening the docs promise, key by key."""
    settings = unit_settings()
    for key, value in HARDENING.items():
        assert settings.get(f"Service.{key}") == [value], key
    assert "@system-service" in settings["Service.SystemCallFilter"]
    (start,) = settings["Service.ExecStart"]
    assert start.split()[0] == "/opt/mailbox-exporter/bin/mailbox-exporter"
    assert "--config.file=/etc/mailbox-exporter/config.yml" in start.split()
    credentials = settings["Service.LoadCredential"]
    assert "monitor.password:/etc/mailbox-exporter/monitor.password" in credentials
    assert settings["Install.WantedBy"] == ["multi-user.target"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify reports unknown keys and bad values only as warnings: none may
    mention the unit. ExecStart must exist for verify, so it points at true(1) here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace(
            "/opt/mailbox-exporter/bin/mailbox-exporter", shutil.which("true") or "/bin/true"
        )
    )
    done = _run([analyze, "verify", str(unit)])
    assert done.returncode == 0, done.stderr
    assert UNIT.name not in done.stdout + done.stderr, done.stderr
    # The documented rating: "OK" (exposure 1.4 of 10); fail above 2.0.
    security = _run([analyze, "security", "--offline=yes", "--threshold=20", str(unit)])
    assert security.returncode == 0, security.stdout


# ------------------------------------------------------------------ docs


def _blocks(language: str) -> list[str]:
    text = DOCS.read_text()
    return [b.split("```", 1)[0] for b in text.split(f"```{language}\n")[1:]]


def test_documented_configurations_are_valid(tmp_path: Path) -> None:
    """Every configuration in docs/deployment.md loads (secret files faked)."""
    configs = [b for b in _blocks("yaml") if re.search(r"^targets:", b, re.M)]
    assert len(configs) >= 3
    for number, text in enumerate(configs):
        assert parse_faking_secrets(text, tmp_path / str(number)).targets


def test_documented_prometheus_configurations_are_valid(tmp_path: Path) -> None:
    """promtool on every scrape configuration of the docs, with the shipped rules beside it.

    Debian's promtool is built without Kubernetes discovery: that part is swapped for a static
    target, so that the rest (the relabelling) is still checked.
    """
    blocks = [b for b in _blocks("yaml") if re.search(r"^scrape_configs:", b, re.M)]
    assert len(blocks) >= 3
    shutil.copytree(RULES.parent, tmp_path / "rules")
    kubernetes = re.compile(r"kubernetes_sd_configs:\n(?: {6,}.*\n)+")
    for number, text in enumerate(blocks):
        path = tmp_path / f"prometheus-{number}.yml"
        path.write_text(kubernetes.sub("static_configs: [{targets: [pod:10025]}]\n", text))
        _ok(_run(["promtool", "check", "config", "--syntax-only", str(path)]))

"""The image's assets: the Dockerfile's shape, .dockerignore, and the Dockerfile's own pip steps
run in fresh virtual environments, after which the installed exporter probes the real mail stack,
serves as deployed, and answers the image's health check (over HTTPS with the documented web
configuration too)."""

from __future__ import annotations

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
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import trustme
import yaml

import exporter
from testing.deploy import (
    ROOT,
    doc_blocks,
    dockerfile,
    http_get,
    ok,
    roundtrip_succeeded,
    run,
    shell_command,
    stage_args,
    stage_env,
    wait_for,
)
from testing.exporter_process import free_port
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml


def test_dockerfile_has_the_required_instructions() -> None:
    """What `docker build` cannot check here: the shape of the image."""
    froms = [i.args for i in dockerfile() if i.keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"], "multi-stage, one base"
    assert stage_args(-1, "ARG") == ["BASE_IMAGE=python:3.12-slim"], "slim unless told"
    final = {k: stage_args(1, k) for k in ("USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD")}
    assert final["USER"] == ["10001:10001"], "numeric, so runAsNonRoot can check it"
    assert any("--uid 10001" in step and "--gid 10001" in step for step in stage_args(1, "RUN"))
    assert final["EXPOSE"] == ["10025"]
    assert final["ENTRYPOINT"] == ['["mailbox-exporter"]']
    assert final["CMD"] == ['["--config.file=/etc/mailbox-exporter/config.yml"]']
    (healthcheck,) = final["HEALTHCHECK"]
    assert "HEALTHCHECK_URL" in healthcheck and "python" in healthcheck
    assert stage_env(1)["HEALTHCHECK_URL"] == "http://127.0.0.1:10025/-/healthy"
    labels = dict(token.split("=", 1) for token in shlex.split(" ".join(stage_args(1, "LABEL"))))
    assert labels["org.opencontainers.image.licenses"] == "GPL-3.0-or-later"
    assert labels["org.opencontainers.image.title"] == "mailbox-exporter"
    # The runtime stage takes nothing from the build context: only the wheels, by a mount.
    assert not stage_args(1, "COPY") and not stage_args(1, "ADD")
    assert [shell_command(r).split()[:2] for r in stage_args(0, "RUN")] == [["pip", "wheel"]]


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
    env.update(stage_env(stage))
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
    (workdir,) = stage_args(0, "WORKDIR")
    src = base / "stage1" / workdir.lstrip("/")
    src.mkdir(parents=True)
    for args in stage_args(0, "COPY"):
        _copy_into(context, src, args)
    for stage, venv_dir, cwd in ((0, base / "build-venv", src), (1, base / "venv", base)):
        venv.create(venv_dir, with_pip=True)
        runs = [shell_command(r) for r in stage_args(stage, "RUN") if "pip " in r]
        assert runs, f"no pip step in stage {stage + 1}"
        for command in runs:
            done = run(
                ["/bin/sh", "-c", command.replace("/wheels", str(wheels))],
                cwd=cwd,
                env=_environment(venv_dir, stage, isolated=stage == 1),
            )
            ok(done)
    assert sorted(p.name for p in wheels.glob("mailbox_exporter-*.whl"))
    target = base / "venv"
    return Installed(target, target / "bin" / "mailbox-exporter", target / "bin" / "python")


def test_the_image_steps_install_a_working_exporter(
    installed: Installed, tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """What the image will run is the installed package, complete: it checks a configuration
    and probes a real mailbox (dependencies missing from the wheels would fail here)."""
    where = ok(
        run(
            [str(installed.python), "-c", "import exporter; print(exporter.__file__)"],
            cwd=tmp_path,
            env=_clean_env(),
        )
    )
    assert Path(where.strip()).is_relative_to(installed.venv), "the installed copy, not the tree"
    version = ok(run([str(installed.script), "--version"], cwd=tmp_path, env=_clean_env()))
    assert version.strip() == f"mailbox-exporter {exporter.__version__}"
    path = tmp_path / "config.yml"
    path.write_text("targets:\n" + target_yaml(mailstack, user))
    checked = ok(
        run(
            [str(installed.script), f"--config.file={path}", "--config.check"],
            cwd=tmp_path,
            env=_clean_env(),
        )
    )
    assert "OK" in checked and "local" in checked
    probe = run(
        [
            str(installed.script),
            f"--config.file={path}",
            f"--storage.path={tmp_path / 'state'}",
            "probe",
            "local",
        ],
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
    return run([sys.executable, "-c", code]).returncode == 0


def _deny_write_execute() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _healthcheck(installed: Installed, url: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, as written, with HEALTHCHECK_URL set to `url`."""
    (healthcheck,) = stage_args(1, "HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert argv[0] == "python"
    env = stage_env(1) | {"HEALTHCHECK_URL": url}
    return run([str(installed.python), *argv[1:]], env=env, timeout=10)


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
            return roundtrip_succeeded(f"{url}/metrics")

        wait_for(probed, 30, "no successful round trip", server.log)
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
    (web,) = [b for b in doc_blocks("yaml") if "basic_auth_users:" in b]
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

        wait_for(healthy, 20, "the health check over HTTPS never passed", server.log)
        assert http_get(f"{url}/-/healthy", context=context)[0] == 200
        for path_ in ("/metrics", "/-/ready", "/", "/probe?target=local&check=smtp_login"):
            assert http_get(f"{url}{path_}", context=context)[0] == 401, path_
        (name,) = yaml.safe_load(web)["basic_auth_users"]
        good, bad = (name, password.group(1)), (name, "not-" + password.group(1))
        assert http_get(f"{url}/metrics", auth=good, context=context)[0] == 200
        assert http_get(f"{url}/-/ready", auth=good, context=context)[0] == 200
        assert http_get(f"{url}/metrics", auth=bad, context=context)[0] == 401

"""The image, built from the real Dockerfile and run: no registry is needed.

A stand-in for python:3.12-slim is made once from Debian's packages (testing.deploy.
stand_in_base, kept between runs); the Dockerfile is built on it with `buildah build`, its
RUN --mount steps, user, labels and health check included; the image's filesystem is read for
what must not be in it; and its entrypoint runs inside it with `buildah run`, sharing this
machine's network, against the real mail stack. Select these tests with `-m image`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import exporter
from exporter.probekey import DEFAULT_STORAGE
from testing.deploy import (
    ISOLATION,
    ROOT,
    Yaml,
    buildah,
    buildah_unusable,
    files,
    http_get,
    image_size,
    inspect_image,
    mounted,
    remove_image,
    roundtrip_succeeded,
    stage_args,
    stand_in_base,
    wait_for,
    working_container,
)
from testing.exporter_process import free_port
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

REVISION = "0123456789abcdef"


@dataclass(frozen=True)
class Image:
    name: str
    base: str

    def config(self) -> Yaml:
        """The Docker-format config (the OCI format has no health check)."""
        config: Yaml = inspect_image(self.name)["Docker"]["config"]
        return config


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The Dockerfile built on the stand-in base, as `docker build` would build it."""
    unusable = buildah_unusable()
    assert unusable is None, unusable
    base = stand_in_base()
    name = f"localhost/mailbox-exporter-test:{uuid.uuid4().hex[:12]}"
    try:
        buildah(
            "build",
            ISOLATION,
            "--pull=never",
            "--format=docker",
            f"--build-arg=BASE_IMAGE={base}",
            f"--build-arg=VERSION={exporter.__version__}",
            f"--build-arg=REVISION={REVISION}",
            f"--tag={name}",
            f"--file={ROOT / 'Dockerfile'}",
            str(ROOT),
            timeout=600,
        )
        yield Image(name, base)
    finally:
        remove_image(name)


def _healthcheck_argv(config: Yaml) -> list[str]:
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD", "exec form: no shell needed in the image"
    return [str(arg) for arg in test[1:]]


def test_the_image_has_the_user_entrypoint_labels_and_health_check_declared(
    image: Image,
) -> None:
    """What docker run and Kubernetes read from the image, as built."""
    config = image.config()
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mailbox-exporter"]
    assert config["Cmd"] == ["--config.file=/etc/mailbox-exporter/config.yml"]
    assert set(config["ExposedPorts"]) == {"10025/tcp"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mailbox-exporter"
    assert labels["org.opencontainers.image.licenses"] == "GPL-3.0-or-later"
    assert labels["org.opencontainers.image.version"] == exporter.__version__
    assert labels["org.opencontainers.image.revision"] == REVISION
    env = dict(entry.split("=", 1) for entry in config["Env"])
    assert env["HEALTHCHECK_URL"] == "http://127.0.0.1:10025/-/healthy"
    assert env["PYTHONUNBUFFERED"] == "1"
    healthcheck = config["Healthcheck"]
    (declared,) = stage_args(1, "HEALTHCHECK")
    assert _healthcheck_argv(config) == json.loads(declared[declared.index("CMD ") + 4 :])
    seconds = {k: healthcheck[k] / 1e9 for k in ("Interval", "Timeout", "StartPeriod")}
    assert seconds == {"Interval": 30, "Timeout": 5, "StartPeriod": 10}
    assert healthcheck["Retries"] == 3


def test_the_image_holds_the_installed_exporter_and_nothing_of_the_source_tree(
    image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the Dockerfile adds to its base: the installed package and its user, and no tests,
    test equipment, repository, configuration, secret, wheel or build directory."""
    with working_container(image.base) as base, mounted(base) as root:
        before = files(root)
    with working_container(image.name) as container, mounted(container) as root:
        after = files(root)
        assert not list((root / "etc/mailbox-exporter").iterdir()), "configs are mounted"
        state = (root / "var/lib/mailbox-exporter").stat()
        assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (10001, 10001, 0o700)
        assert "mailbox-exporter:x:10001:10001:" in (root / "etc/passwd").read_text()
    added = {path: size for path, size in after.items() if path not in before}
    package = [p for p in added if p.endswith("/exporter/__init__.py")]
    assert len(package) == 1 and "-packages/" in package[0], package
    assert any(p.endswith("/bin/mailbox-exporter") for p in added)
    forbidden = {"tests", "testing", ".git", ".venv", "deploy", "src", "wheels", ".cache"}
    for path in added:
        parts = path.split("/")
        assert not forbidden & set(parts), path
        assert not parts[-1].endswith((".password", ".key", ".pem", ".whl", ".yml")), path
    assert not {"pyproject.toml", "README.md"} & {p.split("/")[-1] for p in added}
    megabytes = sum(added.values()) / 1e6
    with capsys.disabled():
        print(
            f"\nimage {image.name}: {image_size(image.name)}; the Dockerfile adds "
            f"{megabytes:.0f} MB in {len(added)} paths to its base ({image_size(image.base)})"
        )


def _leaves(pid: int) -> list[int]:
    """The processes at the ends of `pid`'s tree of children."""
    children = [
        int(child)
        for task in os.listdir(f"/proc/{pid}/task")
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    ]
    return [leaf for child in children for leaf in _leaves(child)] if children else [pid]


@dataclass
class Running:
    """The image's entrypoint running under `buildah run` in `container`."""

    container: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def running(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def exec(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run a command in the container beside the exporter, as `docker exec` does."""
        flags = [f"--env={k}={v}" for k, v in env.items()]
        return subprocess.run(
            ["buildah", "run", ISOLATION, *flags, self.container, "--", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def terminate(self) -> int:
        """SIGTERM to the exporter itself (buildah kills its command on SIGTERM), as
        `docker stop` sends it; the exit status of `buildah run`, which is the exporter's."""
        (exporter_pid,) = _leaves(self.process.pid)
        os.kill(exporter_pid, signal.SIGTERM)
        return self.process.wait(15)


@contextlib.contextmanager
def entrypoint(
    image: Image, config_dir: Path, *args: str, state: Path | None = None
) -> Iterator[Running]:
    """The image's entrypoint and command with `args`, in a container of its own, with
    `config_dir`'s files mounted as the docs say: config.yml as the configuration and the
    other files under /run/secrets/, and `state` (if given) as the volume of the state
    directory. Everything is killed and removed afterwards."""
    config = image.config()
    mounts = [f"--volume={config_dir / 'config.yml'}:/etc/mailbox-exporter/config.yml:ro"] + [
        f"--volume={path}:/run/secrets/{path.name}:ro"
        for path in sorted(config_dir.iterdir())
        if path.name != "config.yml"
    ]
    if state is not None:
        mounts.append(f"--mount=type=bind,source={state},destination={DEFAULT_STORAGE},rw")
    port, log = free_port(), config_dir.parent / "container.log"
    command = [*config["Entrypoint"], *config["Cmd"], f"--web.listen-address=127.0.0.1:{port}"]
    with working_container(image.name) as container, log.open("wb") as out:
        if state is not None:
            # Docker mounts a volume given for the image's VOLUME in place of an anonymous one;
            # buildah would mount both there, in an order that changes from run to run.
            buildah("config", f"--volume={DEFAULT_STORAGE}-", container)
        process = subprocess.Popen(
            ["buildah", "run", ISOLATION, *mounts, container, "--", *command, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Running(container, process, port, log)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_entrypoint_probes_the_real_mail_stack_inside_the_image(
    image: Image, tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """The image as deployed: its user, its entrypoint and command, a mounted configuration
    and secret, a volume for its state; the probes succeed, the endpoints answer from outside,
    the probe key is made in the state directory with the default configuration and read
    again by the next container, the health check passes, and SIGTERM stops it cleanly."""
    config_dir = tmp_path / "mounted"
    config_dir.mkdir()
    (config_dir / "monitor.password").write_text(user.password + "\n")
    targets = target_yaml(mailstack, user, interval="3s", timeout="3s").replace(
        f"password: '{user.password}'", "password_file: /run/secrets/monitor.password"
    )
    assert "password_file" in targets
    (config_dir / "config.yml").write_text("targets:\n" + targets)
    assert DEFAULT_STORAGE in image.config().get("Volumes", {}), "the image declares its volume"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 10001, 10001)
    healthcheck = _healthcheck_argv(image.config())
    with entrypoint(image, config_dir, state=state) as running:
        url = f"http://127.0.0.1:{running.port}"

        def healthy() -> bool:
            running.running()
            try:
                return http_get(f"{url}/-/healthy")[0] == 200
            except OSError:
                return False

        def probed() -> bool:
            running.running()
            return roundtrip_succeeded(f"{url}/metrics")

        wait_for(healthy, 60, "/-/healthy never answered from the host", running.log)
        wait_for(probed, 60, "no successful round trip from inside the image", running.log)
        checked = {"HEALTHCHECK_URL": f"{url}/-/healthy"}  # another port, as the docs say
        done = running.exec(healthcheck, checked)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (state / "probe.key").exists(), running.log.read_text()[-3000:]
        key = (state / "probe.key").stat()
        assert (key.st_uid, oct(key.st_mode)) == (10001, "0o100600"), "made by the image's user"
        assert running.terminate() == 0, running.log.read_text()[-3000:]
        assert running.exec(healthcheck, checked).returncode != 0, "stopped is unhealthy"
    made = (state / "probe.key").read_bytes()
    with entrypoint(image, config_dir, state=state) as again:
        url = f"http://127.0.0.1:{again.port}"
        wait_for(lambda: roundtrip_succeeded(f"{url}/metrics"), 60, "no round trip", again.log)
        persistent = http_get(f"{url}/metrics")[1]
        assert re.search(r"\nmailbox_exporter_probe_key_persistent 1(\.0)?\n", persistent)
        assert again.terminate() == 0, again.log.read_text()[-3000:]
    assert (state / "probe.key").read_bytes() == made, "the next container read the same key"
    assert "memory only" not in again.log.read_text()

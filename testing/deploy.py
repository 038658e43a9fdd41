"""What the deployment tests share: where the assets are, commands, the Dockerfile read as data,
the docs' code blocks, configurations parsed with their secrets faked, the exporter's endpoints
seen from outside, and images built and run with buildah from a Debian stand-in base."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
RULES = DEPLOY / "prometheus" / "rules" / "mailbox.rules.yml"
UNIT = DEPLOY / "systemd" / "mailbox-exporter.service"
DOCS = ROOT / "docs" / "deployment.md"
RULE_JOB = "mailbox-exporter"  # the job the shipped rules match on

Yaml = dict[str, Any]


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, its output captured as text (5 minutes unless told)."""
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """The standard output of a command that must have succeeded."""
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ------------------------------------------------------------------ configurations

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


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/deployment.md in `language`, in order."""
    text = DOCS.read_text()
    return [b.split("```", 1)[0] for b in text.split(f"```{language}\n")[1:]]


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


def stage_args(stage: int, keyword: str) -> list[str]:
    """The arguments of the project Dockerfile's `keyword` instructions in build stage `stage`."""
    return [i.args for i in dockerfile() if i.stage == stage and i.keyword == keyword]


def stage_env(stage: int) -> dict[str, str]:
    """The ENV a build stage of the project Dockerfile sets."""
    return dict(
        token.split("=", 1) for args in stage_args(stage, "ENV") for token in shlex.split(args)
    )


def shell_command(args: str) -> str:
    """A RUN instruction's shell command, without its flags (--mount=...)."""
    return re.sub(r"^(--\S+\s+)*", "", args)


# ------------------------------------------------------------------ endpoints


def http_get(
    url: str, *, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """Status and body of a GET (the body is empty for an error status)."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def wait_for(predicate: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    """Poll until `predicate` holds; fail with `what` and the end of `log` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def roundtrip_succeeded(metrics_url: str, target: str = "local") -> bool:
    """Whether /metrics answers and shows `target`'s last round trip as a success."""
    try:
        status, text = http_get(metrics_url)
    except OSError:
        return False
    return status == 200 and any(
        sample.name == "mailbox_probe_success"
        and sample.labels == {"target": target, "check": "roundtrip"}
        and sample.value == 1
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


# ------------------------------------------------------------------ images, with buildah

# Registries are not needed: the base is made from Debian's packages with debootstrap, images
# are built with `buildah build` and run with `buildah run`, chroot isolation throughout.
ISOLATION = "--isolation=chroot"
STAND_IN = "localhost/mailbox-exporter-test-base"
# Bump when the stand-in changes, so that no cached copy of an older one is used.
STAND_IN_VERSION = "1"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def buildah_unusable() -> str | None:
    """Why images cannot be built and run here, or None when they can.

    Chroot isolation and mounting an image's filesystem need root; scripts/bootstrap installs
    buildah and debootstrap on Debian.
    """
    missing = [tool for tool in ("buildah", "debootstrap", "apt-get") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/bootstrap installs them on Debian)"
    if os.geteuid() != 0:
        return "building and running images with chroot isolation needs root"
    info = run(["buildah", "info"], timeout=60)
    if info.returncode != 0:
        return f"buildah cannot run here: {info.stderr.strip()[-500:]}"
    return None


def buildah(*args: str, timeout: float = 300) -> str:
    """The output of a buildah command that must succeed."""
    return ok(run(["buildah", *args], timeout=timeout)).strip()


def image_exists(image: str) -> bool:
    return run(["buildah", "inspect", "--type=image", image], timeout=60).returncode == 0


def inspect_image(image: str) -> Yaml:
    """`buildah inspect` of an image: its Docker-format config is under ["Docker"]["config"]."""
    inspected: Yaml = json.loads(buildah("inspect", "--type=image", image))
    return inspected


def image_size(image: str) -> str:
    """The image's size as buildah reports it ("240 MB")."""
    (listed,) = json.loads(buildah("images", "--json", image))
    return str(listed["size"])


def remove_image(image: str) -> None:
    run(["buildah", "rmi", image], timeout=120)


@contextlib.contextmanager
def working_container(image: str) -> Iterator[str]:
    """A container of `image` (`buildah from`), removed afterwards whatever happened."""
    name = buildah("from", "--pull=never", image)
    try:
        yield name
    finally:
        run(["buildah", "rm", name], timeout=120)


@contextlib.contextmanager
def mounted(container: str) -> Iterator[Path]:
    """The container's root filesystem, mounted on this machine while in use."""
    root = Path(buildah("mount", container))
    try:
        yield root
    finally:
        run(["buildah", "umount", container], timeout=120)


def files(root: Path) -> dict[str, int]:
    """Every path below `root` (relative, without the leading slash) and its size in bytes."""
    found = {}
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(directory) / name
            found[path.relative_to(root).as_posix()] = path.lstat().st_size
    return found


def os_release() -> dict[str, str]:
    """This machine's /etc/os-release."""
    lines = Path("/etc/os-release").read_text().splitlines()
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in lines) if v}


def debian_mirror(codename: str) -> str:
    """The mirror this machine's apt installs `codename`'s packages from."""
    listed = ok(
        run(
            [
                "apt-get",
                "indextargets",
                "--format",
                "$(RELEASE) $(REPO_URI)",
                "Created-By: Packages",
            ]
        )
    )
    for line in listed.splitlines():
        release, _, uri = line.partition(" ")
        if release == codename:
            return uri
    raise AssertionError(f"apt knows no mirror for {codename}:\n{listed}")


def stand_in_base() -> str:
    """A stand-in for python:3.12-slim made from this machine's Debian release, built once.

    debootstrap installs Debian's Python and pip; then the stand-in is given what the official
    image has and the Dockerfile relies on: a `python` command in /usr/local/bin, a pip that
    installs into the system (no PEP 668 marker), and the certificate authorities this machine
    trusts (so that pip reaches PyPI however this machine does). The image is kept in buildah's
    storage, tagged by the release, STAND_IN_VERSION and those authorities; older ones go.
    """
    codename = os_release()["VERSION_CODENAME"]
    authorities = hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest()[:12]
    image = f"{STAND_IN}:{codename}-{STAND_IN_VERSION}-{authorities}"
    if image_exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="stand-in-", dir="/var/tmp") as work:
        rootfs, context = Path(work) / "rootfs", Path(work) / "context"
        ok(
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,python3-pip",
                    codename,
                    str(rootfs),
                    debian_mirror(codename),
                ],
                timeout=900,
            )
        )
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / HOST_CA_BUNDLE.relative_to("/"))
        for cached in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            cached.unlink()
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        context.mkdir()
        ok(run(["tar", "-C", str(rootfs), "-cf", str(context / "rootfs.tar"), "."]))
        (context / "Containerfile").write_text(
            "FROM scratch\n"
            "ADD rootfs.tar /\n"
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
            'CMD ["python3"]\n'
        )
        buildah("build", ISOLATION, "--pull=never", "--tag", image, str(context), timeout=600)
    for listed in json.loads(buildah("images", "--json", f"--filter=reference={STAND_IN}")):
        for name in listed["names"] or []:
            if name != image:
                remove_image(name)
    return image

"""What the deployment tests share: where the assets are, commands, the Dockerfile read as data,
the docs' code blocks, and configurations parsed with their secrets faked."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

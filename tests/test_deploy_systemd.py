"""The systemd unit: the hardening the docs promise, checked by systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from exporter.probekey import DEFAULT_STORAGE
from testing.deploy import UNIT, run
from testing.mailstack import MailStack, MailUser
from testing.targets import probe_files, target_yaml

ROOT = Path(__file__).parent.parent


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
    assert analyze is not None, "systemd-analyze is installed by scripts/bootstrap (systemd)"
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace(
            "/opt/mailbox-exporter/bin/mailbox-exporter", shutil.which("true") or "/bin/true"
        )
    )
    done = run([analyze, "verify", str(unit)])
    assert done.returncode == 0, done.stderr
    assert UNIT.name not in done.stdout + done.stderr, done.stderr
    # The documented rating: "OK" (exposure 1.4 of 10); fail above 2.0.
    security = run([analyze, "security", "--offline=yes", "--threshold=20", str(unit)])
    assert security.returncode == 0, security.stdout


def test_the_unit_keeps_the_probe_key_across_restarts_in_its_state_directory(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    """The unit passes no --storage.path: the exporter's default state directory is the one
    StateDirectory= makes. Two runs of the exporter as the unit starts it (the default
    directory bound to a fresh one, as systemd does), the first leaving a probe message late:
    the second run reads the key the first made and cleans that message."""
    settings = unit_settings()
    (state_directory,) = settings["Service.StateDirectory"]
    assert f"/var/lib/{state_directory}" == DEFAULT_STORAGE
    (start,) = settings["Service.ExecStart"]
    assert not any(arg.startswith("--storage.path") for arg in start.split())
    var_lib = tmp_path / "var-lib"
    var_lib.mkdir()
    config = tmp_path / "config.yml"
    config.write_text("targets:\n" + target_yaml(mailstack, user, timeout="3s"))
    bind = f"mount --bind {var_lib} /var/lib && mkdir -p -m 0700 {DEFAULT_STORAGE} && exec \"$@\""
    command = [
        *("unshare", "--mount", "--propagation", "private", "sh", "-c", bind, "sh"),
        *(sys.executable, "-m", "exporter", "--config.file", str(config)),
        *("probe", "local", "--check", "roundtrip"),
    ]
    mailstack.defer_delivery()
    try:
        first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    finally:
        mailstack.resume_delivery()
    assert first.returncode == 1 and "not_delivered" in first.stdout, first.stdout + first.stderr
    key = var_lib / Path(DEFAULT_STORAGE).name / "probe.key"
    assert key.stat().st_mode & 0o777 == 0o600
    deadline = time.monotonic() + 10
    while not probe_files(mailstack, user) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert probe_files(mailstack, user), "the deferred probe was delivered"
    second = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert probe_files(mailstack, user) == []

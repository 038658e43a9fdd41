"""The Compose demo: every service's mounts and secrets exist, the exporter's and Prometheus'
configurations are valid where they are mounted, and the mail server's configs pass Postfix's
and Dovecot's own parsers."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import yaml

from exporter.probekey import DEFAULT_STORAGE
from testing.deploy import (
    COMPOSE,
    DEPLOY,
    ROOT,
    RULE_JOB,
    Yaml,
    dockerfile,
    ok,
    parse_faking_secrets,
    run,
    secret_files,
)


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
    assert not any(a.startswith("--storage.path") for a in exporter_service["command"])
    state = volumes[DEFAULT_STORAGE]
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
    out = ok(run(["promtool", "check", "config", str(config_file)]))
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
    done = run(["postconf", "-c", str(mailserver), "-n"])
    assert done.returncode == 0 and not done.stderr, done.stderr  # unknown names warn
    assert "virtual_mailbox_domains = example.test" in done.stdout
    services = ok(run(["postconf", "-c", str(mailserver), "-M"]))
    assert re.search(r"^587\s+inet\b.*\bsmtpd\b", services, re.M), "submission, as configured"
    dovecot = ok(run(["doveconf", "-n", "-c", str(mailserver / "dovecot.conf")]))
    assert re.search(r"inet_listener imap \{\s+port = 143\s", dovecot)
    ok(run(["sh", "-n", str(mailserver / "entrypoint.sh")]))

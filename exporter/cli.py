"""Command line: ``mailbox-exporter`` with Prometheus-style flags."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import __version__, logs, message, probekey
from exporter import config as configuration
from exporter import shard as shards
from exporter.config import Config, ConfigError, Schedule, ServerConfig, budget, format_duration
from exporter.config.load import without_cycle_collection
from exporter.outcome import Check

DEFAULT_LISTEN = ":10025"


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``."""
    match = re.match(r"^(?:\[([^\]]+)\]|([^:\[\]]*)):(\d{1,5})$", text)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ValueError(f"expected host:port such as :10025 or 127.0.0.1:10025, got {text!r}")
    host = match.group(1) or match.group(2) or None
    return host, int(match.group(3))


GLOBAL_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--config.file",),
        {
            "dest": "config_file",
            "default": "mailbox-exporter.yml",
            "help": "configuration file (default: %(default)s)",
        },
    ),
    (
        ("--web.listen-address",),
        {
            "dest": "listen",
            "default": DEFAULT_LISTEN,
            "help": "address to serve metrics on (default: %(default)s)",
        },
    ),
    (
        ("--web.config.file",),
        {
            "dest": "web_config",
            "default": None,
            "help": "TLS and basic authentication for the endpoints, in exporter-toolkit format",
        },
    ),
    (
        ("--storage.path",),
        {
            "dest": "storage",
            "default": probekey.DEFAULT_STORAGE,
            "help": "directory the exporter keeps its state in: the probe-id key "
            "(default: %(default)s)",
        },
    ),
    (
        ("--shard",),
        {
            "default": "0/1",
            "help": "probe only shard INDEX of COUNT of the targets, such as 0/3 (default: all)",
        },
    ),
    (("--log.level",), {"dest": "log_level", "choices": logs.LEVELS, "default": "info"}),
    (("--log.format",), {"dest": "log_format", "choices": logs.FORMATS, "default": "logfmt"}),
    (
        ("--config.check",),
        {
            "dest": "config_check",
            "action": "store_true",
            "default": False,
            "help": "validate the configuration, print a summary and exit",
        },
    ),
)
"""Flags every command takes, before or after the command's name."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbox-exporter",
        description="Prometheus exporter that checks mailboxes end to end.",
    )
    for names, options in GLOBAL_FLAGS:
        parser.add_argument(*names, **options)
    parser.add_argument("--version", action="version", version=f"mailbox-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    probe = commands.add_parser(
        "probe",
        help="run one probe of a configured target now and print what was said",
        description="Run probes of one configured target now, print each phase with what the "
        "server said (credentials redacted) and the result. Exit 0 if all succeed, else 1.",
    )
    probe.add_argument("target", help="a target name from the configuration")
    probe.add_argument(
        "--check",
        choices=[c.value for c in Check],
        help="the check to run (default: every check the target runs)",
    )
    probe.add_argument(
        "--record",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write what was exchanged with the servers to FILE, every secret replaced, "
        "to attach to a bug report (format: docs/runbook.md)",
    )
    for names, options in GLOBAL_FLAGS:
        # Given after the command they override what was given before; not given, they leave
        # it alone.
        help_text = str(options.get("help", "")).replace("%(default)s", str(options["default"]))
        probe.add_argument(
            *names, **{**options, "default": argparse.SUPPRESS, "help": help_text or None}
        )
    return parser


@without_cycle_collection()
def summary(config: Config) -> str:
    lines = [
        f"{len(config.targets)} target(s), at most {config.max_concurrent_probes} probes at once"
    ]
    # The words for each set of checks and schedules, written once for all targets sharing it.
    described: dict[tuple[tuple[Check, ...], tuple[tuple[Check, Schedule], ...]], str] = {}
    for target in config.targets:
        key = (target.checks, tuple(target.schedules.items()))
        checks = described.get(key)
        if checks is None:
            checks = described[key] = ", ".join(
                f"{check} every {format_duration(target.interval(check))} "
                f"(timeout {format_duration(target.timeout(check))})"
                for check in target.checks
            )
        servers = ", ".join(
            f"{name} {section.host}:{section.port} ({section.tls})"
            if isinstance(section, ServerConfig)
            else name
            for name, section in target.sections().items()
        )
        lines.append(f"  {target.name}: {checks}; {servers}")
    sending = budget.summary(config)
    if sending:
        lines += ["probe mail by sending account (round trips, and on demand at their spacing):"]
        lines += sending
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = configuration.load(args.config_file)
    except ConfigError as exc:
        print(f"mailbox-exporter: {args.config_file}: {exc}", file=sys.stderr)
        return 1
    if args.config_check:
        print(f"{args.config_file}: OK\n{summary(config)}")
        return 0
    try:
        key = probekey.open_key(
            Path(config.probe_key_file) if config.probe_key_file else None, Path(args.storage)
        )
    except probekey.KeyFileError as exc:
        print(f"mailbox-exporter: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"mailbox-exporter: global.probe_key_file: {exc.filename}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    ids = message.ProbeIds(key.key)
    # The probing and serving machinery is imported only when used, so that
    # --config.check answers at once.
    from exporter import app

    if args.command == "probe":
        return asyncio.run(app.probe_once(config, args.target, args.check, ids, args.record))
    try:
        host, port = parse_listen_address(args.listen)
        shard = shards.parse(args.shard)
    except ValueError as exc:
        print(f"mailbox-exporter: {exc}", file=sys.stderr)
        return 1
    web_config = None
    if args.web_config:
        from exporter.serve import webconfig

        try:
            web_config = webconfig.load(args.web_config)
        except ConfigError as exc:
            print(f"mailbox-exporter: {args.web_config}: {exc}", file=sys.stderr)
            return 1
    logs.setup(args.log_level, args.log_format)
    if key.path is None:
        logging.getLogger("exporter").warning(
            "the probe-id key is kept in memory only: probe messages that arrive after a "
            "restart will not be recognised or deleted; make --storage.path writable or set "
            "global.probe_key_file",
            extra=logs.fields(problem=key.problem),
        )
    exporter = app.Exporter(
        args.config_file,
        shard,
        app.new_context(ids, config),
        random.Random(),
        key_persistent=key.path is not None,
    )
    try:
        asyncio.run(app.serve(exporter, config, host, port, web_config))
    except OSError as exc:
        print(f"mailbox-exporter: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0

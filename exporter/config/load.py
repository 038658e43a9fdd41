"""Configuration: a YAML file of targets, read into frozen dataclasses.

Every error names the key path and the line it stands on, so a mail admin can fix the file
without reading code: ``line 12: targets[2].imap.port: expected an integer``.
Secrets are read when the file is loaded (a reload picks up rotated ones) and are held in
:class:`Secret`, which never prints its value.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from exporter.config import budget
from exporter.config.checks import CHECKS
from exporter.config.document import MAX_BYTES, parse_document
from exporter.config.model import (
    MAX_CONCURRENT_PROBES,
    Config,
    ConfigError,
    GoogleStatus,
    LoginBackoff,
    MicrosoftStatus,
    OnDemand,
    ProviderStatus,
    Schedule,
    Target,
    TransportConfig,
)
from exporter.config.reader import ADDRESS, Reader, join, kind, url
from exporter.config.reader import parse_duration as parse_duration
from exporter.config.sections import SECTIONS
from exporter.config.sections.graph import GRAPH_URL, MICROSOFT_APP_KEYS, microsoft_app
from exporter.config.site import read_location, read_maintenance
from exporter.outcome import Check


def format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


RESERVED_LABELS = frozenset(
    {
        "target",
        "check",
        "phase",
        "reason",
        "protocol",
        "version",
        "le",
        "method",
        "result",
        "job",
        "instance",
    }
)
"""Label names of the exporter's per-target series, and those Prometheus adds when it
scrapes: a static label of the same name would clash in joins with ``mailbox_target_info``."""
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,62}")
MAX_LABEL_VALUE = 128
"""Characters of a label value: a static label names a provider, region or team."""
TOP_KEYS = ("global", "defaults", "targets", "provider_status")
GLOBAL_KEYS = (
    "max_concurrent_probes",
    "probe_key_file",
    "on_demand",
    "login_backoff",
    "location",
    "maintenance",
)
ON_DEMAND_KEYS = ("roundtrip_every", "login_every")
LOGIN_BACKOFF_KEYS = ("after", "initial", "max")


def _on_demand(r: Reader, value: Any) -> OnDemand:
    data = r.mapping(value, "global.on_demand", ON_DEMAND_KEYS)
    default = OnDemand()
    return OnDemand(
        roundtrip_every=r.get(
            data, "roundtrip_every", "global.on_demand", r.duration, default.roundtrip_every
        ),
        login_every=r.get(data, "login_every", "global.on_demand", r.duration, default.login_every),
    )


def _login_backoff(r: Reader, value: Any) -> LoginBackoff:
    path = "global.login_backoff"
    data = r.mapping(value, path, LOGIN_BACKOFF_KEYS)
    default = LoginBackoff()
    backoff = LoginBackoff(
        after=r.get(data, "after", path, r.positive_int, default.after),
        initial=r.get(data, "initial", path, r.duration, default.initial),
        maximum=r.get(data, "max", path, r.duration, default.maximum),
    )
    if backoff.maximum < backoff.initial:
        raise r.fail(join(path, "max"), "must not be shorter than initial")
    return backoff


PROVIDER_STATUS_KEYS = ("interval", "timeout", "max_incidents", "microsoft", "google")
MICROSOFT_STATUS_KEYS = (*MICROSOFT_APP_KEYS, "services")
GOOGLE_STATUS_KEYS = ("feed_url", "services", "tls_config")
MICROSOFT_SERVICES = ("Exchange Online", "Microsoft 365 suite")
GOOGLE_SERVICES = ("Gmail",)
GOOGLE_STATUS_URL = "https://www.google.com/appsstatus/dashboard/incidents.json"
MIN_STATUS_INTERVAL = 60.0
"""Status pages are read at most once a minute: Graph's Service Communications API allows an
app 240 requests a minute and 800 an hour per tenant."""


def _services(
    r: Reader, data: dict[str, Any], path: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = data.get("services")
    if value is None:
        return default
    key_path = join(path, "services")
    if not isinstance(value, list) or not value:
        raise r.fail(key_path, f"expected a non-empty list of service names, got {kind(value)}")
    return tuple(r.string(item, f"{key_path}[{index}]") for index, item in enumerate(value))


def _microsoft_status(r: Reader, data: dict[str, Any], path: str) -> MicrosoftStatus:
    """Service Health over Graph: the graph section's credentials, without a mailbox."""
    tls_config = r.tls_config(data.get("tls_config"), join(path, "tls_config"))
    return MicrosoftStatus(
        graph_url=url(r, data, "graph_url", path, GRAPH_URL),
        oauth2=microsoft_app(r, data, path, tls_config),
        tls_config=tls_config,
        services=_services(r, data, path, MICROSOFT_SERVICES),
    )


def _provider_status(r: Reader, value: Any) -> ProviderStatus | None:
    """``provider_status``: absent, nothing is read."""
    if value is None:
        return None
    path = "provider_status"
    data = r.mapping(value, path, PROVIDER_STATUS_KEYS)
    if data.get("microsoft") is None and data.get("google") is None:
        raise r.fail(path, "configure microsoft, google or both")
    default = ProviderStatus()
    interval = r.get(data, "interval", path, r.duration, default.interval)
    if interval < MIN_STATUS_INTERVAL:
        raise r.fail(join(path, "interval"), "must be at least 1m (the providers' rate limits)")
    timeout = r.get(data, "timeout", path, r.duration, min(default.timeout, interval))
    if timeout > interval:
        raise r.fail(join(path, "timeout"), "must not be longer than the interval")
    microsoft = google = None
    if data.get("microsoft") is not None:
        where = join(path, "microsoft")
        microsoft = _microsoft_status(
            r, r.mapping(data["microsoft"], where, MICROSOFT_STATUS_KEYS), where
        )
    if data.get("google") is not None:
        where = join(path, "google")
        google_data = r.mapping(data["google"], where, GOOGLE_STATUS_KEYS)
        google = GoogleStatus(
            feed_url=url(r, google_data, "feed_url", where, GOOGLE_STATUS_URL),
            tls_config=r.tls_config(google_data.get("tls_config"), join(where, "tls_config")),
            services=_services(r, google_data, where, GOOGLE_SERVICES),
        )
    return ProviderStatus(
        interval=interval,
        timeout=timeout,
        max_incidents=r.get(data, "max_incidents", path, r.positive_int, default.max_incidents),
        microsoft=microsoft,
        google=google,
    )


TARGET_KEYS = (
    "name",
    *SECTIONS,
    "sender",
    "receiver",
    "from",
    "to",
    "checks",
    "interval",
    "timeout",
    "labels",
    "authserv_id",
)
DEFAULT_KEYS = tuple(k for k in TARGET_KEYS if k != "name")


ROLES: Final[dict[str, tuple[str, ...]]] = {
    "sender": tuple(name for name, section in SECTIONS.items() if section.sends),
    "receiver": tuple(name for name, section in SECTIONS.items() if section.receives),
}
"""The transports that can play each role in a round trip."""


def _role(r: Reader, data: dict[str, Any], path: str, key: str, default: str) -> str:
    """``sender`` or ``receiver``: the name of a transport that can play that role."""
    able = ROLES[key]
    value = data.get(key, default)
    if value not in able:
        raise r.fail(join(path, key), f"expected one of {', '.join(able)}, got {value!r}")
    return str(value)


def _default_role(sections: Mapping[str, TransportConfig], usual: str, *, sends: bool) -> str:
    """``usual`` (smtp, imap) if configured, else the only configured section able to."""
    able = [
        name for name in sections if (SECTIONS[name].sends if sends else SECTIONS[name].receives)
    ]
    return usual if usual in sections or len(able) != 1 else able[0]


class _Shared:
    """What is worked out once per configuration and then holds for many targets: each
    transport's ``defaults`` section, checked once and built once for the targets that set no
    such section of their own; the ``defaults`` labels; the checks a target runs by default,
    by its transports; its schedules, by its checks. Each is worked out when the first target
    needs it, so that the errors, and their order, are those of reading every target alone."""

    def __init__(self, r: Reader, defaults: dict[str, Any]) -> None:
        self.r = r
        self.defaults = defaults
        self._mappings: dict[str, dict[str, Any]] = {}
        self._inherited: dict[str, TransportConfig] = {}
        self._labels: dict[str, str] | None = None
        self._checks: dict[tuple[tuple[str, ...], str, str], tuple[Check, ...]] = {}
        self._schedules: dict[tuple[Any, ...], dict[Check, Schedule]] = {}

    def mapping(self, key: str) -> dict[str, Any]:
        """``defaults.<key>``, a transport's section, checked for unknown keys."""
        if key not in self._mappings:
            self._mappings[key] = self.r.mapping(
                self.defaults.get(key), join("defaults", key), SECTIONS[key].keys
            )
        return self._mappings[key]

    def inherited(self, key: str, path: str) -> TransportConfig:
        """Section ``key`` of a target that sets none of its own (``path``, named by errors):
        the ``defaults`` one, the same for every such target."""
        if key not in self._inherited:
            self._inherited[key] = SECTIONS[key].read(self.r, dict(self.mapping(key)), path)
        return self._inherited[key]

    def labels(self) -> dict[str, str]:
        """``defaults.labels``, checked."""
        if self._labels is None:
            self._labels = _label_values(self.r, self.defaults.get("labels"), "defaults.labels")
        return self._labels

    def default_checks(
        self, target: Target, sections: Mapping[str, TransportConfig]
    ) -> tuple[Check, ...]:
        """Every check whose transports the target has: smtp + imap run all three. What a
        check needs depends on the target's sender and receiver only."""
        key = (tuple(sections), target.sender, target.receiver)
        if key not in self._checks:
            self._checks[key] = tuple(
                check
                for check, spec in CHECKS.items()
                if all(needed in sections for needed in spec.needs(target))
            )
        return self._checks[key]

    def schedules(
        self, data: dict[str, Any], path: str, checks: tuple[Check, ...], hosted: bool
    ) -> dict[Check, Schedule]:
        """The target's schedules (:func:`_schedules`): the same for every target with the
        same checks and the same ``interval`` and ``timeout``, each unset or one duration."""
        interval, timeout = data.get("interval"), data.get("timeout")
        if not all(value is None or isinstance(value, str) for value in (interval, timeout)):
            return _schedules(self.r, data, path, checks, hosted)
        key = (checks, hosted, interval, timeout)
        if key not in self._schedules:
            self._schedules[key] = _schedules(self.r, data, path, checks, hosted)
        return dict(self._schedules[key])


def _target(r: Reader, raw: Any, shared: _Shared, path: str) -> Target:
    data = r.mapping(raw, path, TARGET_KEYS)
    defaults = shared.defaults
    merged = {**defaults, **data}
    name = r.get(merged, "name", path, r.name)
    sections: dict[str, TransportConfig] = {}
    for key, spec in SECTIONS.items():
        own = data.get(key)
        if own is not None:
            values = {**shared.mapping(key), **r.mapping(own, join(path, key), spec.keys)}
            sections[key] = spec.read(r, values, join(path, key))
        elif defaults.get(key) is not None:
            sections[key] = shared.inherited(key, join(path, key))
    common: dict[str, Any] = {
        "name": name,
        "sender": _role(r, merged, path, "sender", _default_role(sections, "smtp", sends=True)),
        "receiver": _role(
            r, merged, path, "receiver", _default_role(sections, "imap", sends=False)
        ),
        "labels": {
            **shared.labels(),
            **_label_values(r, data.get("labels"), join(path, "labels")),
        },
        "authserv_id": r.get(merged, "authserv_id", path, r.string, "") or None,
        **sections,
    }
    probe = Target(checks=(), schedules={}, mail_from="", mail_to="", **common)
    checks = r.get(merged, "checks", path, r.checks, shared.default_checks(probe, sections))
    if not checks:
        raise r.fail(path, f"configure at least one of {', '.join(SECTIONS)}")
    for index, check in enumerate(checks):
        for needed in CHECKS[check].needs(probe):
            if needed not in sections:
                listed = join(path, f"checks[{index}]") if "checks" in data else path
                raise ConfigError(
                    join(path, needed), f"required by the {check} check", r.lines.of(listed)
                )
    needs_mail = Check.ROUNDTRIP in checks
    sender = sections.get(probe.sender)
    receiver = sections.get(probe.receiver)
    mail_from = _mail_address(
        r, merged, path, "from", sender.username if sender else "", needs_mail
    )
    mail_to = _mail_address(
        r, merged, path, "to", receiver.username if receiver else "", needs_mail
    )
    hosted = sender is not None and budget.cap_of(sender) is not None
    return Target(
        checks=checks,
        schedules=shared.schedules(merged, path, checks, hosted),
        mail_from=mail_from,
        mail_to=mail_to,
        **common,
    )


def _label_values(r: Reader, value: Any, where: str) -> dict[str, str]:
    """``labels`` at ``where``: static label names and values (a target's are merged over
    the defaults').

    Names as Prometheus takes them (not ``__``-prefixed, none of the exporter's own); values
    any text that UTF-8 can carry (the exposition escapes backslashes, quotes and line
    breaks), so that no configuration can break ``/metrics``.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise r.fail(where, f"expected a mapping of label names to values, got {kind(value)}")
    labels: dict[str, str] = {}
    for key, item in value.items():
        name = str(key)
        key_path = join(where, name)
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise r.fail(
                key_path,
                "expected a Prometheus label name: up to 63 of [a-zA-Z0-9_], not starting "
                "with a digit or __",
            )
        if name in RESERVED_LABELS:
            raise r.fail(key_path, f"{name} is a label of the exporter's own metrics")
        if not isinstance(item, str | int | float) or isinstance(item, bool) or not str(item):
            raise r.fail(key_path, "expected a non-empty string")
        text = str(item)
        if len(text) > MAX_LABEL_VALUE:
            raise r.fail(key_path, f"longer than {MAX_LABEL_VALUE} characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise r.fail(key_path, "not valid Unicode text (a lone surrogate escape)") from None
        labels[name] = text
    return labels


def _schedules(
    r: Reader, data: dict[str, Any], path: str, checks: tuple[Check, ...], hosted: bool
) -> dict[Check, Schedule]:
    """``interval`` and ``timeout`` are a duration for every check, or a mapping by check.

    A round trip sending as an account with a published cap (``hosted``) runs less often by
    default: see :mod:`.budget`."""
    per_check: dict[str, dict[Check, float]] = {}
    for key in ("interval", "timeout"):
        value, key_path = data.get(key), join(path, key)
        if isinstance(value, dict):
            per_check[key] = {
                Check(name): r.duration(item, join(key_path, name))
                for name, item in r.mapping(value, key_path, [c.value for c in Check]).items()
                if item is not None
            }
        elif value is not None:
            per_check[key] = dict.fromkeys(Check, r.duration(value, key_path))
        else:
            per_check[key] = {}
    schedules: dict[Check, Schedule] = {}
    for check in checks:
        default = CHECKS[check].schedule
        if hosted and check is Check.ROUNDTRIP:
            default = replace(default, interval=budget.HOSTED_ROUNDTRIP_INTERVAL)
        interval = per_check["interval"].get(check, default.interval)
        timeout = per_check["timeout"].get(check, min(default.timeout, interval))
        if timeout > interval:
            key_path = join(path, "timeout")
            raise r.fail(
                key_path,
                f"{format_duration(timeout)} for {check} is longer than its interval "
                f"{format_duration(interval)}",
            )
        schedules[check] = Schedule(interval, timeout)
    return schedules


def _mail_address(
    r: Reader, data: dict[str, Any], path: str, key: str, username: str, needed: bool
) -> str:
    if data.get(key) is not None:
        return r.address(data[key], join(path, key))
    if ADDRESS.fullmatch(username) or not needed:
        return username
    raise r.fail(
        join(path, key), "required for the roundtrip check (the username is not an address)"
    )


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Reading a large configuration, or writing its summary, builds millions of containers
    and no reference cycles: the cycle collector, run each time enough containers have piled
    up, would walk all those built so far again and again (a third of the time of a
    50,000-target check). Reference counting frees them as ever; afterwards the collector is
    as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@without_cycle_collection()
def parse(
    text: str,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "",
) -> Config:
    """Validate a configuration document; raise :class:`ConfigError` at the first mistake."""
    data, lines = parse_document(text)
    r = Reader(lines, base_dir or Path.cwd(), os.environ if environ is None else environ)
    top = r.mapping(data, "", TOP_KEYS)
    glob = r.mapping(top.get("global"), "global", GLOBAL_KEYS)
    defaults = r.mapping(top.get("defaults"), "defaults", DEFAULT_KEYS)
    raw_targets = top.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise r.fail("targets", "expected a non-empty list of targets")
    shared = _Shared(r, defaults)
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_targets):
        target = _target(r, raw, shared, f"targets[{index}]")
        if target.name in seen:
            raise r.fail(
                f"targets[{index}].name",
                f"duplicate target name {target.name!r} (also targets[{seen[target.name]}])",
            )
        seen[target.name] = index
        targets.append(target)
    config = Config(
        targets=tuple(targets),
        max_concurrent_probes=r.get(
            glob, "max_concurrent_probes", "global", r.positive_int, MAX_CONCURRENT_PROBES
        ),
        on_demand=_on_demand(r, glob.get("on_demand")),
        login_backoff=_login_backoff(r, glob.get("login_backoff")),
        provider_status=_provider_status(r, top.get("provider_status")),
        location=read_location(r, glob.get("location")),
        maintenance=read_maintenance(r, glob.get("maintenance")),
        probe_key_file=(
            str(
                r.file(
                    r.string(glob["probe_key_file"], "global.probe_key_file"),
                    "global.probe_key_file",
                )
            )
            if glob.get("probe_key_file") is not None
            else None
        ),
        source=source,
    )
    over = budget.problem(config)
    if over is not None:
        raise r.fail(*over)
    return config


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read {file}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError("", f"{file} is larger than {MAX_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("", f"{file} is not UTF-8 text") from None
    return parse(text, base_dir=file.resolve().parent, environ=environ, source=str(file))

"""The Prometheus text exposition (0.0.4) of ``/metrics`` and of ``GET /probe``.

Every metric family is declared once, in :data:`FAMILIES`; both exposition writers take their
names, types and help from there. Written directly rather than through prometheus_client's
collector objects: at a thousand targets that is ten times faster, and a scrape holds the
event loop for its whole length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from exporter import __version__
from exporter.authres import RESULTS
from exporter.outcome import Check, Reason
from exporter.result import ProbeResult
from exporter.state import DELIVERY_BUCKETS, Store

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class Family:
    kind: Kind
    help: str
    on_demand: str | None = None
    """The family's name in a ``/probe`` answer, for the families it carries."""


FAMILIES: Final[dict[str, Family]] = {
    "mailbox_probe_success": Family(
        "gauge", "1 if the last probe succeeded, else 0.", "probe_success"
    ),
    "mailbox_probe_duration_seconds": Family(
        "gauge", "How long the last probe took.", "probe_duration_seconds"
    ),
    "mailbox_probe_phase_duration_seconds": Family(
        "gauge",
        "How long each phase of the last probe took (phases it reached).",
        "probe_phase_duration_seconds",
    ),
    "mailbox_probes_total": Family("counter", "Probes completed."),
    "mailbox_probe_failures_total": Family("counter", "Failed probes by reason."),
    "mailbox_probe_consecutive_failures": Family(
        "gauge", "Failed probes in a row, up to the last one (0 after a success)."
    ),
    "mailbox_probe_failed_info": Family(
        "gauge",
        "Present (1) while the last probe failed: where and why.",
        "probe_failed_info",
    ),
    "mailbox_probe_last_success_timestamp_seconds": Family(
        "gauge", "When the last successful probe ended."
    ),
    "mailbox_probe_last_timestamp_seconds": Family(
        "gauge", "When the last probe, successful or not, ended."
    ),
    "mailbox_probe_failing_since_timestamp_seconds": Family(
        "gauge",
        "Present while the check fails: when its current run of failures began (the end of "
        "its first failed probe).",
    ),
    "mailbox_login_backoff_since_timestamp_seconds": Family(
        "gauge",
        "Present while the check does not log in because its credentials were refused too "
        "often in a row (the lock-out guard): since when.",
    ),
    "mailbox_login_backoff_next_attempt_timestamp_seconds": Family(
        "gauge", "Present while the lock-out guard holds the check back: when it tries again."
    ),
    "mailbox_on_demand_refused_total": Family(
        "counter",
        "On-demand probes (GET /probe) refused with 429 because one of the same target and "
        "check ran too recently.",
    ),
    "mailbox_probe_interval_seconds": Family("gauge", "Configured probe interval."),
    "mailbox_probe_timeout_seconds": Family("gauge", "Configured probe timeout."),
    "mailbox_roundtrip_delivery_seconds": Family(
        "histogram",
        "Time from the server accepting a probe message to its arrival in the mailbox.",
        "probe_delivery_seconds",
    ),
    "mailbox_roundtrip_late_arrivals_total": Family(
        "counter", "Probe messages that arrived after their probe gave up."
    ),
    "mailbox_roundtrip_junk_total": Family(
        "counter", "Round trips whose probe message was filed in the junk folder."
    ),
    "mailbox_roundtrip_bounces_total": Family(
        "counter", "Bounces of this exporter's probe messages found (and deleted)."
    ),
    "mailbox_cleanup_deleted_total": Family("counter", "Probe messages deleted from the mailbox."),
    "mailbox_cleanup_failures_total": Family("counter", "Round trips whose cleanup failed."),
    "mailbox_cleanup_lookalikes": Family(
        "gauge",
        "Messages carrying this exporter's probe id prefix whose id did not "
        "verify, seen by the last successful round trip; left alone.",
    ),
    "mailbox_authentication_result": Family(
        "gauge",
        "The receiving server's last verdict on a probe message by authentication method, read "
        "from its Authentication-Results field (targets with authserv_id): 1 for the verdict, 0 "
        "for the other results.",
        "probe_authentication_result",
    ),
    "mailbox_tls_certificate_expiry_timestamp_seconds": Family(
        "gauge",
        "When the certificate the server last presented expires (notAfter).",
        "probe_tls_certificate_expiry_timestamp_seconds",
    ),
    "mailbox_tls_version_info": Family(
        "gauge", "The TLS version last negotiated with the server; always 1."
    ),
    "mailbox_oauth_token_expiry_timestamp_seconds": Family(
        "gauge", "When the OAuth2 access token last used expires."
    ),
    "mailbox_oauth_token_refresh_failures_total": Family(
        "counter", "Probes that could not get an OAuth2 access token."
    ),
    "mailbox_provider_incident_info": Family(
        "gauge",
        "Present (1) while the provider's status page shows an open incident or advisory of a "
        "watched service (provider_status); removed once it is resolved.",
    ),
    "mailbox_provider_incident_start_timestamp_seconds": Family(
        "gauge", "When the provider says an open incident began."
    ),
    "mailbox_provider_incidents_open": Family(
        "gauge",
        "Open incidents and advisories of watched services on the provider's status page, "
        "including those beyond provider_status.max_incidents (which get no series).",
    ),
    "mailbox_provider_status_last_success_timestamp_seconds": Family(
        "gauge", "When the provider's status page was last read successfully."
    ),
    "mailbox_provider_status_fetch_failures_total": Family(
        "counter", "Failed readings of the provider's status page, by reason."
    ),
    "mailbox_target_info": Family(
        "gauge", "Static labels of each target, from its configuration; always 1."
    ),
    "mailbox_exporter_build_info": Family("gauge", "Version of the exporter; always 1."),
    "mailbox_exporter_config_last_reload_successful": Family(
        "gauge", "1 if the last configuration (re)load succeeded, else 0."
    ),
    "mailbox_exporter_config_last_reload_success_timestamp_seconds": Family(
        "gauge", "When the configuration was last loaded successfully."
    ),
    "mailbox_exporter_probe_key_persistent": Family(
        "gauge",
        "1 if the probe-id key is kept in a file, so that probe messages arriving after a "
        "restart are recognised and deleted; 0 if it lives in this process only.",
    ),
}


class _Writer:
    """Samples by family, written as text in the order of :data:`FAMILIES`."""

    def __init__(self, on_demand: bool = False) -> None:
        self.on_demand = on_demand
        self.samples: dict[str, list[str]] = {name: [] for name in FAMILIES}

    def add(self, family: str, labels: str, value: float, suffix: str = "") -> None:
        """Add a sample; ``labels`` is already written (``a="x",b="y"``)."""
        braces = f"{{{labels}}}" if labels else ""
        self.samples[family].append(f"{self._name(family)}{suffix}{braces} {_number(value)}\n")

    def _name(self, family: str) -> str:
        if not self.on_demand:
            return family
        name = FAMILIES[family].on_demand
        if name is None:
            raise KeyError(f"{family} is not part of a /probe answer")
        return name

    def text(self, always: tuple[str, ...] = ()) -> str:
        """Every family with samples, and those in ``always`` even without."""
        parts = []
        for family, lines in self.samples.items():
            if not lines and family not in always:
                continue
            spec = FAMILIES[family]
            kind = "gauge" if self.on_demand else spec.kind
            help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
            name = self._name(family)
            parts.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n" + "".join(lines))
        return "".join(parts)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return f'{name}="{escaped}"'


def _result_samples(out: _Writer, labels: str, result: ProbeResult) -> None:
    """The samples of one result that both expositions carry."""
    sep = "," if labels else ""
    out.add("mailbox_probe_success", labels, 1 if result.success else 0)
    if not result.success and result.reason is not None:
        where = result.phase.value if result.phase else ""
        out.add(
            "mailbox_probe_failed_info",
            f'{labels}{sep}phase="{where}",reason="{result.reason.value}"',
            1,
        )
    out.add("mailbox_probe_duration_seconds", labels, result.duration)
    for phase, seconds in result.phases.items():
        out.add(
            "mailbox_probe_phase_duration_seconds", f'{labels}{sep}phase="{phase.value}"', seconds
        )


def render(store: Store) -> str:
    """The store in the Prometheus text format. Label values are escaped once per target."""
    out = _Writer()
    add = out.add
    info_names = sorted({name for state in store.targets.values() for name in state.labels})
    reasons = [(reason, f',reason="{reason.value}"') for reason in Reason]
    bounds = [f',le="{float(bound)}"' for bound in DELIVERY_BUCKETS]

    for name, target in store.targets.items():
        t = _label("target", name)
        for check, state in target.checks.items():
            tc = f'{t},check="{check.value}"'
            add("mailbox_probes_total", tc, state.probes)
            add("mailbox_probe_interval_seconds", tc, state.interval)
            add("mailbox_probe_timeout_seconds", tc, state.timeout)
            add("mailbox_on_demand_refused_total", tc, state.on_demand_refused)
            for reason, label in reasons:
                add("mailbox_probe_failures_total", tc + label, state.failures[reason])
            if state.last_success is not None:
                add("mailbox_probe_last_success_timestamp_seconds", tc, state.last_success)
            last = state.last
            if last is None:
                continue
            _result_samples(out, tc, last)
            add("mailbox_probe_consecutive_failures", tc, state.consecutive_failures)
            add("mailbox_probe_last_timestamp_seconds", tc, last.ended)
            if not last.success and state.since is not None:
                add("mailbox_probe_failing_since_timestamp_seconds", tc, state.since)
            if last.found.backoff_since is not None:
                add("mailbox_login_backoff_since_timestamp_seconds", tc, last.found.backoff_since)
            if last.found.backoff_until is not None:
                add(
                    "mailbox_login_backoff_next_attempt_timestamp_seconds",
                    tc,
                    last.found.backoff_until,
                )
        if Check.ROUNDTRIP in target.checks:
            delivery = "mailbox_roundtrip_delivery_seconds"
            cumulative = 0
            for label, count in zip(bounds, target.delivery_counts, strict=True):
                cumulative += count
                add(delivery, t + label, cumulative, "_bucket")
            add(delivery, t + ',le="+Inf"', target.delivery_count, "_bucket")
            add(delivery, t, target.delivery_sum, "_sum")
            add(delivery, t, target.delivery_count, "_count")
            add("mailbox_roundtrip_late_arrivals_total", t, target.late_arrivals)
            add("mailbox_roundtrip_junk_total", t, target.junk)
            add("mailbox_roundtrip_bounces_total", t, target.bounces)
            add("mailbox_cleanup_deleted_total", t, target.cleanup_deleted)
            add("mailbox_cleanup_failures_total", t, target.cleanup_failures)
            if target.lookalikes is not None:
                add("mailbox_cleanup_lookalikes", t, target.lookalikes)
        for method, verdict in sorted(target.authentication.items()):
            for result in RESULTS:
                add(
                    "mailbox_authentication_result",
                    f'{t},method="{method}",result="{result}"',
                    1 if result == verdict else 0,
                )
        for protocol, session in sorted(target.tls.items()):
            tp = f'{t},protocol="{protocol}"'
            if session.not_after is not None:
                add("mailbox_tls_certificate_expiry_timestamp_seconds", tp, session.not_after)
            add("mailbox_tls_version_info", tp + "," + _label("version", session.version), 1)
        for protocol, expires in sorted(target.token_expiry.items()):
            add(
                "mailbox_oauth_token_expiry_timestamp_seconds",
                f'{t},protocol="{protocol}"',
                expires,
            )
        for protocol, count in target.token_failures.items():
            add("mailbox_oauth_token_refresh_failures_total", f'{t},protocol="{protocol}"', count)
        labels = ",".join([t, *(_label(n, target.labels.get(n, "")) for n in info_names)])
        add("mailbox_target_info", labels, 1)

    for provider, status in store.providers.items():
        p = _label("provider", provider)
        for incident in status.incidents:
            pi = f"{p},{_label('service', incident.service)},{_label('incident', incident.id)}"
            add(
                "mailbox_provider_incident_info",
                f"{pi},{_label('classification', incident.classification)},"
                f"{_label('status', incident.status)}",
                1,
            )
            if incident.start is not None:
                add("mailbox_provider_incident_start_timestamp_seconds", pi, incident.start)
        add("mailbox_provider_incidents_open", p, status.open_count)
        if status.last_success is not None:
            add("mailbox_provider_status_last_success_timestamp_seconds", p, status.last_success)
        for reason, count in status.failures.items():
            add(
                "mailbox_provider_status_fetch_failures_total",
                f'{p},reason="{reason.value}"',
                count,
            )

    add("mailbox_exporter_build_info", _label("version", __version__), 1)
    add("mailbox_exporter_config_last_reload_successful", "", 1 if store.reload_successful else 0)
    if store.reload_success_timestamp is not None:
        add(
            "mailbox_exporter_config_last_reload_success_timestamp_seconds",
            "",
            store.reload_success_timestamp,
        )
    add("mailbox_exporter_probe_key_persistent", "", 1 if store.probe_key_persistent else 0)
    watched = bool(store.providers)
    return out.text(
        always=tuple(
            n
            for n in FAMILIES
            if n != _RELOAD_TS and (watched or not n.startswith(_PROVIDER_STATUS))
        )
    )


_RELOAD_TS: Final = "mailbox_exporter_config_last_reload_success_timestamp_seconds"
_PROVIDER_STATUS: Final = "mailbox_provider_"
"""Families that appear only when provider_status is configured."""


def render_result(result: ProbeResult) -> str:
    """One probe's metrics only, the blackbox_exporter convention for ``/probe``."""
    out = _Writer(on_demand=True)
    _result_samples(out, "", result)
    if result.delivery_seconds is not None:
        out.add("mailbox_roundtrip_delivery_seconds", "", result.delivery_seconds)
    for method, verdict in sorted(result.found.authentication.items()):
        out.add("mailbox_authentication_result", f'method="{method}",result="{verdict}"', 1)
    for protocol, session in sorted(result.found.tls.items()):
        if session.not_after is not None:
            out.add(
                "mailbox_tls_certificate_expiry_timestamp_seconds",
                f'protocol="{protocol}"',
                session.not_after,
            )
    return out.text(
        always=(
            "mailbox_probe_success",
            "mailbox_probe_duration_seconds",
            "mailbox_probe_phase_duration_seconds",
            "mailbox_tls_certificate_expiry_timestamp_seconds",
        )
    )

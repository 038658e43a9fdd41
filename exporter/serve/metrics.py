"""The Prometheus text exposition (0.0.4) of ``/metrics`` and of ``GET /probe``.

Every metric family is declared once, in :data:`FAMILIES`; both exposition writers take their
names, types and help from there. Written directly rather than through prometheus_client's
collector objects: at a thousand targets that is ten times faster. ``/metrics`` keeps the text
of every target's checks between scrapes and writes again only what changed since the last one
(:class:`_Exposition`): at ten thousand targets, a quarter of writing everything. The web
handler writes it in slices of :data:`SLICE_SECONDS` that give the event loop back between
them (:func:`render_async`), so that a scrape, even the first of a full store, never holds up
the probes for longer than a slice. No I/O happens during a scrape: it reads the store only.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, cast

from exporter import __version__
from exporter.authres import RESULTS
from exporter.outcome import Check
from exporter.result import ProbeResult
from exporter.state import DELIVERY_BUCKETS, CheckState, Store, TargetState

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
    "mailbox_probes_failed_total": Family(
        "counter", "Failed probes, whatever the reason; present from the start, at 0."
    ),
    "mailbox_probe_failures_total": Family(
        "counter", "Failed probes by reason; a reason's series appears at its first failure."
    ),
    "mailbox_probe_consecutive_failures": Family(
        "gauge", "Failed probes in a row, up to the last one (0 after a success)."
    ),
    "mailbox_probe_failed_info": Family(
        "gauge",
        "Present (1) while the last probe failed: where and why.",
        "probe_failed_info",
    ),
    "mailbox_probe_last_success_timestamp_seconds": Family(
        "gauge",
        "Present while the check fails, once a probe has succeeded: when the last successful "
        "probe ended. While it succeeds, that is mailbox_probe_last_timestamp_seconds.",
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
        "check ran too recently; appears at the first refusal.",
    ),
    "mailbox_probe_interval_seconds": Family("gauge", "Configured probe interval."),
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
        "verify, seen by the last successful round trip; left alone. Present while there are "
        "any.",
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
    "mailbox_credential_expiry_timestamp_seconds": Family(
        "gauge",
        "When the app credential a transport authenticates with expires: the certificate's "
        "notAfter, or the client secret's expiry where the configuration states it.",
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

    def text(self, always: tuple[str, ...] = (), columns: Sequence[list[str]] = ()) -> str:
        """Every family with samples, and those in ``always`` even without. ``columns`` holds
        more text of each family, in the order of :data:`FAMILIES`."""
        return "".join(part for part in self.parts(always, columns) if part is not None)

    def parts(
        self, always: tuple[str, ...] = (), columns: Sequence[list[str]] = ()
    ) -> Iterator[str | None]:
        """The text of :meth:`text` in parts, and ``None`` between them where the writer may
        yield: a column is joined :data:`_JOIN_BATCH` cells at a time, as the exposition can
        be tens of megabytes."""
        for index, (family, lines) in enumerate(self.samples.items()):
            column = columns[index] if columns else ()
            if not lines and family not in always and not any(column):
                continue
            spec = FAMILIES[family]
            kind = "gauge" if self.on_demand else spec.kind
            help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
            name = self._name(family)
            yield f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
            for start in range(0, len(column), _JOIN_BATCH):
                yield "".join(column[start : start + _JOIN_BATCH])
                yield None
            yield "".join(lines)


_JOIN_BATCH: Final = 5000
"""Cells of a column joined between two chances to yield: a few milliseconds' work."""


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


class _Sink(Protocol):
    def add(self, family: str, labels: str, value: float, suffix: str = "") -> None: ...


def _result_samples(out: _Sink, labels: str, result: ProbeResult) -> None:
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


class _TargetWriter:
    """One target's samples by family, made into text once and kept until the target changes."""

    def __init__(self) -> None:
        self.samples: dict[str, list[str]] = {}

    def add(self, family: str, labels: str, value: float, suffix: str = "") -> None:
        line = f"{family}{suffix}{{{labels}}} {_number(value)}\n"
        lines = self.samples.get(family)
        if lines is None:
            self.samples[family] = [line]
        else:
            lines.append(line)

    def fragments(self) -> tuple[tuple[int, str], ...]:
        return tuple(
            (_INDEX[family], lines[0] if len(lines) == 1 else "".join(lines))
            for family, lines in self.samples.items()
        )


Fragments = tuple[tuple[int, str], ...]
"""Text of some samples by family: the index of the family in :data:`FAMILIES`, the lines."""


@dataclass
class _CheckText:
    """A check's text, and what it was written from. Its interval and its counters by reason
    change far less often than its last result: they are written again only when they change."""

    state: CheckState
    version: int = -1
    interval: float = math.nan
    interval_text: Fragments = ()
    counts: tuple[int, int] = (-1, -1)
    counts_text: Fragments = ()
    fragments: Fragments = ()


def _check_text(tc: str, state: CheckState, kept: _CheckText) -> None:
    """Write again what changed of one check of a target; ``tc`` is its written labels."""
    if state.interval != kept.interval:
        out = _TargetWriter()
        out.add("mailbox_probe_interval_seconds", tc, state.interval)
        kept.interval, kept.interval_text = state.interval, out.fragments()
    counts = (state.failed, state.on_demand_refused)
    if counts != kept.counts:
        # Written from their first increment: mailbox_probes_failed_total, present from the
        # start, is the one for rate(); these say why, and no rule takes rate() of them.
        out = _TargetWriter()
        if state.on_demand_refused:
            out.add("mailbox_on_demand_refused_total", tc, state.on_demand_refused)
        for reason, count in state.failures.items():
            if count:
                out.add("mailbox_probe_failures_total", f'{tc},reason="{reason.value}"', count)
        kept.counts, kept.counts_text = counts, out.fragments()
    out = _TargetWriter()
    add = out.add
    add("mailbox_probes_total", tc, state.probes)
    add("mailbox_probes_failed_total", tc, state.failed)
    last = state.last
    if last is not None:
        _result_samples(out, tc, last)
        add("mailbox_probe_consecutive_failures", tc, state.consecutive_failures)
        add("mailbox_probe_last_timestamp_seconds", tc, last.ended)
        if not last.success and state.since is not None:
            add("mailbox_probe_failing_since_timestamp_seconds", tc, state.since)
        if not last.success and state.last_success is not None:
            # While the check succeeds it would repeat mailbox_probe_last_timestamp_seconds.
            add("mailbox_probe_last_success_timestamp_seconds", tc, state.last_success)
        if last.found.backoff_since is not None:
            add("mailbox_login_backoff_since_timestamp_seconds", tc, last.found.backoff_since)
        if last.found.backoff_until is not None:
            add(
                "mailbox_login_backoff_next_attempt_timestamp_seconds",
                tc,
                last.found.backoff_until,
            )
    kept.fragments = kept.interval_text + kept.counts_text + out.fragments()
    kept.version = state.version


@dataclass
class _Rendered:
    """A target's text, in parts that change at different rates, and what each was written
    from: a check's part changes with its own results only; the delivery histogram and the
    round trip's counters with round trips only."""

    state: TargetState
    version: int = -1
    info_names: tuple[str, ...] = ()
    own: Fragments = ()
    """The target's other samples: TLS, tokens, authentication results, ``target_info``."""
    own_from: tuple[object, ...] = ()
    counted: tuple[object, ...] = ()
    roundtrip: Fragments = ()
    """The delivery histogram and the round trip's counters."""
    checks: dict[Check, _CheckText] = field(default_factory=dict)
    slot: int = 0
    """Where its parts stand in the columns of :class:`_Exposition`: checks, round trip, own."""


class _Exposition:
    """The text of every target of one store as last rendered: for each family, a column with
    a cell per part of each target (most empty). A scrape writes again only the parts that
    changed (:attr:`TargetState.version`, :attr:`CheckState.version`) and puts them in their
    cells; each family is then one join. At ten thousand targets, writing everything holds
    the event loop that runs the probes for most of a second."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetState] = {}
        """The store's targets when the cells were laid out (a reload replaces the dict)."""
        self.rendered: dict[str, _Rendered] = {}
        self.columns: list[list[str]] = []
        self.lock = asyncio.Lock()
        """Held by the scrape being written (:func:`render_async`)."""

    def lay_out(self, targets: dict[str, TargetState]) -> Iterator[None]:
        """Cells for every part of the targets, in their order; parts unchanged are kept.
        Yields between batches of targets; the layout is the page's once it has finished
        (:attr:`targets`), so one left unfinished is done again by the next scrape."""
        slot = 0
        rendered: dict[str, _Rendered] = {}
        for count, (name, target) in enumerate(targets.items(), 1):
            kept = self.rendered.get(name)
            if kept is None or kept.state is not target:
                kept = _Rendered(target)
            kept.slot = slot
            slot += len(target.checks) + _TARGET_PARTS
            rendered[name] = kept
            if count % _LAYOUT_BATCH == 0:
                yield
        columns = [[""] * slot for _ in FAMILIES]
        for count, kept in enumerate(rendered.values(), 1):
            if list(kept.checks) != list(kept.state.checks):
                # The checks changed: the target is written again, at its new cells.
                kept.checks, kept.roundtrip, kept.own, kept.version = {}, (), (), -1
            parts = [text.fragments for text in kept.checks.values()]
            for offset, fragments in enumerate([*parts, kept.roundtrip, kept.own]):
                for index, text in fragments:
                    columns[index][kept.slot + offset] = text
            if count % _LAYOUT_BATCH == 0:
                yield
        self.targets, self.rendered, self.columns = targets, rendered, columns

    def place(self, slot: int, old: Fragments, new: Fragments) -> None:
        """Put a part's new text in its cells, emptying those it no longer has."""
        columns = self.columns
        for index, _ in old:
            columns[index][slot] = ""
        for index, text in new:
            columns[index][slot] = text


_TARGET_PARTS: Final = 2
"""Parts of a target besides its checks: the round trip's counters, and the rest."""
_LAYOUT_BATCH: Final = 500
"""Targets laid out between two chances to yield: about a millisecond's work."""
_INDEX: Final = {name: index for index, name in enumerate(FAMILIES)}
_EXPOSITIONS: Final[weakref.WeakKeyDictionary[Store, _Exposition]] = weakref.WeakKeyDictionary()
_BOUNDS: Final = tuple(f',le="{float(bound)}"' for bound in DELIVERY_BUCKETS)


def _counted(target: TargetState) -> tuple[object, ...]:
    """What the round trip's samples are written from."""
    return (
        target.delivery_count,
        target.delivery_sum,
        target.late_arrivals,
        target.junk,
        target.bounces,
        target.cleanup_deleted,
        target.cleanup_failures,
        target.lookalikes,
    )


def _roundtrip_fragments(t: str, target: TargetState) -> Fragments:
    out = _TargetWriter()
    add = out.add
    delivery = "mailbox_roundtrip_delivery_seconds"
    cumulative = 0
    for label, count in zip(_BOUNDS, target.delivery_counts, strict=True):
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
    if target.lookalikes:
        add("mailbox_cleanup_lookalikes", t, target.lookalikes)
    return out.fragments()


def _own_fragments(t: str, target: TargetState, info_names: tuple[str, ...]) -> Fragments:
    out = _TargetWriter()
    add = out.add
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
        add("mailbox_oauth_token_expiry_timestamp_seconds", f'{t},protocol="{protocol}"', expires)
    for protocol, expires in target.credential_expiry.items():
        add("mailbox_credential_expiry_timestamp_seconds", f'{t},protocol="{protocol}"', expires)
    for protocol, count in target.token_failures.items():
        add("mailbox_oauth_token_refresh_failures_total", f'{t},protocol="{protocol}"', count)
    labels = ",".join([t, *(_label(n, target.labels.get(n, "")) for n in info_names)])
    add("mailbox_target_info", labels, 1)
    return out.fragments()


def _update(
    page: _Exposition, kept: _Rendered, name: str, target: TargetState, info: tuple[str, ...]
) -> None:
    """Write again the parts of a target that changed since ``kept`` was written, and put
    them in their cells. Its checks are those it had when the cells were laid out."""
    if kept.version == target.version and kept.info_names is info:
        return
    t = _label("target", name)
    checks = {}
    for offset, (check, state) in enumerate(target.checks.items()):
        text = kept.checks.get(check)
        old = () if text is None else text.fragments
        if text is None or text.state is not state:
            # A reload replaced the check's state (two reloads since the last scrape can
            # leave the same checks): its cells still hold the text of the old one.
            text = _CheckText(state)
        if text.version != state.version:
            _check_text(f'{t},check="{check.value}"', state, text)
            page.place(kept.slot + offset, old, text.fragments)
        checks[check] = text
    kept.checks = checks
    slot = kept.slot + len(checks)
    if Check.ROUNDTRIP not in target.checks:
        page.place(slot, kept.roundtrip, ())
        kept.counted, kept.roundtrip = (), ()
    else:
        counted = _counted(target)
        if counted != kept.counted or not kept.roundtrip:
            old = kept.roundtrip
            kept.counted, kept.roundtrip = counted, _roundtrip_fragments(t, target)
            page.place(slot, old, kept.roundtrip)
    own_from = (
        tuple(target.tls.items()),
        tuple(target.token_expiry.items()),
        tuple(target.credential_expiry.items()),
        tuple(target.token_failures.items()),
        tuple(target.authentication.items()),
        tuple(target.labels.items()),
        info,
    )
    if own_from != kept.own_from or not kept.own:
        old = kept.own
        kept.own, kept.own_from = _own_fragments(t, target, info), own_from
        page.place(slot + 1, old, kept.own)
    kept.version, kept.info_names = target.version, info


SLICE_SECONDS: Final = 0.01
"""The longest :func:`render_async` writes before giving the event loop back: a probe due
during a scrape starts at most about this late per slice."""


def render(store: Store) -> str:
    """The store in the Prometheus text format, at once. Only what changed since the last
    call is written again; label values are escaped once per target."""
    steps = _render(store)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return "".join(cast(list[str], done.value))


async def render_async(store: Store) -> list[bytes]:
    """What :func:`render` writes, encoded, in chunks to be joined: written in slices of
    :data:`SLICE_SECONDS` with the event loop free between them. One scrape of a store at a
    time: a second waits for the first, then writes only what changed meanwhile."""
    page = _page(store)
    async with page.lock:
        steps = _render(store)
        began = time.perf_counter()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                parts = cast(list[str], done.value)
                break
            if time.perf_counter() - began >= SLICE_SECONDS:
                await asyncio.sleep(0)
                began = time.perf_counter()
        chunks: list[bytes] = []
        for part in parts:
            chunks.append(part.encode())
            if time.perf_counter() - began >= SLICE_SECONDS:
                await asyncio.sleep(0)
                began = time.perf_counter()
        return chunks


def _page(store: Store) -> _Exposition:
    page = _EXPOSITIONS.get(store)
    if page is None:
        page = _EXPOSITIONS[store] = _Exposition()
    return page


def _render(store: Store) -> Generator[None, None, list[str]]:
    """The steps of a render, ending with its text in parts: it yields between targets and
    between parts of the text, where the caller may let other work run. That work can record
    results (those of targets already written wait for the next scrape) or reload the
    configuration: a reload replaces the store's targets, and the targets are then laid out
    and written again, as a reload changes which cells each target has."""
    page = _page(store)
    while True:
        targets = store.targets
        if page.targets is not targets:
            yield from page.lay_out(targets)
            if store.targets is not targets:
                continue
        names = {name for state in targets.values() for name in state.labels}
        info = next(iter(page.rendered.values())).info_names if page.rendered else ()
        if set(info) != names:
            info = tuple(sorted(names))
        # While the names stay, every target holds this same tuple and compares it by identity.
        rendered = page.rendered
        for name, target in targets.items():
            yield
            if store.targets is not targets:
                break
            _update(page, rendered[name], name, target, info)
        else:
            break

    out = _Writer()
    add = out.add

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
    parts: list[str] = []
    always = tuple(
        n for n in FAMILIES if n != _RELOAD_TS and (watched or not n.startswith(_PROVIDER_STATUS))
    )
    for part in out.parts(always, page.columns):
        if part is None:
            yield
        else:
            parts.append(part)
    return parts


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

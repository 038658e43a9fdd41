"""Alertmanager silences, read and matched against a target's labels; pure, no I/O.

Alertmanager's API v2 (``GET /api/v2/silences``) answers a JSON list of silences:
``{id, status: {state}, startsAt, endsAt, comment, createdBy, matchers: [{name, value,
isRegex, isEqual}]}``. :func:`parse` keeps the active ones, each within bounds, and never keeps
who created it. A silence matches an alert when every matcher does (Alertmanager's rule): an
absent label is the empty string, a regex is anchored at both ends (``^(?:value)$``) and has
RE2's syntax, as in Alertmanager (Go's regexp); RE2 also matches in linear time, so no
pattern can hold up the exporter, however it is written.

The exporter knows only some of the labels its alerts carry: ``target``, ``provider``, the
target's configured labels, and the location label when ``global.location`` names one (the
alerts' ``alertname``, ``severity``, ``job`` and ``instance`` are Prometheus'). A silence
covers a target when it has at least one matcher on a label the exporter knows, and all those
match; matchers on other labels are left out (:func:`covers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import re2

from exporter.times import timestamp as timestamp

MAX_SILENCES: Final = 1000
"""Active silences kept from one answer; more are left out and counted."""
MAX_MATCHERS: Final = 64
"""Matchers of one silence; a silence with more is left out (Alertmanager has no limit)."""
MAX_PATTERN: Final = 1024
"""Characters of a matcher's value (a regex, or a value to compare); longer: left out."""
MAX_NAME: Final = 256
"""Characters of a matcher's label name."""
MAX_COMMENT: Final = 200
"""Characters of a silence's comment shown on the status page."""
MAX_ID: Final = 64
"""Characters of a silence id (Alertmanager's are UUIDs, 36)."""
REGEX_MEMORY: Final = 1 << 20
"""Bytes RE2 may use for one compiled matcher: a pattern needing more is left out."""


class SilenceError(Exception):
    """The answer is not a list of silences; the message says why, briefly."""


class _Pattern(Protocol):
    def search(self, text: str) -> object | None: ...


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is counted, not printed to stderr
    options.max_mem = REGEX_MEMORY
    return options


_OPTIONS: Final = _options()


def compile_pattern(value: str) -> _Pattern:
    """``value`` as Alertmanager compiles a regex matcher: ``^(?:value)$``, searched (so
    ``a)|(b`` means what it means there); ValueError if RE2 refuses it (a syntax RE2 lacks,
    such as a look-ahead, or a pattern too large)."""
    try:
        return cast(_Pattern, re2.compile(f"^(?:{value})$", options=_OPTIONS))
    except re2.error:
        raise ValueError("not a regular expression Alertmanager accepts") from None


@dataclass(frozen=True)
class Matcher:
    """One of a silence's matchers: ``name``, then ``=``, ``!=``, ``=~`` or ``!~`` ``value``."""

    name: str
    value: str
    regex: bool
    equal: bool
    pattern: _Pattern | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label (the empty string when absent) satisfies the matcher."""
        text = labels.get(self.name, "")
        if self.pattern is not None:
            found = self.pattern.search(text) is not None
        else:
            found = text == self.value
        return found == self.equal

    def __str__(self) -> str:
        operator = ("=~" if self.equal else "!~") if self.regex else ("=" if self.equal else "!=")
        return f"{self.name}{operator}{json.dumps(self.value)}"


@dataclass(frozen=True)
class Silence:
    """An active silence, as much of it as the status page shows: never who created it."""

    id: str
    ends: float
    """When it ends (seconds since 1970)."""
    comment: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class Silences:
    """The active silences of one answer, and how many were left out (and why, in words)."""

    silences: tuple[Silence, ...]
    left_out: int = 0
    why_left_out: str = ""


def _text(value: object, limit: int) -> str:
    """A string field, cut to ``limit`` characters, its control characters replaced."""
    if not isinstance(value, str):
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in value[:limit])


def _matcher(item: object) -> Matcher:
    """One matcher; ValueError when it cannot be evaluated here."""
    if not isinstance(item, dict):
        raise ValueError("a matcher is not an object")
    name, value = item.get("name"), item.get("value")
    regex, equal = item.get("isRegex", False), item.get("isEqual", True)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ValueError("a matcher has no label name")
    if not isinstance(value, str) or len(value) > MAX_PATTERN:
        raise ValueError(f"a matcher's value is missing or longer than {MAX_PATTERN}")
    if not isinstance(regex, bool) or not isinstance(equal, bool):
        raise ValueError("isRegex or isEqual is not a boolean")
    return Matcher(name, value, regex, equal, compile_pattern(value) if regex else None)


def silence(item: object, now: float) -> Silence | None:
    """An active silence (its state ``active``, and not ended at ``now``), else None;
    ValueError for one that is active but cannot be evaluated here."""
    if not isinstance(item, dict):
        raise ValueError("a silence is not an object")
    status = item.get("status")
    if not isinstance(status, dict) or status.get("state") != "active":
        return None
    ends = timestamp(item.get("endsAt"))
    if ends is None:
        raise ValueError("an active silence has no end time")
    if ends <= now:
        return None
    matchers = item.get("matchers")
    if not isinstance(matchers, list) or not matchers or len(matchers) > MAX_MATCHERS:
        raise ValueError(f"an active silence has no matchers or more than {MAX_MATCHERS}")
    return Silence(
        id=_text(item.get("id"), MAX_ID),
        ends=ends,
        comment=_text(item.get("comment"), MAX_COMMENT).strip(),
        matchers=tuple(_matcher(m) for m in matchers),
    )


def parse(body: bytes, now: float) -> Silences:
    """The active silences of an answer of ``GET /api/v2/silences``.

    :class:`SilenceError` unless the answer is a JSON list; a silence that cannot be
    evaluated (a regex RE2 refuses, a value too long) is left out and counted, so that one
    odd silence does not hide the others.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise SilenceError("the answer is not JSON") from None
    if not isinstance(data, list):
        raise SilenceError("the answer is not a JSON list of silences")
    kept: list[Silence] = []
    left_out, why = 0, ""
    for item in data:
        try:
            found = silence(item, now)
        except ValueError as exc:
            left_out, why = left_out + 1, why or str(exc)
            continue
        if found is None:
            continue
        if len(kept) >= MAX_SILENCES:
            left_out, why = left_out + 1, why or f"more than {MAX_SILENCES} active silences"
            continue
        kept.append(found)
    return Silences(tuple(kept), left_out, why)


def covers(silence: Silence, labels: Mapping[str, str], known: Iterable[str]) -> bool:
    """Whether ``silence`` silences the alerts of a target with ``labels``, as far as the
    exporter can tell: it has a matcher on a ``known`` label name, and every such matcher
    matches (an absent known label is the empty string, as in Alertmanager)."""
    names = set(known)
    relevant = [m for m in silence.matchers if m.name in names]
    return bool(relevant) and all(m.matches(labels) for m in relevant)


@dataclass(frozen=True)
class Note:
    """Planned maintenance of one target: a silence that covers it."""

    silence: str
    ends: float
    comment: str


@dataclass
class SilenceState:
    """What the status page shows of the silences: per target, the silences that cover it,
    and whether Alertmanager could be read. Written by the watcher, only read by the page."""

    configured: bool = False
    notes: dict[str, tuple[Note, ...]] = field(default_factory=dict)
    """By target name."""
    active: int = 0
    """Active silences in the last answer."""
    left_out: int = 0
    why_left_out: str = ""
    last_success: float | None = None
    error: str = ""
    """Why the last reading failed; empty after a success."""
    failing_since: float | None = None

    def notes_of(self, target: str, now: float) -> tuple[Note, ...]:
        """The silences covering ``target`` that have not ended by ``now``."""
        return tuple(note for note in self.notes.get(target, ()) if note.ends > now)


def notes(
    found: Iterable[Silence], labels: Mapping[str, str], known: Iterable[str]
) -> tuple[Note, ...]:
    """The notes of the silences in ``found`` that cover a target, the latest to end first."""
    names = frozenset(known)
    return tuple(
        Note(s.id, s.ends, s.comment)
        for s in sorted(found, key=lambda s: s.ends, reverse=True)
        if covers(s, labels, names)
    )

"""Alertmanager's silences read and matched (exporter/silences.py): Alertmanager's matching
rules, and hostile answers and patterns ending in a result or a clean, bounded error."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import silences
from exporter.silences import (
    MAX_COMMENT,
    MAX_PATTERN,
    Matcher,
    SilenceError,
    Silences,
    compile_pattern,
    covers,
    parse,
)

NOW = 1_800_000_000.0
LATER = "2027-01-15T09:00:00.123456789Z"
"""An hour after NOW, with nanoseconds as Alertmanager writes them."""
CREATOR = "creator-who-is-never-shown"
PROPERTY = settings(derandomize=True, max_examples=150, deadline=None)


def _silence(matchers: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "id": "2b0b3c57-6d1f-4c5e-9c53-3f1e1f0d7a11",
        "status": {"state": "active"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": LATER,
        "updatedAt": "2026-01-01T00:00:00Z",
        "createdBy": CREATOR,
        "comment": "mailbox migration",
        "matchers": matchers,
        **fields,
    }


def _m(name: str, value: str, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


def _one(item: dict[str, Any]) -> silences.Silence:
    found = parse(json.dumps([item]).encode(), NOW)
    assert found.left_out == 0, found
    [silence] = found.silences
    return silence


LABELS = {"target": "corp-mail", "provider": "microsoft", "location": "office", "team": "mail"}
KNOWN = {*LABELS, "provider"}


@pytest.mark.parametrize(
    ("matchers", "covered"),
    [
        ([_m("target", "corp-mail")], True),
        ([_m("target", "corp")], False),
        ([_m("target", "corp.*", regex=True)], True),
        ([_m("target", "corp", regex=True)], False),  # anchored at both ends
        ([_m("target", "mail", regex=True)], False),
        ([_m("target", "corp-mail|other", regex=True)], True),
        ([_m("target", "other", equal=False)], True),
        ([_m("target", "corp-mail", equal=False)], False),
        ([_m("target", "corp.*", regex=True, equal=False)], False),
        ([_m("location", "office")], True),
        ([_m("location", "dc")], False),
        ([_m("provider", "microsoft"), _m("team", "mail")], True),
        ([_m("provider", "microsoft"), _m("team", "web")], False),
        # Labels the exporter cannot know (Prometheus' and the rules') are left out...
        ([_m("target", "corp-mail"), _m("alertname", "MailboxLoginFailing")], True),
        ([_m("target", "corp-mail"), _m("instance", "elsewhere:1")], True),
        # ...and a silence of those alone says nothing about a target.
        ([_m("alertname", "Watchdog")], False),
        ([_m("job", ".*", regex=True)], False),
        # An absent known label is the empty string, as in Alertmanager.
        ([_m("region", "")], False),
        ([_m("target", ".+", regex=True), _m("provider", "", equal=True)], False),
        # Alertmanager wraps the value in ^(?:...)$ and searches: this is "starts with corp".
        ([_m("target", "corp)|(x", regex=True)], True),
        ([_m("target", "mail)|(x", regex=True)], False),
        # A matcher for a line break must not match through the anchor (``$`` would).
        ([_m("target", "corp-mail\n", regex=True)], False),
    ],
)
def test_a_silence_covers_a_target_as_alertmanager_would_silence_its_alerts(
    matchers: list[dict[str, Any]], covered: bool
) -> None:
    assert covers(_one(_silence(matchers)), LABELS, KNOWN) is covered


def test_absent_labels_are_empty_and_provider_is_always_known() -> None:
    labels = {"target": "box"}
    known = {"target", "provider"}
    assert covers(_one(_silence([_m("provider", "")])), labels, known)
    assert not covers(_one(_silence([_m("provider", "google")])), labels, known)
    assert covers(_one(_silence([_m("provider", "google", equal=False)])), labels, known)


def test_only_active_unexpired_silences_are_kept_without_their_creator() -> None:
    body = json.dumps(
        [
            _silence([_m("target", "a")], id="active"),
            _silence([_m("target", "a")], id="expired", status={"state": "expired"}),
            _silence([_m("target", "a")], id="pending", status={"state": "pending"}),
            _silence([_m("target", "a")], id="ended", endsAt="2020-01-01T00:00:00Z"),
        ]
    ).encode()
    found = parse(body, NOW)
    assert [s.id for s in found.silences] == ["active"]
    assert found.left_out == 0
    assert CREATOR not in repr(found)
    assert found.silences[0].ends == pytest.approx(NOW + 3600.123456)


def test_a_silence_that_cannot_be_evaluated_is_counted_and_the_others_kept() -> None:
    body = json.dumps(
        [
            _silence([_m("target", "(?=look-ahead)", regex=True)], id="perl"),
            _silence([_m("target", "x" * (MAX_PATTERN + 1))], id="long"),
            _silence([], id="empty"),
            _silence([_m("target", "a")], id="fine"),
        ]
    ).encode()
    found = parse(body, NOW)
    assert [s.id for s in found.silences] == ["fine"]
    assert found.left_out == 3
    assert "regular expression" in found.why_left_out


def test_comments_are_cut_and_made_printable() -> None:
    comment = "line one\nline two\x00\x1b[31m" + "x" * 500
    [silence] = parse(
        json.dumps([_silence([_m("t", "a")], comment=comment)]).encode(), NOW
    ).silences
    assert len(silence.comment) <= MAX_COMMENT
    assert silence.comment.isprintable()
    assert silence.comment.startswith("line one line two")


@pytest.mark.parametrize(
    "body", [b"", b"{}", b"null", b"not json", b"\xff\xfe", b"[" * 100_000, b'{"silences": []}']
)
def test_an_answer_that_is_not_a_list_is_a_clean_error(body: bytes) -> None:
    with pytest.raises(SilenceError) as caught:
        parse(body, NOW)
    assert len(str(caught.value)) < 100


CATASTROPHIC = ["(a+)+b", "(a|a)*b", "(a|aa)*c", "(.*a){25}", "((a*)*)*b", "(x+x+)+y"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_patterns_that_backtrack_for_ever_elsewhere_match_at_once(pattern: str) -> None:
    """Each would take Python's re minutes to hours on this value; RE2 is linear."""
    value = "a" * 127 + "!"
    started = time.monotonic()
    silence = _one(_silence([_m("target", pattern, regex=True)]))
    assert not covers(silence, {"target": value}, {"target"})
    assert time.monotonic() - started < 0.5


# --- properties -------------------------------------------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
REGEX_TEXT = st.text(alphabet="ab.*+?|()[]{}^$\\-0123,:", max_size=40)
FIELD = st.one_of(JSON_VALUE, st.text(max_size=300), st.just(LATER), st.just("active"))


@st.composite
def hostile_silence(draw: st.DrawFn) -> Any:
    """Mostly well-formed silences, with any field replaced by anything."""
    matchers = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.one_of(st.sampled_from(sorted(KNOWN)), FIELD),
                    "value": st.one_of(REGEX_TEXT, FIELD),
                    "isRegex": st.one_of(st.booleans(), FIELD),
                    "isEqual": st.one_of(st.booleans(), FIELD),
                }
            ),
            max_size=4,
        )
    )
    item = _silence(matchers, comment=draw(st.one_of(st.text(max_size=400), FIELD)))
    for key in draw(st.sets(st.sampled_from(sorted(item)), max_size=3)):
        item[key] = draw(FIELD)
    if draw(st.booleans()):
        item["status"] = {"state": draw(st.sampled_from(["active", "expired", "pending"]))}
    return item


def _bounded(found: Silences) -> None:
    for silence in found.silences:
        assert len(silence.comment) <= MAX_COMMENT and silence.comment.isprintable()
        assert silence.ends > NOW
        assert silence.matchers
        for matcher in silence.matchers:
            covers(silence, LABELS, KNOWN)
            assert isinstance(matcher.matches(LABELS), bool)
    assert CREATOR not in repr(found)


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_give_silences_or_a_clean_error(body: bytes) -> None:
    try:
        _bounded(parse(body, NOW))
    except SilenceError as exc:
        assert len(str(exc)) < 100


@PROPERTY
@given(st.lists(st.one_of(hostile_silence(), JSON_VALUE), max_size=5) | JSON_VALUE)
def test_any_json_gives_silences_or_a_clean_error(data: Any) -> None:
    try:
        found = parse(json.dumps(data).encode(), NOW)
    except SilenceError as exc:
        assert len(str(exc)) < 100
        return
    _bounded(found)
    assert len(found.why_left_out) < 200


@PROPERTY
@given(REGEX_TEXT, st.text(alphabet="ab\n", max_size=30))
def test_any_pattern_compiles_or_is_refused_cleanly_and_matches_whole_values(
    pattern: str, value: str
) -> None:
    try:
        compiled = compile_pattern(pattern)
    except ValueError as exc:
        assert "regular expression" in str(exc)
        return
    matched = Matcher("target", pattern, True, True, compiled).matches({"target": value})
    assert isinstance(matched, bool)
    try:
        python = re.compile(f"^(?:{pattern})\\Z")
    except re.error:
        return
    if not re.search(r"[\\\[\]{}^$]", pattern):  # where Python's syntax is RE2's
        assert matched == (python.search(value) is not None), (pattern, value)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["target", "provider", "team", "location"]), st.text(max_size=10)
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["target", "provider", "team", "location", "alertname"]),
            st.text(alphabet="abc", max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_equality_matchers_follow_alertmanager(
    labels: dict[str, str], matchers: list[tuple[str, str, bool]]
) -> None:
    known = {"target", "provider", "team", "location"}
    silence = _one(_silence([_m(name, value, equal=equal) for name, value, equal in matchers]))
    relevant = [(n, v, e) for n, v, e in matchers if n in known]
    expected = bool(relevant) and all((labels.get(n, "") == v) == e for n, v, e in relevant)
    assert covers(silence, labels, known) is expected


@PROPERTY
@given(st.text(max_size=70))
def test_any_time_text_is_a_time_or_none(text: str) -> None:
    value = silences.timestamp(text)
    assert value is None or isinstance(value, float)

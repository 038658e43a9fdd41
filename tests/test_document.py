"""Reading the YAML document: what it means is PyYAML's safe loader's with the merge-key spec,
every key keeps its line, and aliases stay bounded however they nest or merge."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config
from exporter.config.document import MAX_NODES, Lines, parse_document
from exporter.config.model import ConfigError
from testing.targets import full_config

SERVER = "{host: h, username: u@example.org, password: p}"

# --- merge keys ---------------------------------------------------------------------------------

SHARED = (
    "defaults:\n"
    "  labels: {team: mail}\n"
    "  smtp: &smtp\n"
    "    host: smtp.example.org\n"
    "    port: 587\n"
    "    username: probe@example.org\n"
    "    password: p\n"
    "targets:\n"
    "  - name: a\n"
    "    smtp:\n"
    "      <<: *smtp\n"
    "      port: 25\n"
    "      tls: none\n"
    f"    imap: {SERVER}\n"
)


def test_a_key_written_beside_a_merge_key_overrides_the_merged_one() -> None:
    """The merge-key spec: keys written in the mapping override merged ones."""
    loaded = config.parse(SHARED, environ={})
    smtp = loaded.targets[0].smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.tls, smtp.username) == (
        "smtp.example.org",
        25,
        "none",
        "probe@example.org",
    )


def test_a_key_written_twice_beside_a_merge_key_is_still_refused() -> None:
    text = SHARED.replace("      port: 25\n", "      port: 25\n      port: 26\n")
    with pytest.raises(ConfigError, match=r"^line 13: targets\[0\]\.smtp\.port: duplicate key$"):
        config.parse(text, environ={})


def test_the_first_merged_mapping_wins_and_keys_written_win_over_all() -> None:
    text = (
        "a: &a {host: from-a, port: 1}\n"
        "b: &b {host: from-b, port: 2, tls: none}\n"
        "c:\n"
        "  <<: [*a, *b]\n"
        "  port: 3\n"
    )
    data, lines = parse_document(text)
    assert data["c"] == {"host": "from-a", "port": 3, "tls": "none"}
    assert list(data["c"]) == ["host", "port", "tls"]  # merged keys first, as PyYAML orders
    assert (lines.of("c.host"), lines.of("c.tls"), lines.of("c.port")) == (1, 2, 5)


def test_a_mistake_in_a_merged_value_names_the_line_it_was_written_on() -> None:
    text = SHARED.replace("    port: 587\n", "    port: abc\n").replace("      port: 25\n", "")
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert str(caught.value) == (
        "line 5: targets[0].smtp.port: expected an integer, got a string ('abc')"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: {<<: x}\n",
            "line 1: invalid YAML: expected a mapping or list of mappings for merging",
        ),
        ("a: {<<: [{b: 1}, x]}\n", "line 1: invalid YAML: expected a mapping for merging"),
        ("a:\n  <<: [{b: 1},\n    [c]]\n", "line 3: invalid YAML: expected a mapping for merging"),
    ],
)
def test_only_mappings_can_be_merged(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        parse_document(text)


@pytest.mark.parametrize("tagged", ["!!bool", "!!int", "!!float", "!!timestamp"])
def test_a_value_not_of_its_tag_is_refused_without_quoting_it(tagged: str) -> None:
    """``!!bool`` and ``!!timestamp`` on other text failed with a KeyError or AttributeError
    (a traceback quoting the value), ``!!int`` and ``!!float`` quoted it."""
    text = (
        f"targets:\n  - name: a\n    imap: {{host: h, username: u, password: {tagged} Pw-12345}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert str(caught.value).startswith("line 3: targets[0].imap.password: cannot read this value")
    assert "pw-12345" not in str(caught.value).lower()


# --- lines --------------------------------------------------------------------------------------


def test_every_mistake_names_its_key_path_line_and_suggestion() -> None:
    text = (
        "targets:\n"
        "  - name: a\n"
        f"    imap: {SERVER}\n"
        "  - name: b\n"
        "    imap:\n"
        "      host: h\n"
        "      username: u@example.org\n"
        "      pasword: p\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert str(caught.value).startswith(
        "line 8: targets[1].imap.pasword: unknown key (did you mean 'password'?)"
    )


def test_lines_of_keys_items_and_what_is_missing() -> None:
    text = "a:\n  b: [x,\n    {c: 1}]\n  'd.e': 2\nf: {}\n"
    _, lines = parse_document(text)
    assert lines.of("a") == 1
    assert lines.of("a.b") == 2
    assert lines.of("a.b[0]") == 2
    assert lines.of("a.b[1].c") == 3
    assert lines.of("a.b[1].missing") == 3
    assert lines.of("a.b[7]") == 2
    assert lines.of("a.d.e") == 4  # a key holding a dot
    assert lines.of("f.g") == 5
    assert lines.of("nothing") is None
    assert lines.of("") is None


def test_an_error_inside_a_shared_block_names_the_block() -> None:
    text = (
        "defaults:\n"
        "  labels: &block\n"
        "    team: mail\n"
        "    __bad: x\n"
        "targets:\n"
        f"  - {{name: a, imap: {SERVER}, labels: *block}}\n"
    )
    with pytest.raises(ConfigError, match=r"^line 4: defaults\.labels\.__bad"):
        config.parse(text, environ={})


@pytest.mark.services  # seconds of CPU: not in the quick tier
def test_a_target_of_ten_thousand_still_names_its_own_line() -> None:
    text = full_config(10_000).replace(
        "port: 143, tls: none, username: u9876@", "port: x, tls: none, username: u9876@"
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, environ={})
    assert str(caught.value) == (
        f"line {1 + 9876 * 4 + 4}: targets[9876].imap.port: expected an integer, got a string ('x')"
    )


# --- bounds -------------------------------------------------------------------------------------


def _nested(levels: int, width: int, *, merge: bool) -> str:
    """``levels`` of mappings each naming the one before ``width`` times: ``width**levels``
    values, through aliases or (``merge``) through merge keys and aliases."""
    text = "l0: &l0 {" + ", ".join(f"k{i}: v" for i in range(width)) + "}\n"
    for level in range(1, levels + 1):
        items = ", ".join(f"k{i}: *l{level - 1}" for i in range(width))
        if merge:
            items = f"<<: *l{level - 1}, " + ", ".join(
                f"m{level}_{i}: *l{level - 1}" for i in range(width)
            )
        text += f"l{level}: &l{level} {{{items}}}\n"
    return text


@pytest.mark.parametrize("merge", [False, True])
def test_nested_mappings_of_aliases_are_refused_at_once(merge: bool) -> None:
    begin = time.process_time()
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_NODES:,} keys and values"):
        parse_document(_nested(9, 9, merge=merge))
    assert time.process_time() - begin < 1.0


def test_many_mappings_merging_one_large_block_are_refused_without_copying_it_each_time() -> None:
    """Each merge copies the merged keys: the count stops it long before the copies cost."""
    block = "base: &base {" + ", ".join(f"k{i}: {i}" for i in range(2_000)) + "}\n"
    text = block + "items:\n" + "  - {<<: *base}\n" * 5_000
    begin = time.process_time()
    with pytest.raises(ConfigError, match=r"expands to more than [\d,]+ keys and values"):
        parse_document(text)
    assert time.process_time() - begin < 2.0


def test_an_alias_to_the_mapping_it_is_in_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^line 2: the document nests deeper than 64 levels"):
        parse_document("a: &a\n  b: *a\n")


@pytest.mark.services  # seconds of CPU: not in the quick tier
def test_ten_thousand_targets_are_read_in_a_fraction_of_a_second() -> None:
    """The document of 10,000 targets (2.4 MB): PyYAML's nodes alone took 1.7 s."""
    text = full_config(10_000)
    begin = time.process_time()
    data, _ = parse_document(text)
    spent = time.process_time() - begin
    assert len(data["targets"]) == 10_000
    assert spent < 1.2, f"{spent:.2f}s of CPU"


# --- any document -------------------------------------------------------------------------------

MERGE = "tag:yaml.org,2002:merge"


def _reference(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """The document as PyYAML composes it, read with the merge-key spec: keys written win,
    then the first merged mapping; a key written twice fails."""
    if isinstance(node, yaml.MappingNode):
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise ValueError("not a mapping")
                    for key, value in _reference(source, loader).items():
                        merged.setdefault(key, value)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ValueError("not a scalar key")
            key = (
                "="
                if key_node.tag == "tag:yaml.org,2002:value"
                else loader.construct_object(key_node)
            )
            if not isinstance(key, str) or key in own:
                raise ValueError("not a string or twice")
            own[key] = _reference(value_node, loader)
        return {**merged, **own}
    if isinstance(node, yaml.SequenceNode):
        return [_reference(item, loader) for item in node.value]
    return loader.construct_object(node, deep=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _lines(node: yaml.Node, path: str, found: dict[str, int | None]) -> None:
    """The line of every key and item, as PyYAML's nodes give them (no aliases, no merges);
    None for a key path that two keys spell (``a.b`` beside ``a`` holding ``b``)."""
    steps: list[tuple[str, yaml.Node, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        steps = [
            (f"{path}.{key.value}" if path else key.value, key, value) for key, value in node.value
        ]
    elif isinstance(node, yaml.SequenceNode):
        steps = [(f"{path}[{index}]", item, item) for index, item in enumerate(node.value)]
    for child, where, value in steps:
        line = where.start_mark.line + 1
        found[child] = line if found.get(child, line) == line else None
        _lines(value, child, found)


SCALARS = st.sampled_from(
    ["a", "h", "25", "x.y", "'q'", "~"] * 4
    + [
        *("-3", "0o17", "017", "0x1F", "1_000", "1.5", ".inf", ".nan", "yes", "No", "null"),
        *("''", '"x\\ty"', "2001-12-01", "2001-12-01 10:00:00", "2001-13-01", "=", "!!str 5"),
        *("!!int '7'", "!!binary aGk=", "!foo x", "<<", "'<<'", "!!bool S3cr3t-b"),
        *("!!int S3cr3t-i", "!!float S3cr3t-f", "!!timestamp S3cr3t-t", "S3cr3t-plain"),
    ]
)
"""Scalars: the plain ones often, YAML 1.1's types and tags and mistakes at times."""
KEYS = st.sampled_from(
    ["a", "b", "c", "d", "host", "port", "tls", "user"] * 4
    + ["a.b", "1", "<<", "'<<'", "=", "? [x]", "!!str 1"]
)
"""Keys: names often, a key that is not a string or spells a merge at times."""


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A document of flow mappings and lists on several lines, with anchors, aliases (to
    anchors defined before them) and merge keys (of one mapping or a list of them)."""
    anchors: list[str] = []
    mappings: list[str] = []

    def node(depth: int) -> str:
        choice = draw(st.integers(0, 9)) if depth else draw(st.sampled_from([0, 5, 6, 7, 8]))
        if anchors and choice <= 1:
            return "*" + draw(st.sampled_from(anchors))
        name = f"n{len(anchors)}-{draw(st.integers(0, 10**6))}" if draw(st.booleans()) else ""
        if depth >= 3 or choice <= 4:
            text = draw(SCALARS)
        elif choice <= 7:
            defined = list(mappings)
            keys = draw(st.lists(KEYS, max_size=4, unique=True))
            pairs = [f"{key}: {node(depth + 1)}" for key in keys]
            if defined and draw(st.booleans()):
                merged = draw(st.lists(st.sampled_from(defined), min_size=1, max_size=3))
                named = ", ".join(f"*{m}" for m in merged)
                pairs.insert(
                    draw(st.integers(0, len(pairs))),
                    f"<<: {named}" if len(merged) == 1 else f"<<: [{named}]",
                )
            text = "{" + ",\n  ".join(pairs) + "}"
        else:
            text = "[" + ", ".join(node(depth + 1) for _ in range(draw(st.integers(0, 4)))) + "]"
        if not name or text.startswith(("!", "&")):
            return text
        anchors.append(name)
        if text.startswith("{"):
            mappings.append(name)
        return f"&{name} {text}"

    return "".join(
        f"{key}: {node(0)}\n" for key in draw(st.lists(KEYS, min_size=1, max_size=5, unique=True))
    )


@settings(derandomize=True, max_examples=300, deadline=None)
@given(documents())
def test_any_document_reads_as_pyyaml_with_the_merge_key_spec(text: str) -> None:
    """Whatever anchors, aliases, merges, tags and YAML 1.1 scalars it holds: the same data as
    PyYAML's safe loader's nodes read with the merge-key spec, or a ConfigError that quotes no
    value when they cannot be read; and where no alias or merge is involved, each key's
    line."""
    loader = yaml.SafeLoader(text)
    try:
        expected: Any = _reference(loader.get_single_node(), loader)
    except (yaml.YAMLError, ValueError, OverflowError, KeyError, AttributeError):
        expected = None
    finally:
        loader.dispose()
    try:
        data, lines = parse_document(text)
    except ConfigError as exc:
        assert expected is None, (str(exc), expected)
        assert "s3cr3t" not in str(exc).lower(), str(exc)
        return
    assert _same(data, expected), (data, expected)
    if "*" not in text and "<<" not in text:
        found: dict[str, int | None] = {}
        _lines(yaml.compose(text, Loader=yaml.SafeLoader), "", found)
        for path, line in found.items():
            assert line is None or lines.of(path) == line, (path, line, lines.of(path))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.text(max_size=200) | documents().map(lambda t: t.replace("{", "\n ").replace("}", "")))
def test_any_text_is_data_or_a_mistake_with_its_line(text: str) -> None:
    try:
        _, lines = parse_document(text)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(lines, Lines)

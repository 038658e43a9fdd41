"""Reading the YAML document with the line of every key, within bounds.

The document is built straight from the parser's events (libyaml's where PyYAML has it) into
plain dicts, lists and scalars: building PyYAML's node objects first took longer than all the
rest of reading ten thousand targets. What the values mean is PyYAML's safe loader's (YAML
1.1: ``yes`` is true, ``017`` is octal, ``2024-01-01`` is a date); only merge
keys follow the YAML merge-key spec where PyYAML does not (see :data:`MERGE`).

A document that is not small is no threat; a few lines of nested aliases that expand into
millions of values (an alias bomb) are. An alias is not copied: it names the value built for
its anchor, so expanding costs nothing until the values are read, and the document is refused
with the limit it broke and its line when what its aliases add (counted as the values are
built) passes :data:`MAX_NODES`, or :data:`MAX_EXPANSION` per node written in a larger one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from exporter.config.model import ConfigError

MAX_BYTES: Final = 64 * 1024 * 1024
"""Largest configuration file accepted, against absurd files only: 50,000 targets written out
in full take about 12 MiB. The size of what someone wrote is no threat; its growth is."""
MAX_DEPTH: Final = 64
"""Deepest nesting of mappings and lists: a configuration needs a handful of levels."""
MAX_NODES: Final = 100_000
"""Most keys, items and values aliases may add to a document beyond those written in it, or
:data:`MAX_EXPANSION` times as many as are written, in a larger document. A few lines of
nested aliases (an alias bomb) that would expand into millions are stopped at once, and a
large one costs at most a bounded multiple of its own size; honest size costs nothing."""
MAX_EXPANSION: Final = 16
"""Nodes aliases may add per node written: a target naming a shared block of a dozen options
for each of two servers adds about five."""
MERGE: Final = "tag:yaml.org,2002:merge"
"""A merge key (``<<: *base``). As the merge-key spec says, a key written in the mapping
overrides a merged one, and of several merged mappings the first listed wins; a key written
twice in the same mapping is still refused."""
RESOLVED: Final = 4096
"""Distinct plain scalars whose tag is remembered while one document is read: a large
configuration repeats the same keys and values thousands of times, and resolving one runs
regular expressions."""
SHOWN_KEY: Final = 40
"""Characters of a key that is not a string shown in the error."""

_BASE: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it: several times faster than the pure-Python
one. Both give the same events and marks."""
_STR: Final = "tag:yaml.org,2002:str"
_VALUE: Final = "tag:yaml.org,2002:value"
"""A ``=`` key: PyYAML's loader reads it as the string ``=``."""
_IMPLICIT: Final[dict[str | None, list[tuple[str, re.Pattern[str]]]]] = dict(
    yaml.SafeLoader.yaml_implicit_resolvers
)
"""The safe loader's tags of plain scalars, by first character (its ``resolve``)."""
_WILDCARD: Final = _IMPLICIT.get(None, [])
_INDEX = re.compile(r"\[(\d+)\]")
_NO_KEY: Final = object()
"""A mapping's frame waiting for its next key."""
_MERGING: Final = object()
"""A mapping's frame whose next value is merged (its key was ``<<``)."""


def _resolve(value: str) -> str:
    """The tag of a plain scalar, as the safe loader's resolver gives it."""
    for tag, pattern in _IMPLICIT.get(value[:1], []) + _WILDCARD:
        if pattern.match(value):
            return tag
    return _STR


class Lines:
    """Where each key and list item of the document was written, looked up by key path only
    when an error names one. Mappings and lists are known by identity: an alias names the same
    value as its anchor, and so the lines where the anchor's keys were written."""

    def __init__(self) -> None:
        self.root: Any = None
        self.keys: dict[int, tuple[dict[Any, Any], dict[str, int]]] = {}
        """The line of each key of each mapping built (holding the mapping, so that its
        identity is not reused)."""
        self.items: dict[int, tuple[list[Any], list[int]]] = {}
        """The line of each item of each list built."""

    def of(self, path: str) -> int | None:
        """The line of ``path`` (a key path such as ``targets[3].smtp.port``), or of the
        nearest key or item above it that the document has; None when not even its first key
        is there."""
        value, line, rest, top = self.root, None, path, True
        while rest:
            step = self._step(value, rest, top)
            if step is None:
                break
            value, line, rest = step
            top = False
        return line

    def _step(self, value: Any, rest: str, top: bool) -> tuple[Any, int, str] | None:
        """One key or index down from ``value`` along ``rest``; the longest key that fits,
        since a key may itself hold a dot."""
        if isinstance(value, list):
            match = _INDEX.match(rest)
            known = self.items.get(id(value))
            if match is None or known is None or int(match[1]) >= len(value):
                return None
            index = int(match[1])
            return value[index], known[1][index], rest[match.end() :]
        known_keys = self.keys.get(id(value)) if isinstance(value, dict) else None
        if known_keys is None:
            return None
        if not top:
            if not rest.startswith("."):
                return None
            rest = rest[1:]
        best: str | None = None
        for key in known_keys[1]:
            if (
                rest.startswith(key)
                and rest[len(key) : len(key) + 1] in ("", ".", "[")
                and (best is None or len(key) > len(best))
            ):
                best = key
        if best is None:
            return None
        return value[best], known_keys[1][best], rest[len(best) :]


class _Anchor:
    """What an anchor names: a scalar's tag and text, or a built mapping or list with the
    values it stands for (itself included) and how deep it nests."""

    __slots__ = ("height", "kind", "line", "mark", "size", "tag", "text", "value")

    def __init__(self, kind: str, line: int, mark: Any) -> None:
        self.kind = kind
        """``scalar``, ``mapping`` or ``sequence``, as PyYAML names its nodes."""
        self.line = line
        self.mark = mark
        self.tag = _STR
        self.text = ""
        self.value: Any = None
        self.size = -1
        """Values the anchor stands for; -1 while it is still being read (an alias to it
        then would nest for ever)."""
        self.height = 0


class _Frame:
    """A mapping or list being read."""

    __slots__ = (
        "anchor",
        "deepest",
        "key",
        "key_line",
        "line",
        "lines",
        "mapping",
        "merged",
        "value",
        "visits",
    )

    def __init__(self, mapping: bool, line: int, anchor: _Anchor | None) -> None:
        self.mapping = mapping
        self.line = line
        self.value: Any = {} if mapping else []
        self.lines: Any = {} if mapping else []
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.merged: list[tuple[list[dict[Any, Any]], int]] = []
        self.anchor = anchor
        self.visits = 0
        self.deepest = 0


class _Builder:
    """The document's events turned into plain data, counting what aliases add."""

    def __init__(self, loader: yaml.SafeLoader, text_size: int, lines: Lines) -> None:
        self.loader = loader
        self.next_event: Callable[[], Any] = loader.get_event
        self.lines = lines
        self.written = 0
        """Nodes the document writes (keys, values and items; not aliases)."""
        self.visits = 0
        """Values as read through every alias: those written plus what aliases add."""
        self.deepest = 0
        """The deepest level a value was placed at, below the anchor being read."""
        self.anchors: dict[str, _Anchor] = {}
        self.stack: list[_Frame] = []
        self.resolved: dict[str, str] = {}
        self.constructed: dict[tuple[str, str], Any] = {}
        self.jumps: list[tuple[int, int, _Anchor]] = []
        """Each alias read as a value: the values counted before it, what it added, and the
        value it names (to find where the limit was passed)."""
        bound = 2 * text_size + 2
        self.early = bound + max(MAX_NODES, MAX_EXPANSION * bound)
        """Visits past which the document is refused whatever the rest of it writes: no node
        is written in less than half a character."""

    # -- the events --------------------------------------------------------------------------

    def build(self) -> Any:
        """The first document's data ({} for none); :class:`ConfigError` at a mistake."""
        get = self.next_event
        get()  # the stream's start
        event = get()
        if isinstance(event, StreamEndEvent):
            return {}
        root: Any = None
        stack = self.stack
        lines = self.lines
        resolved = self.resolved
        anchors = self.anchors
        while True:
            event = get()
            kind = type(event)
            if kind is ScalarEvent:
                self.written += 1
                tag = event.tag
                text = event.value
                if tag is None or tag == "!":
                    if event.implicit[0]:
                        tag = resolved.get(text)
                        if tag is None:
                            tag = _resolve(text)
                            if len(resolved) < RESOLVED:
                                resolved[text] = tag
                    else:
                        tag = _STR
                line = event.start_mark.line + 1
                if event.anchor is not None:
                    anchor = self.anchor(event)
                    anchor.tag, anchor.text, anchor.size = tag, text, 1
                if stack:
                    top = stack[-1]
                    if top.mapping and top.key is _NO_KEY:
                        if tag == _STR and text not in top.value:
                            top.key, top.key_line = text, line  # the common key, at once
                        else:
                            self.key(top, tag, text, line, event.start_mark)
                        continue
                    if len(stack) > MAX_DEPTH:
                        raise self.too_deep(line)
                    self.visits += 1
                    value = text if tag == _STR else self.construct(tag, text, event.start_mark)
                    if event.anchor is not None:
                        anchor.value = value
                    if not top.mapping:
                        top.value.append(value)
                        top.lines.append(line)
                    elif top.key is _MERGING:
                        self.place(top, value, line)
                    else:
                        key = top.key
                        top.value[key] = value
                        top.lines[key] = top.key_line
                        top.key = _NO_KEY
                    continue
                self.visits += 1
                root = text if tag == _STR else self.construct(tag, text, event.start_mark)
                continue
            if kind is MappingStartEvent or kind is SequenceStartEvent:
                self.written += 1
                line = event.start_mark.line + 1
                if stack:
                    top = stack[-1]
                    if top.mapping and top.key is _NO_KEY:
                        what = "mapping" if kind is MappingStartEvent else "sequence"
                        raise ConfigError(self.path(), f"keys must be strings, got a {what}", line)
                    if len(stack) > MAX_DEPTH:
                        raise self.too_deep(line)
                self.visits += 1
                frame = _Frame(kind is MappingStartEvent, line, None)
                if event.anchor is not None:
                    frame.anchor = self.anchor(event)
                    frame.visits, frame.deepest = self.visits - 1, self.deepest
                    self.deepest = len(stack)
                stack.append(frame)
                continue
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                if frame.mapping:
                    value = self.merge(frame) if frame.merged else frame.value
                    lines.keys[id(value)] = (value, frame.lines)
                else:
                    value = frame.value
                    lines.items[id(value)] = (value, frame.lines)
                if value and len(stack) + 1 > self.deepest:
                    self.deepest = len(stack) + 1
                if frame.anchor is not None:
                    anchor = frame.anchor
                    anchor.value = value
                    anchor.size = self.visits - frame.visits
                    anchor.height = self.deepest - len(stack)
                    self.deepest = max(self.deepest, frame.deepest)
                if stack:
                    self.place(stack[-1], value, frame.line)
                else:
                    root = value
                continue
            if kind is AliasEvent:
                name = event.anchor
                line = event.start_mark.line + 1
                found = anchors.get(name)
                if found is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {name!r}", event.start_mark
                    )
                if stack and stack[-1].mapping and stack[-1].key is _NO_KEY:
                    if found.kind != "scalar":
                        raise ConfigError(
                            self.path(), f"keys must be strings, got a {found.kind}", line
                        )
                    self.key(stack[-1], found.tag, found.text, line, event.start_mark)
                    continue
                if found.size < 0:
                    raise self.too_deep(line)
                depth = len(stack)
                if depth + found.height > MAX_DEPTH:
                    raise self.too_deep(line)
                if depth + found.height > self.deepest:
                    self.deepest = depth + found.height
                self.jumps.append((self.visits, found.size, found))
                self.visits += found.size
                if self.visits > self.early:
                    raise _Expanded
                value = found.value
                if found.kind == "scalar":
                    value = (
                        found.text
                        if found.tag == _STR
                        else self.construct(found.tag, found.text, event.start_mark)
                    )
                if stack:
                    self.place(stack[-1], value, line)
                else:
                    root = value
                continue
            if kind is DocumentStartEvent:
                continue
            break  # the document's end
        lines.root = root
        self.single()
        self.check_expansion()
        return root

    def key(self, top: _Frame, tag: str, text: str, line: int, mark: Any) -> None:
        """The next key of the mapping being read."""
        if tag == MERGE:
            top.key, top.key_line = _MERGING, line
            return
        if tag in (_STR, _VALUE):
            key: Any = text
        else:
            key = self.construct(tag, text, mark)
            if not isinstance(key, str):
                raise ConfigError(
                    self.path(), f"keys must be strings, got {repr(key)[:SHOWN_KEY]}", line
                )
        if key in top.value:
            top.key = key
            raise ConfigError(self.path(), "duplicate key", line)
        top.key, top.key_line = key, line

    def place(self, top: _Frame, value: Any, line: int) -> None:
        """A value read into the mapping or list being read."""
        if not top.mapping:
            top.value.append(value)
            top.lines.append(line)
            return
        key = top.key
        top.key = _NO_KEY
        if key is _MERGING:
            top.merged.append((self.mergeable(value, line), line))
            return
        top.value[key] = value
        top.lines[key] = top.key_line

    def mergeable(self, value: Any, line: int) -> list[dict[Any, Any]]:
        """The mappings a merge key's value names, in the order they take precedence."""
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(
                "",
                "invalid YAML: expected a mapping or list of mappings for merging, but found "
                "scalar",
                line,
            )
        item_lines = self.lines.items[id(value)][1]
        for item, item_line in zip(value, item_lines, strict=True):
            if not isinstance(item, dict):
                raise ConfigError(
                    "",
                    f"invalid YAML: expected a mapping for merging, but found {_node_kind(item)}",
                    item_line,
                )
        return value

    def merge(self, frame: _Frame) -> dict[Any, Any]:
        """A mapping with merge keys: its own keys over the merged ones, the first merged
        mapping over later ones (the merge-key spec)."""
        sources = [source for merged, _ in frame.merged for source in merged]
        result: dict[Any, Any] = {}
        key_lines: dict[str, int] = {}
        for source in sources:
            source_lines = self.lines.keys[id(source)][1]
            for key, value in source.items():
                if key not in result:
                    result[key] = value
                    key_lines[key] = source_lines[key]
        result.update(frame.value)
        key_lines.update(frame.lines)
        frame.lines = key_lines
        return result

    def construct(self, tag: str, text: str, mark: Any) -> Any:
        """A scalar of another tag than string, by the safe loader's constructor; a value
        that is not of its tag (``!!bool maybe``) or that Python cannot hold (a date such as
        2024-13-01, an integer of thousands of digits) is refused without quoting it: it may
        be a mistyped secret."""
        known = (tag, text)
        if known in self.constructed:
            return self.constructed[known]
        node = yaml.ScalarNode(tag, text, mark, mark)
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError, KeyError, AttributeError, TypeError) as exc:
            # Python's own messages quote the text they could not read; those are not shown.
            reason = str(exc)
            if not isinstance(exc, ValueError | OverflowError) or "'" in reason or text in reason:
                reason = f"not a valid {tag.rsplit(':', 1)[-1]}"
            raise ConfigError(
                self.path(), f"cannot read this value ({reason})", mark.line + 1
            ) from None
        except yaml.MarkedYAMLError as exc:
            # A tag with no constructor: a mistake in the document like a syntax error, but
            # one the parser's own mistakes further on come before.
            raise _invalid(exc) from None
        if len(self.constructed) < RESOLVED:
            self.constructed[known] = value
        return value

    def anchor(self, event: Any) -> _Anchor:
        name = event.anchor
        if name in self.anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {name!r}; first occurrence",
                self.anchors[name].mark,
                "second occurrence",
                event.start_mark,
            )
        kind = type(event)
        what = (
            "scalar"
            if kind is ScalarEvent
            else ("mapping" if kind is MappingStartEvent else "sequence")
        )
        anchor = _Anchor(what, event.start_mark.line + 1, event.start_mark)
        self.anchors[name] = anchor
        return anchor

    # -- mistakes ----------------------------------------------------------------------------

    def path(self) -> str:
        """The key path of the value being read, from the mappings and lists open."""
        path = ""
        for frame in self.stack:
            if frame.mapping:
                if frame.key is _MERGING:
                    continue  # a merged value is read under the mapping it is merged into
                if frame.key is _NO_KEY:
                    break
                path = f"{path}.{frame.key}" if path else str(frame.key)
            else:
                path = f"{path}[{len(frame.value)}]"
        return path

    def too_deep(self, line: int) -> ConfigError:
        return ConfigError("", f"the document nests deeper than {MAX_DEPTH} levels", line)

    def single(self) -> None:
        """The rest of the stream: nothing but its end (PyYAML's single document)."""
        event = self.next_event()
        if not isinstance(event, StreamEndEvent):
            raise _another_document(event)

    def drain(self) -> None:
        """Read the rest of the stream after a mistake: the parser's own mistakes come first,
        as when the whole document was parsed before it was read, and the nodes written are
        all counted."""
        get = self.next_event
        while True:
            event = get()
            kind = type(event)
            if kind is ScalarEvent or kind is MappingStartEvent or kind is SequenceStartEvent:
                self.written += 1
                if event.anchor is not None:
                    self.anchor(event)
            elif kind is AliasEvent:
                if event.anchor not in self.anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                    )
            elif kind is DocumentStartEvent:
                raise _another_document(event)
            elif event is None or kind is StreamEndEvent:
                return

    def check_expansion(self, *, over: bool = False) -> None:
        """Refuse the document if its aliases add more than the limit (or, ``over``, since
        they added more than any document of its size may), naming the line of the value at
        which the count passed the limit."""
        allowed = max(MAX_NODES, MAX_EXPANSION * self.written)
        limit = self.written + allowed
        if self.visits <= limit and not over:
            return
        line = None
        for before, added, anchor in self.jumps:
            if before + added > limit:
                line = _line_at(anchor, limit - before, self.lines, self.anchors.values())
                break
        raise ConfigError(
            "",
            f"the document expands to more than {allowed:,} keys and values beyond those "
            "written (aliases nested too deep?)",
            line,
        )


def _invalid(exc: yaml.MarkedYAMLError) -> ConfigError:
    """The parser's or constructor's mistake, with its line."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    problem = exc.problem or exc.context or "invalid YAML"
    return ConfigError("", f"invalid YAML: {problem}", line)


def _another_document(event: Any) -> yaml.YAMLError:
    return yaml.composer.ComposerError(
        "expected a single document in the stream",
        None,
        "but found another document",
        event.start_mark,
    )


class _Expanded(Exception):
    """Aliases added more than any document of this size may: counted to its end, then
    refused."""


def _node_kind(value: Any) -> str:
    return (
        "mapping"
        if isinstance(value, dict)
        else ("sequence" if isinstance(value, list) else "scalar")
    )


def _line_at(anchor: _Anchor, remaining: int, lines: Lines, anchors: Iterable[_Anchor]) -> int:
    """The line of the value that is the ``remaining``-th read through ``anchor`` (counting
    the anchor itself first, then its values in order): where an anchored value was written,
    the line it was written on."""
    sizes: dict[int, int] = {}
    written = {
        id(known.value): known.line for known in anchors if isinstance(known.value, dict | list)
    }

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        known = sizes.get(id(value))
        if known is None:
            children = value.values() if isinstance(value, dict) else value
            known = 1 + sum(size(child) for child in children)
            sizes[id(value)] = known
        return known

    value, line = anchor.value, anchor.line
    while remaining > 1 and isinstance(value, dict | list):
        remaining -= 1
        if isinstance(value, dict):
            key_lines = lines.keys[id(value)][1]
            children = [(child, key_lines[key]) for key, child in value.items()]
        else:
            children = list(zip(value, lines.items[id(value)][1], strict=True))
        for child, child_line in children:
            count = size(child)
            if remaining <= count:
                value, line = child, written.get(id(child), child_line)
                break
            remaining -= count
        else:
            break
    return line


def parse_document(text: str) -> tuple[Any, Lines]:
    """The document as plain data, and the line of every key; :class:`ConfigError` if it is
    not YAML or breaks a limit."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        raise ConfigError("", f"the file is larger than {MAX_BYTES:,} bytes")
    lines = Lines()
    try:
        loader = _BASE(text.encode("utf-8"))
        builder = _Builder(loader, size, lines)
        try:
            try:
                data = builder.build()
            except _Expanded:
                builder.drain()
                builder.check_expansion(over=True)
            except ConfigError:
                builder.drain()
                raise
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise _invalid(exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError("", f"the document nests deeper than {MAX_DEPTH} levels") from None
    except UnicodeEncodeError as exc:
        raise ConfigError(
            "", f"invalid YAML: a character that is not Unicode ({exc.reason})"
        ) from None
    return data, lines

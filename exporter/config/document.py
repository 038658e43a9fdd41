"""Reading the YAML document with the line of every key, within bounds.

A configuration is small. A file that is not (a huge file, or a few lines of nested aliases
that expand into millions of nodes) is refused with the limit it broke and its line, before it
can hold up ``--config.check`` or a reload.
"""

from __future__ import annotations

import re
from typing import Any, Final

import yaml

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


class Lines:
    """Line numbers of the keys and items of the parsed document, by key path."""

    def __init__(self) -> None:
        self.by_path: dict[str, int] = {}

    def of(self, path: str) -> int | None:
        """The line of ``path``, or of the nearest key above it that the document has."""
        while path:
            if path in self.by_path:
                return self.by_path[path]
            parent = _LAST_STEP.sub("", path)
            if parent == path:
                return None
            path = parent
        return None


_BASE: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it: several times faster than the pure-Python
one, which takes many seconds for ten thousand targets. Both build the same nodes and marks."""
RESOLVED: Final = 4096
"""Distinct scalars whose tag is remembered while one document is read."""


class _Loader(_BASE):  # type: ignore[valid-type,misc]
    """The safe loader, remembering the tag of each scalar text it has resolved: a large
    configuration repeats the same keys and values thousands of times, and resolving runs
    regular expressions in Python for every one."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.resolved: dict[tuple[Any, Any], str] = {}
        self.written = 0
        """Nodes the document writes: each is resolved once, when it is built; an alias is
        not built again."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> Any:
        self.written += 1
        if kind is not yaml.ScalarNode or not isinstance(value, str):
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self.resolved.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self.resolved) < RESOLVED:
                self.resolved[key] = tag
        return tag


_FLATTENED: Final = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})
"""Keys the constructor rewrites (a merge, `=`): only mappings with one are flattened."""
_STR: Final = "tag:yaml.org,2002:str"
"""A string scalar's value is its text: the constructor is skipped for the common case."""
_LAST_STEP = re.compile(r"(\.[^.\[]*|\[\d+\])\Z")
"""The last key or index of a key path."""
SHOWN_KEY: Final = 40
"""Characters of a key that is not a string shown in the error."""


class _Walk:
    """The document's nodes turned into plain data, counting every node visited."""

    def __init__(self, loader: _Loader, lines: Lines) -> None:
        self.loader = loader
        self.lines = lines
        self.visits = 0
        """Nodes visited: those written, plus those visited again through an alias."""
        self.allowed = MAX_NODES
        """Nodes aliases may add: settled once the document has been counted."""
        self.limit = MAX_NODES
        """Visits at which to stop: nodes written plus :attr:`allowed`, once more than
        :data:`MAX_NODES` have been visited (no document smaller is a threat)."""
        self.counted = False

    def value(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        self.visits += 1
        if depth > MAX_DEPTH:
            raise ConfigError(
                "", f"the document nests deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            )
        if self.visits > self.limit and not self.counted:
            written = self.loader.written
            self.allowed = max(MAX_NODES, MAX_EXPANSION * written)
            self.limit, self.counted = written + self.allowed, True
        if self.visits > self.limit:
            raise ConfigError(
                "",
                f"the document expands to more than {self.allowed:,} keys and values beyond "
                "those written (aliases nested too deep?)",
                node.start_mark.line + 1,
            )
        self.lines.by_path.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            if any(key.tag in _FLATTENED for key, _ in node.value):
                self.loader.flatten_mapping(node)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    # A list or mapping key is not built: with aliases it can stand for millions
                    # of values, and its repr would spell every one of them out.
                    raise ConfigError(
                        path,
                        f"keys must be strings, got a {key_node.id}",
                        key_node.start_mark.line + 1,
                    )
                key = self.scalar(key_node, path)
                if not isinstance(key, str):
                    raise ConfigError(
                        path,
                        f"keys must be strings, got {repr(key)[:SHOWN_KEY]}",
                        key_node.start_mark.line + 1,
                    )
                child = f"{path}.{key}" if path else key
                if key in result:
                    raise ConfigError(child, "duplicate key", key_node.start_mark.line + 1)
                self.lines.by_path[child] = key_node.start_mark.line + 1
                result[key] = self.value(value_node, child, depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [
                self.value(item, f"{path}[{index}]", depth + 1)
                for index, item in enumerate(node.value)
            ]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: str) -> Any:
        """A scalar's value; :class:`ConfigError` for one YAML resolves to a value Python
        cannot hold (a date such as 2024-13-01, an integer of thousands of digits). The value
        is not quoted: it may be a mistyped secret."""
        if node.tag == _STR:
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:
            raise ConfigError(
                path, f"cannot read this value ({exc})", node.start_mark.line + 1
            ) from None


def parse_document(text: str) -> tuple[Any, Lines]:
    """The document as plain data, and the line of every key; :class:`ConfigError` if it is
    not YAML or breaks a limit."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ConfigError("", f"the file is larger than {MAX_BYTES:,} bytes")
    lines = Lines()
    try:
        loader = _Loader(text.encode("utf-8"))
        try:
            node = loader.get_single_node()
            data = {} if node is None else _Walk(loader, lines).value(node, "")
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError("", f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError("", f"the document nests deeper than {MAX_DEPTH} levels") from None
    except UnicodeEncodeError as exc:
        raise ConfigError(
            "", f"invalid YAML: a character that is not Unicode ({exc.reason})"
        ) from None
    return data, lines

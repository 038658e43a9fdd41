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

MAX_BYTES: Final = 1024 * 1024
"""Largest configuration file accepted: thousands of targets fit in far less."""
MAX_DEPTH: Final = 64
"""Deepest nesting of mappings and lists: a configuration needs a handful of levels."""
MAX_NODES: Final = 100_000
"""Most keys, items and values the document may expand to once aliases are followed: a
thousand targets with every option set stay under half of it."""


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


_LAST_STEP = re.compile(r"(\.[^.\[]*|\[\d+\])\Z")
"""The last key or index of a key path."""
SHOWN_KEY: Final = 40
"""Characters of a key that is not a string shown in the error."""


class _Walk:
    """The document's nodes turned into plain data, counting every node visited."""

    def __init__(self, loader: yaml.SafeLoader, lines: Lines) -> None:
        self.loader = loader
        self.lines = lines
        self.nodes = 0

    def value(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise ConfigError(
                "", f"the document nests deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            )
        if self.nodes > MAX_NODES:
            raise ConfigError(
                "",
                f"the document expands to more than {MAX_NODES:,} keys and values "
                "(aliases nested too deep?)",
                node.start_mark.line + 1,
            )
        self.lines.by_path.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
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
        loader = yaml.SafeLoader(text)
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
    return data, lines

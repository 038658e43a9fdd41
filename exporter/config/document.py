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
        while path:
            if path in self.by_path:
                return self.by_path[path]
            path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
        return None


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
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(
                        path, f"keys must be strings, got {key!r}", key_node.start_mark.line + 1
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
        return self.loader.construct_object(node, deep=True)


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

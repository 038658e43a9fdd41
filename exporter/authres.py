"""Authentication verdicts of a received probe, read from ``Authentication-Results`` (RFC 8601).

Pure: no protocol code. The receiving server's border adds a field naming itself (the
authserv-id) with the verdict of each method it evaluated (``spf=pass``, ``dkim=fail``,
...). Anyone upstream can write such a field too, so only fields carrying the configured
authserv-id count, and of those the topmost verdict of each method: a server prepends its
fields, so what it wrote sits above anything the message arrived with. A forged field with
the trusted id below the real one therefore never changes a verdict the server reported.
A forged field can still add a method the server did not evaluate: RFC 8601 section 5 has
the border remove or rename fields with its own id, and only a server that does so makes
those verdicts safe too.

Methods and results are closed sets, because they become label values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

METHODS: Final = ("spf", "dkim", "dmarc", "arc", "compauth")
"""Methods whose verdicts are kept; others (``iprev``, ``auth``, ``bimi``, ...) are left out."""
RESULTS: Final = (
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
    "policy",
    "other",
)
"""Result values as exported: RFC 8601's, with anything else (``softpass``, ``hardfail``,
a typo) as ``other``."""

_TOKEN = re.compile(r'[^\s()<>@,;:\\"/\[\]?=]+')
_METHOD = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_-]+)")


def _uncommented(text: str) -> str:
    """``text`` with comments (nested, with quoted pairs) blanked out; quoted strings kept."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            out.append(" ")
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _segments(text: str) -> list[str]:
    """Split at semicolons outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse(field: str) -> tuple[str, list[tuple[str, str]]]:
    """The authserv-id of one field's value and its ``(method, result)`` pairs, in order,
    lower-cased.

    The id is the first word (RFC 8601 section 2.2), or, in fields that begin with a result
    as Exchange Online writes them (``spf=pass ...; contoso.com; dkim=...``), the first
    segment that is a lone word. No id: ``""``.
    """
    segments = _segments(_uncommented(" ".join(field.split())))
    authserv_id = ""
    pairs: list[tuple[str, str]] = []
    for index, segment in enumerate(segments):
        match = _METHOD.match(segment)
        if match:
            pairs.append((match.group(1).lower(), match.group(2).lower()))
            continue
        words = segment.split()
        if index == 0 and words:
            authserv_id = _unquote(words[0])
        elif not authserv_id and len(words) == 1 and _TOKEN.fullmatch(words[0]):
            authserv_id = words[0]
    return authserv_id.lower().rstrip("."), pairs


def result_label(result: str) -> str:
    """A result as a label value: one of :data:`RESULTS`."""
    return result if result in RESULTS else "other"


def verdicts(fields: Iterable[str], authserv_id: str) -> dict[str, str]:
    """The verdict of each method in :data:`METHODS` that the server ``authserv_id`` reported.

    ``fields`` are the message's ``Authentication-Results`` values, topmost first. Each
    method's verdict comes from the topmost trusted field that reports it; where that field
    reports the method more than once (two DKIM signatures), ``pass`` wins if any passed,
    as DMARC counts it.
    """
    trusted = authserv_id.lower().rstrip(".")
    found: dict[str, str] = {}
    for field in fields:
        field_id, pairs = parse(field)
        if field_id != trusted:
            continue
        here: dict[str, str] = {}
        for method, result in pairs:
            if method not in METHODS or method in found:
                continue
            if method not in here or result == "pass":
                here[method] = result_label(result)
        found.update(here)
    return found

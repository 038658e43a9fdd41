"""A small, strict parser for the OData ``$filter`` / ``$orderby`` forms Graph accepts on messages.

Supported (anything else is refused the way Graph refuses it):

- ``PROP OP LITERAL`` with OP one of ``eq ne gt ge lt le`` on the properties in
  `FILTERABLE`; strings in single quotes (``''`` escapes a quote), date-times
  unquoted ISO 8601 (``2026-11-30T10:00:00Z``), booleans ``true``/``false``.
  Reference: "Use query parameters" ($filter operators) and the message resource
  (property types), https://learn.microsoft.com/graph/query-parameters and
  https://learn.microsoft.com/graph/api/resources/message
- ``startswith(PROP, 'text')`` on string properties.
- ``singleValueExtendedProperties/any(ep: ep/id eq 'String {GUID} Name N' and
  ep/value eq 'v')`` (also ``ne``, ``startswith(ep/value,'v')`` and
  ``contains(ep/value,'v')`` on the value).  Reference: "Get
  singleValueLegacyExtendedProperty",
  https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-get
  (the Name part is matched case-sensitively, the value case-insensitively).
- Clauses joined by ``and``; parentheses.

Refused with 400 ``ErrorInvalidUrlQueryFilter`` ("The query filter contains one
or more invalid nodes."): ``or``, ``not``, ``contains``/``endswith`` on message
properties, and lambdas over other collections (``toRecipients/any``,
``internetMessageHeaders/any``) -- practitioners report exactly these refusals
from Exchange Online; the Graph reference documents no filter on
``internetMessageHeaders``.  Unknown properties get 400
``RequestBroker--ParseUri`` ("Could not find a property named ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "FILTERABLE",
    "Clause",
    "ODataError",
    "check_orderby",
    "parse_filter",
    "parse_orderby",
]


class ODataError(Exception):
    """A query Graph would refuse: `code` and `message` go into the 400 error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


INVALID_NODES = ODataError(
    "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
)
# Reference: https://learn.microsoft.com/graph/api/user-list-messages
# ("Using filter and orderby in the same query")
INEFFICIENT = ODataError(
    "InefficientFilter", "The restriction or sort order is too complex for this operation."
)

#: filterable/sortable message properties and their kind
FILTERABLE: dict[str, str] = {
    "subject": "string",
    "internetMessageId": "string",
    "conversationId": "string",
    "parentFolderId": "string",
    "importance": "string",
    "inferenceClassification": "string",
    "from/emailAddress/address": "string",
    "sender/emailAddress/address": "string",
    "receivedDateTime": "datetime",
    "sentDateTime": "datetime",
    "createdDateTime": "datetime",
    "lastModifiedDateTime": "datetime",
    "isRead": "bool",
    "isDraft": "bool",
    "hasAttachments": "bool",
}
_CANONICAL = {name.lower(): name for name in FILTERABLE}
_EXTENDED = "singlevalueextendedproperties"
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}

Getter = Callable[[str], Any]  # property name -> value of one message
ExtendedGetter = Callable[[str], "str | None"]  # extended property id -> value


@dataclass(frozen=True)
class Clause:
    """One top-level restriction: the property it is on, and its test."""

    prop: str  # canonical property name, or "singleValueExtendedProperties"
    test: Callable[[Getter, ExtendedGetter], bool]


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<punct>[(),:])
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ODataError("BadRequest", f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote(token: str) -> str:
    return token[1:-1].replace("''", "'")


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None:
        return op == "ne"
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()  # Exchange compares strings case-insensitively
    match op:
        case "eq":
            return bool(left == right)
        case "ne":
            return bool(left != right)
        case "gt":
            return bool(left > right)
        case "ge":
            return bool(left >= right)
        case "lt":
            return bool(left < right)
        case "le":
            return bool(left <= right)
    raise INVALID_NODES


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise ODataError("BadRequest", "Unexpected end of $filter expression.")
        if (kind and token[0] != kind) or (value and token[1].lower() != value):
            raise ODataError("BadRequest", f"Unexpected token '{token[1]}' in $filter.")
        self.pos += 1
        return token[1]

    def at_word(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "ident" and token[1].lower() == word

    # expr := term (and term)*
    def expr(self) -> list[Clause]:
        clauses = self.term()
        while self.peek() is not None and self.peek() != ("punct", ")"):
            if self.at_word("or") or self.at_word("not"):
                raise INVALID_NODES
            self.take("ident", "and")
            clauses += self.term()
        return clauses

    def term(self) -> list[Clause]:
        token = self.peek()
        if token is None:
            raise ODataError("BadRequest", "Unexpected end of $filter expression.")
        if token == ("punct", "("):
            self.take()
            inner = self.expr()
            self.take("punct", ")")
            return inner
        if token[0] != "ident":
            raise ODataError("BadRequest", f"Unexpected token '{token[1]}' in $filter.")
        word = token[1].lower()
        if word == "not":
            raise INVALID_NODES
        if word in {"startswith", "contains", "endswith"}:
            return [self.function()]
        if word.endswith("/any") or word.endswith("/all"):
            return [self.lambda_()]
        return [self.comparison()]

    def prop(self) -> str:
        name = self.take("ident")
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            if name.lower().split("/")[0] in {
                "internetmessageheaders",
                "torecipients",
                "ccrecipients",
                "bccrecipients",
                "body",
            }:
                raise INVALID_NODES
            raise ODataError(
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type 'microsoft.graph.message'.",
            )
        return canonical

    def literal(self, kind: str) -> Any:
        token = self.peek()
        if token is None:
            raise ODataError("BadRequest", "Unexpected end of $filter expression.")
        self.pos += 1
        if kind == "string" and token[0] == "string":
            return _unquote(token[1])
        if kind == "datetime" and token[0] == "datetime":
            return _datetime(token[1])
        if kind == "bool" and token[0] == "ident" and token[1].lower() in {"true", "false"}:
            return token[1].lower() == "true"
        raise ODataError(
            "BadRequest",
            f"A binary operator with incompatible types was detected: '{token[1]}' is not a "
            f"valid {kind} literal.",
        )

    def comparison(self) -> Clause:
        prop = self.prop()
        op = self.take("ident").lower()
        if op not in _OPS:
            raise ODataError("BadRequest", f"Unknown operator '{op}' in $filter.")
        value = self.literal(FILTERABLE[prop])
        return Clause(prop, lambda get, _ext: _compare(op, get(prop), value))

    def function(self) -> Clause:
        name = self.take("ident").lower()
        if name != "startswith":
            raise INVALID_NODES
        self.take("punct", "(")
        prop = self.prop()
        if FILTERABLE[prop] != "string":
            raise INVALID_NODES
        self.take("punct", ",")
        prefix = _unquote(self.take("string")).lower()
        self.take("punct", ")")

        def test(get: Getter, _ext: ExtendedGetter) -> bool:
            value = get(prop)
            return isinstance(value, str) and value.lower().startswith(prefix)

        return Clause(prop, test)

    def lambda_(self) -> Clause:
        head = self.take("ident")
        collection, _, kind = head.rpartition("/")
        if collection.lower() != _EXTENDED or kind.lower() != "any":
            raise INVALID_NODES
        self.take("punct", "(")
        var = self.take("ident")
        self.take("punct", ":")
        if self.take("ident").lower() != f"{var}/id".lower():
            raise INVALID_NODES
        self.take("ident", "eq")
        prop_id = _unquote(self.take("string"))
        self.take("ident", "and")
        value_test = self.value_test(var)
        self.take("punct", ")")

        def test(_get: Getter, ext: ExtendedGetter) -> bool:
            value = ext(prop_id)
            return value is not None and value_test(value.lower())

        return Clause("singleValueExtendedProperties", test)

    def value_test(self, var: str) -> Callable[[str], bool]:
        token = self.peek()
        if (
            token is not None
            and token[0] == "ident"
            and token[1].lower()
            in {
                "startswith",
                "contains",
            }
        ):
            name = self.take().lower()
            self.take("punct", "(")
            if self.take("ident").lower() != f"{var}/value".lower():
                raise INVALID_NODES
            self.take("punct", ",")
            needle = _unquote(self.take("string")).lower()
            self.take("punct", ")")
            if name == "startswith":
                return lambda value: value.startswith(needle)
            return lambda value: needle in value
        if self.take("ident").lower() != f"{var}/value".lower():
            raise INVALID_NODES
        op = self.take("ident").lower()
        if op not in {"eq", "ne"}:
            raise INVALID_NODES
        expected = _unquote(self.take("string")).lower()
        return lambda value: (value == expected) == (op == "eq")


def parse_filter(text: str) -> list[Clause]:
    """Parse a ``$filter`` value into its top-level clauses (all must hold)."""
    parser = _Parser(text)
    clauses = parser.expr()
    if parser.peek() is not None:
        raise ODataError("BadRequest", f"Unexpected token '{parser.peek()}' in $filter.")
    return clauses


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """Parse ``$orderby`` into (canonical property, descending) pairs."""
    result: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise ODataError("BadRequest", f"Invalid $orderby expression '{text}'.")
        canonical = _CANONICAL.get(words[0].lower())
        if canonical is None:
            raise ODataError(
                "RequestBroker--ParseUri",
                f"Could not find a property named '{words[0]}' on type 'microsoft.graph.message'.",
            )
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in {"asc", "desc"}:
            raise ODataError("BadRequest", f"Invalid $orderby direction '{words[1]}'.")
        result.append((canonical, direction == "desc"))
    return result


def check_orderby(clauses: list[Clause], orderby: list[tuple[str, bool]]) -> None:
    """The three ordering rules of "List messages" for $filter with $orderby.

    Properties in $orderby must also be in $filter, in the same order, and come
    before any property that is not sorted on; otherwise ``InefficientFilter``.
    """
    if not clauses or not orderby:
        return
    filter_props: list[str] = []
    for clause in clauses:
        if clause.prop not in filter_props:
            filter_props.append(clause.prop)
    sorted_props = [prop for prop, _desc in orderby]
    if filter_props[: len(sorted_props)] != sorted_props:
        raise INEFFICIENT

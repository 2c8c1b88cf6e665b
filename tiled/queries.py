"""Search queries: small frozen dataclasses that travel over HTTP as strings.

Each query type is registered under an HTTP name (see :mod:`tiled.query_registration`); each of
its fields becomes one parameter ``filter[{name}][condition][{field}]``. Fields listed in a
class's ``_json_fields`` are JSON-encoded on the wire, the others are sent as plain text.
Sequence-valued fields are stored as tuples so that queries are hashable values.

This module must stay cheap to import: clients build queries without numpy or pandas.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from .errors import InvalidQuery
from .query_registration import register
from .structures.core import Spec, StructureFamily

__all__ = [
    "AccessBlobFilter",
    "AccessTagsFilter",
    "Comparison",
    "Contains",
    "Eq",
    "FullText",
    "In",
    "Key",
    "KeyLookup",
    "KeyPresent",
    "KeysFilter",
    "Like",
    "NotEq",
    "NotIn",
    "Operator",
    "Regex",
    "SpecQuery",
    "SpecsQuery",
    "StructureFamilyQuery",
]


class QueryBase:
    """Shared wire encoding and the refusal of truthiness."""

    _json_fields: ClassVar[frozenset[str]] = frozenset()
    # Booleans: sent as JSON, read as upstream's server reads them (see _parse_bool).
    _bool_fields: ClassVar[frozenset[str]] = frozenset()

    def encode(self) -> dict[str, str]:
        encoded = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            encoded[field.name] = (
                json.dumps(value) if field.name in self._json_fields else str(value)
            )
        return encoded

    @classmethod
    def decode(cls, **fields: str) -> Self:
        values = {name: cls._decode_field(name, text) for name, text in fields.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise InvalidQuery(f"Invalid {cls.__name__} query {fields}: {error}") from None

    @classmethod
    def _decode_field(cls, name: str, text: str) -> Any:
        if name in cls._bool_fields:
            return _parse_bool(name, text)
        if name in cls._json_fields:
            return _loads(name, text)
        return text

    def __bool__(self) -> bool:
        # `if Key("a") == 1:` would otherwise be silently true; `Key("a") == 1 and ...` worse.
        raise TypeError(
            f"{type(self).__name__} queries have no truth value. To combine queries, chain "
            "searches: tree.search(query1).search(query2)."
        )


# Upstream's server reads boolean query fields with FastAPI, so clients that format a Python
# bool with str() ("True") or send 1/0 are understood there; JSON true/false are the same words.
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def _parse_bool(name: str, text: str) -> Any:
    word = text.strip().lower() if isinstance(text, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return _loads(name, text)  # any other JSON is refused by the dataclass, which names it


# A search by regular expression reads every value at its key; a pattern such as (a|a)+$
# backtracks for ever on some text, which would hold a server's worker. The matching of all
# the values of one search may take this many seconds together (see RegexBudget).
REGEX_QUERY_SECONDS = 1.0
# Counted repeats (a{1000}) are built out in full when a pattern is compiled, nested ones
# multiplied: (?:a{65535}){65535} would take all the memory there is.
REGEX_MAX_UNROLLED = 10_000
REGEX_MAX_LENGTH = 10_000


_regex_searches = itertools.count(1)


def new_regex_search() -> int:
    """A number naming one run of a search by regular expression (a SQL statement's), for
    the database to keep its :class:`RegexBudget` by."""
    return next(_regex_searches)


class RegexBudget:
    """The time the matching of one search's values may take together
    (:data:`REGEX_QUERY_SECONDS`), spent only while a value is matched: waiting for a lock,
    reading rows or anything else between values costs none of it."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = REGEX_QUERY_SECONDS

    def found(self, pattern: str, text: str, ignore_case: bool = False) -> bool:
        """Whether ``pattern`` (Python's syntax) matches somewhere in ``text``; InvalidQuery
        once the budget is spent."""
        compiled = _compiled_regex(pattern, ignore_case)
        if self.remaining <= 0:
            raise _too_long(pattern)
        started = time.perf_counter()
        try:
            return compiled.search(text, timeout=self.remaining) is not None
        except TimeoutError:
            raise _too_long(pattern) from None
        finally:
            self.remaining -= time.perf_counter() - started


def _too_long(pattern: str) -> InvalidQuery:
    return InvalidQuery(
        f"The regular expression {pattern[:200]!r} takes too long to match (it backtracks "
        "without end on some values); write it so that it does not"
    )


def check_regex(pattern: str) -> None:
    """ValueError for a pattern Python cannot compile, or that unrolls past
    :data:`REGEX_MAX_UNROLLED` elements."""
    if len(pattern) > REGEX_MAX_LENGTH:
        raise ValueError(f"A regular expression may have {REGEX_MAX_LENGTH} characters at most")
    try:
        re.compile(pattern)
        # The parsed form is the standard library's own (re._parser): the one exact account
        # of what each repeat holds.
        unrolled = _unrolled(re._parser.parse(pattern))
    except (re.error, RecursionError, OverflowError) as error:
        raise ValueError(f"Invalid regular expression {pattern[:200]!r}: {error}") from None
    if unrolled > REGEX_MAX_UNROLLED:
        raise ValueError(
            f"The regular expression {pattern[:200]!r} repeats too much: its counted repeats "
            f"unroll to {unrolled} elements, more than {REGEX_MAX_UNROLLED}"
        )


def _unrolled(items: Any) -> int:
    constants = re._constants
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT}
    repeats |= {getattr(constants, "POSSESSIVE_REPEAT", constants.MAX_REPEAT)}
    total = 0
    for op, argument in items:
        if op in repeats:
            low, high, inner = argument
            count = low if high == constants.MAXREPEAT else high
            total += max(count, 1) * _unrolled(inner)
        elif op == constants.SUBPATTERN:
            total += _unrolled(argument[-1])
        elif op == constants.BRANCH:
            total += sum(_unrolled(branch) for branch in argument[1])
        elif op in (constants.ASSERT, constants.ASSERT_NOT):
            total += _unrolled(argument[1])
        elif op == constants.GROUPREF_EXISTS:
            total += sum(_unrolled(branch) for branch in argument[1:] if branch)
        else:
            total += 1
    return total


@functools.lru_cache(maxsize=256)
def _compiled_regex(pattern: str, ignore_case: bool) -> Any:
    import regex

    try:
        return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
    except (regex.error, MemoryError, RecursionError, OverflowError) as error:
        raise InvalidQuery(f"Invalid regular expression {pattern[:200]!r}: {error}") from None


def regex_found(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """Whether ``pattern`` (Python's syntax) matches somewhere in ``text``, with no time limit
    (for patterns that cannot backtrack; others go through a :class:`RegexBudget`)."""
    return _compiled_regex(pattern, ignore_case).search(text) is not None


def _loads(name: str, text: str) -> Any:
    if not isinstance(text, str):
        raise InvalidQuery(f"Query field {name!r} must be a string, not {text!r}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # also past int()'s digit limit, or nested too deep
        raise InvalidQuery(f"Query field {name!r} is not valid JSON: {text[:200]!r}") from None


def _check_type(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    if not isinstance(value, types):
        expected = getattr(types, "__name__", str(types))
        raise TypeError(f"{name} must be of type {expected}, not {value!r}")


def _as_tuple(name: str, value: Any, item_type: type | None = None) -> tuple:
    """A list-like field as a tuple; a bare string is refused because it is surely a mistake."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise TypeError(f"{name} must be a list, not {value!r}")
    items = tuple(value)
    if item_type is not None:
        for item in items:
            _check_type(f"each item of {name}", item, item_type)
    return items


def _set(query: Any, name: str, value: Any) -> None:
    object.__setattr__(query, name, value)  # normalizing the fields of a frozen dataclass


@register(name="fulltext")
@dataclass(frozen=True)
class FullText(QueryBase):
    text: str

    def __post_init__(self) -> None:
        _check_type("text", self.text, str)


@register(name="lookup")
@dataclass(frozen=True)
class KeyLookup(QueryBase):
    key: str

    def __post_init__(self) -> None:
        _check_type("key", self.key, str)


@register(name="keys_filter")
@dataclass(frozen=True)
class KeysFilter(QueryBase):
    keys: tuple[str, ...]
    _json_fields: ClassVar[frozenset[str]] = frozenset({"keys"})

    def __post_init__(self) -> None:
        _set(self, "keys", _as_tuple("keys", self.keys, str))


@register(name="regex")
@dataclass(frozen=True)
class Regex(QueryBase):
    key: str
    pattern: str
    case_sensitive: bool = True
    _json_fields: ClassVar[frozenset[str]] = frozenset({"case_sensitive"})
    _bool_fields: ClassVar[frozenset[str]] = frozenset({"case_sensitive"})

    def __post_init__(self) -> None:
        _check_type("key", self.key, str)
        _check_type("pattern", self.pattern, str)
        _check_type("case_sensitive", self.case_sensitive, bool)
        check_regex(self.pattern)


class _KeyValue(QueryBase):
    """Queries on the metadata value at a dotted key; the value travels as JSON."""

    _json_fields: ClassVar[frozenset[str]] = frozenset({"value"})

    def __post_init__(self) -> None:
        _check_type("key", self.key, str)


@register(name="eq")
@dataclass(frozen=True)
class Eq(_KeyValue):
    key: str
    value: Any


@register(name="noteq")
@dataclass(frozen=True)
class NotEq(_KeyValue):
    key: str
    value: Any


class Operator(str, enum.Enum):
    lt = "lt"
    gt = "gt"
    le = "le"
    ge = "ge"

    def __str__(self) -> str:
        return self.value


@register(name="comparison")
@dataclass(frozen=True)
class Comparison(_KeyValue):
    operator: Operator
    key: str
    value: Any

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            _set(self, "operator", Operator(self.operator))
        except ValueError:
            raise ValueError(
                f"Comparison operator must be one of {[o.value for o in Operator]}, "
                f"not {self.operator!r}"
            ) from None


@register(name="contains")
@dataclass(frozen=True)
class Contains(_KeyValue):
    key: str
    value: Any


@register(name="in")
@dataclass(frozen=True)
class In(_KeyValue):
    key: str
    value: tuple

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "value", _as_tuple("value", self.value))


@register(name="notin")
@dataclass(frozen=True)
class NotIn(_KeyValue):
    key: str
    value: tuple

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "value", _as_tuple("value", self.value))


@register(name="keypresent")
@dataclass(frozen=True)
class KeyPresent(QueryBase):
    key: str
    exists: bool = True
    _json_fields: ClassVar[frozenset[str]] = frozenset({"exists"})
    _bool_fields: ClassVar[frozenset[str]] = frozenset({"exists"})

    def __post_init__(self) -> None:
        _check_type("key", self.key, str)
        _check_type("exists", self.exists, bool)


@register(name="like")
@dataclass(frozen=True)
class Like(QueryBase):
    """SQL ``LIKE`` on the value at ``key`` (``%`` any run, ``_`` one character)."""

    key: str
    pattern: str
    _json_fields: ClassVar[frozenset[str]] = frozenset({"pattern"})

    def __post_init__(self) -> None:
        _check_type("key", self.key, str)
        _check_type("pattern", self.pattern, str)


def _spec_names(name: str, value: Any) -> tuple[str, ...]:
    names = tuple(s.name if isinstance(s, Spec) else s for s in _as_tuple(name, value))
    for spec in names:
        _check_type(f"each item of {name}", spec, str)
    return names


@register(name="specs")
@dataclass(frozen=True)
class SpecsQuery(QueryBase):
    """Nodes carrying every spec in ``include`` and none in ``exclude`` (names, not versions)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    _json_fields: ClassVar[frozenset[str]] = frozenset({"include", "exclude"})

    def __post_init__(self) -> None:
        _set(self, "include", _spec_names("include", self.include))
        _set(self, "exclude", _spec_names("exclude", self.exclude))


def SpecQuery(spec: str | Spec) -> SpecsQuery:  # upstream's public name: a function
    """Nodes carrying one spec."""
    return SpecsQuery(include=[spec])


@register(name="access_blob_filter")
@dataclass(frozen=True)
class AccessBlobFilter(QueryBase):
    """Nodes a user may see: owned by ``user_id`` (may be None) or tagged with any of ``tags``."""

    user_id: str | None
    tags: tuple[str, ...]
    # JSON for both: user_id may be null and tags is a list.
    _json_fields: ClassVar[frozenset[str]] = frozenset({"user_id", "tags"})

    def __post_init__(self) -> None:
        _check_type("user_id", self.user_id, str | None)
        _set(self, "tags", _as_tuple("tags", self.tags, str))


@register(name="access_tags_filter")
@dataclass(frozen=True)
class AccessTagsFilter(QueryBase):
    """Nodes carrying at least one of ``tags`` (upstream 0.2.20's access-tag query)."""

    tags: tuple[str, ...]
    _json_fields: ClassVar[frozenset[str]] = frozenset({"tags"})

    def __post_init__(self) -> None:
        _set(self, "tags", _as_tuple("tags", self.tags, str))


@register(name="structure_family")
@dataclass(frozen=True)
class StructureFamilyQuery(QueryBase):
    value: StructureFamily

    def __post_init__(self) -> None:
        try:
            _set(self, "value", StructureFamily(self.value))
        except ValueError:
            families = [f.value for f in StructureFamily]
            raise ValueError(
                f"Structure family must be one of {families}, not {self.value!r}"
            ) from None


class Key:
    """Build queries with operators: ``Key("sample.color") == "red"`` is ``Eq(...)``."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        _check_type("key", key, str)
        self.key = key

    def __repr__(self) -> str:
        return f"Key({self.key!r})"

    def __eq__(self, value: Any) -> Eq:  # type: ignore[override]
        return Eq(self.key, value)

    def __ne__(self, value: Any) -> NotEq:  # type: ignore[override]
        return NotEq(self.key, value)

    def __lt__(self, value: Any) -> Comparison:
        return Comparison(Operator.lt, self.key, value)

    def __gt__(self, value: Any) -> Comparison:
        return Comparison(Operator.gt, self.key, value)

    def __le__(self, value: Any) -> Comparison:
        return Comparison(Operator.le, self.key, value)

    def __ge__(self, value: Any) -> Comparison:
        return Comparison(Operator.ge, self.key, value)

    __hash__ = None  # type: ignore[assignment]  # == builds a query, so Key cannot be hashed

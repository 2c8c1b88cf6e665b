"""Search queries as SQL conditions on the ``nodes`` table, for SQLite and PostgreSQL.

Each dialect answers the same small questions (is a dotted key present, is the value there
equal to / less than a value, ...) and :data:`QUERY_TRANSLATIONS` composes them per query type.
Semantics follow the in-memory container's (``tiled.adapters.mapping``), with two deliberate
differences: values of different JSON types never compare equal (``1`` is not ``true``), and
full text matches words (runs of letters and digits) case-insensitively on both back ends.
``Contains`` finds an array's member or (for a string) an object's member name, never a
substring. What a database would fail to run (NUL characters, Python-only regular expression
syntax on PostgreSQL, a LIKE pattern ending in an escape) is refused as an invalid query.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..errors import InvalidQuery, UnsupportedQuery
from ..queries import (
    AccessBlobFilter,
    AccessTagsFilter,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    KeyLookup,
    KeyPresent,
    KeysFilter,
    Like,
    NotEq,
    NotIn,
    Operator,
    Regex,
    SpecsQuery,
    StructureFamilyQuery,
    new_regex_search,
)
from ..query_registration import default_query_registry
from .access import has_any_tag, owned_by
from .orm import nodes

_COMPARE = {
    Operator.lt: lambda a, b: a < b,
    Operator.gt: lambda a, b: a > b,
    Operator.le: lambda a, b: a <= b,
    Operator.ge: lambda a, b: a >= b,
}


def words(text: str) -> list[str]:
    """Words as full text search sees them: runs of letters and digits, lower-cased."""
    return re.findall(r"[^\W_]+", text.lower())


def word_pattern(wanted: list[str]) -> str:
    """A regular expression finding any of ``wanted`` as a whole word (case is the caller's)."""
    alternatives = "|".join(re.escape(word) for word in wanted)
    return rf"(?<![^\W_])(?:{alternatives})(?![^\W_])"


def like_to_regex(pattern: str) -> str:
    """SQL LIKE (``%``, ``_``, backslash escapes) as an anchored Python regular expression."""
    out, escaped = [], False
    for char in pattern:
        if escaped:
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "(?s)^" + "".join(out) + "$"


# Python syntax that PostgreSQL's regular expressions refuse (the statement would fail):
# named groups, atomic groups, scoped or Python-only flags, possessive quantifiers, \N{name}.
_PYTHON_ONLY_REGEX = re.compile(
    r"\(\?P|\(\?>|\(\?[a-zA-Z]*-|\(\?[a-zA-Z]+:|\(\?[a-zA-Z]*[auL]|(?<!\\)[*+?}]\+|\\N\{"
)
_REPEAT_COUNTS = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
_PG_MAX_REPEAT = 255  # RE_DUP_MAX: PostgreSQL refuses larger counts in {m,n}


def _refuse_python_only_regex(pattern: str) -> None:
    """400 for a pattern Python accepts (the query was validated with ``re``) but PostgreSQL
    cannot compile, instead of a failed statement."""
    counts = [int(n) for match in _REPEAT_COUNTS.finditer(pattern) for n in match.groups() if n]
    if _PYTHON_ONLY_REGEX.search(pattern) or any(n > _PG_MAX_REPEAT for n in counts):
        raise InvalidQuery(
            f"The regular expression {pattern[:200]!r} uses syntax this catalog's database "
            "(PostgreSQL) does not support: named or atomic groups, scoped flags, possessive "
            f"quantifiers, \\N{{...}} or repetition counts above {_PG_MAX_REPEAT}"
        )


def _refuse_trailing_escape(pattern: str) -> None:
    # PostgreSQL fails the statement ("LIKE pattern must not end with escape character").
    if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
        raise InvalidQuery(f"The LIKE pattern {pattern[:200]!r} ends with an unpaired backslash")


def _like(query: Like, d: Dialect) -> ColumnElement:
    _refuse_trailing_escape(query.pattern)
    return d.like(META, query.key, query.pattern)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SQLiteJSON:
    """Questions about JSON documents asked with SQLite's JSON1 functions."""

    name = "sqlite"

    @staticmethod
    def path(key: str) -> str:
        # Quoted members, so keys with dots inside a part or spaces still address one member.
        return "$" + "".join(f'."{part}"' for part in key.split("."))

    def value(self, column: Any, key: str) -> Any:
        return func.json_extract(column, self.path(key))

    def type(self, column: Any, key: str) -> Any:
        return func.json_type(column, self.path(key))

    def present(self, column: Any, key: str) -> ColumnElement:
        return self.type(column, key).is_not(None)

    def equal(self, value_expr: Any, type_expr: Any, value: Any) -> ColumnElement:
        """``value_expr`` (as json_extract gives it, typed by ``type_expr``) equals ``value``."""
        if value is None:
            return type_expr == "null"
        if isinstance(value, bool):
            return type_expr == ("true" if value else "false")
        if _is_number(value):
            return and_(type_expr.in_(["integer", "real"]), value_expr == value)
        if isinstance(value, str):
            return and_(type_expr == "text", value_expr == value)
        # Arrays and objects: json_extract returns minified JSON text, json() minifies ours.
        return and_(type_expr.in_(["array", "object"]), value_expr == func.json(json.dumps(value)))

    def eq(self, column: Any, key: str, value: Any) -> ColumnElement:
        return self.equal(self.value(column, key), self.type(column, key), value)

    def compare(self, column: Any, key: str, operator: Operator, value: Any) -> ColumnElement:
        kinds = ["integer", "real"] if _is_number(value) else ["text"]
        return and_(
            self.type(column, key).in_(kinds), _COMPARE[operator](self.value(column, key), value)
        )

    def contains(self, column: Any, key: str, value: Any) -> ColumnElement:
        kind = self.type(column, key)
        each = func.json_each(column, self.path(key)).table_valued("value", "type")
        member = (
            select(literal(1)).select_from(each).where(self.equal(each.c.value, each.c.type, value))
        )
        in_array = and_(kind == "array", exists(member))
        if not isinstance(value, str):
            return in_array
        names = func.json_each(column, self.path(key)).table_valued("key")
        named = select(literal(1)).select_from(names).where(names.c.key == value)
        return or_(in_array, and_(kind == "object", exists(named)))

    def regex(self, column: Any, key: str, pattern: str, case_sensitive: bool) -> ColumnElement:
        # One budget of time for the values a statement reads (tiled.queries.RegexBudget),
        # numbered each time the statement runs: a search is built once, then counted and
        # paged by several statements, each with its own budget.
        search = bindparam(None, callable_=new_regex_search, type_=Integer)
        match = func.tiled_regexp(pattern, self.value(column, key), int(not case_sensitive), search)
        return and_(self.type(column, key) == "text", match == 1)

    def like(self, column: Any, key: str, pattern: str) -> ColumnElement:
        # SQLite's LIKE ignores ASCII case, PostgreSQL's does not: match as a regex instead.
        return self.regex(column, key, like_to_regex(pattern), True)

    def fulltext(self, column: Any, text: str) -> ColumnElement:
        # Every string value (not the keys) searched for a whole word, case-insensitively: the
        # words PostgreSQL's parser and upstream's FTS5 table find ("hello-world" holds
        # "hello"), where splitting on white space alone would not.
        wanted = words(text)
        if not wanted:
            return false()
        tree = func.json_tree(column).table_valued("value", "type")
        # No deadline: a pattern of literal words takes time linear in the text.
        found = func.tiled_regexp(word_pattern(wanted), tree.c.value, 1, None) == 1
        return exists(select(literal(1)).select_from(tree).where(tree.c.type == "text", found))

    def has_spec(self, name: str) -> ColumnElement:
        each = func.json_each(nodes.c.specs).table_valued("value")
        named = func.json_extract(each.c.value, "$.name") == name
        return exists(select(literal(1)).select_from(each).where(named))

    def sort_key(self, column: Any, key: str) -> Any:
        return self.value(column, key)

    def json_value(self, column: Any, key: str) -> Any:
        """The value at ``key`` as JSON (for grouping distinct values; NULL when absent)."""
        return type_coerce(column.op("->")(self.path(key)), JSON)


class PostgresJSON:
    """Questions about JSONB documents asked with PostgreSQL's operators."""

    name = "postgresql"
    _simple = literal_column("'simple'::regconfig")

    @staticmethod
    def path(key: str) -> tuple[str, ...]:
        return tuple(key.split("."))

    @staticmethod
    def jsonb(column: Any) -> Any:
        # The columns are JSON with a JSONB variant; JSONB's operators need the JSONB type.
        return type_coerce(column, JSONB)

    def at(self, column: Any, key: str) -> Any:
        return self.jsonb(column)[self.path(key)]  # ``#>``: JSONB, SQL NULL when absent

    def type(self, column: Any, key: str) -> Any:
        return func.jsonb_typeof(self.at(column, key))

    def present(self, column: Any, key: str) -> ColumnElement:
        return self.at(column, key).is_not(None)

    @staticmethod
    def _jsonb(value: Any) -> Any:
        return type_coerce(literal(value, JSONB), JSONB)

    def eq(self, column: Any, key: str, value: Any) -> ColumnElement:
        # JSONB equality is exact per type; numbers compare numerically (1 = 1.0).
        return self.at(column, key) == self._jsonb(value)

    def compare(self, column: Any, key: str, operator: Operator, value: Any) -> ColumnElement:
        kind = "number" if _is_number(value) else "string"
        at = self.at(column, key)
        return and_(func.jsonb_typeof(at) == kind, _COMPARE[operator](at, self._jsonb(value)))

    def contains(self, column: Any, key: str, value: Any) -> ColumnElement:
        at = self.at(column, key)
        in_array = and_(func.jsonb_typeof(at) == "array", at.contains(self._jsonb([value])))
        if not isinstance(value, str):
            return in_array
        return or_(in_array, and_(func.jsonb_typeof(at) == "object", at.has_key(value)))

    def regex(self, column: Any, key: str, pattern: str, case_sensitive: bool) -> ColumnElement:
        _refuse_python_only_regex(pattern)
        text = self.at(column, key).astext
        matched = text.regexp_match(pattern, flags=None if case_sensitive else "i")
        return and_(self.type(column, key) == "string", matched)

    def like(self, column: Any, key: str, pattern: str) -> ColumnElement:
        return and_(self.type(column, key) == "string", self.at(column, key).astext.like(pattern))

    def fulltext(self, column: Any, text: str) -> ColumnElement:
        strings = literal_column("'[\"string\"]'::jsonb")
        vector = func.jsonb_to_tsvector(self._simple, self.jsonb(column), strings)
        return or_(
            false(), *(vector.op("@@")(func.plainto_tsquery(self._simple, w)) for w in words(text))
        )

    def has_spec(self, name: str) -> ColumnElement:
        return self.jsonb(nodes.c.specs).contains(self._jsonb([{"name": name}]))

    def sort_key(self, column: Any, key: str) -> Any:
        return self.at(column, key)

    def json_value(self, column: Any, key: str) -> Any:
        return self.at(column, key)


Dialect = SQLiteJSON | PostgresJSON
DIALECTS: dict[str, Dialect] = {"sqlite": SQLiteJSON(), "postgresql": PostgresJSON()}
META = nodes.c.metadata


def _in(query: In, d: Dialect) -> ColumnElement:
    return or_(false(), *(d.eq(META, query.key, v) for v in query.value))


def _notin(query: NotIn, d: Dialect) -> ColumnElement:
    if not query.value:
        return true()  # nothing excluded, not even nodes lacking the key (as in memory)
    return and_(d.present(META, query.key), not_(_in(In(query.key, query.value), d)))


def _comparison(query: Comparison, d: Dialect) -> ColumnElement:
    if not (_is_number(query.value) or isinstance(query.value, str)):
        raise InvalidQuery(f"Comparison needs a number or a string, not {query.value!r}")
    return d.compare(META, query.key, query.operator, query.value)


def _specs(query: SpecsQuery, d: Dialect) -> ColumnElement:
    included = [d.has_spec(name) for name in query.include]
    excluded = [not_(d.has_spec(name)) for name in query.exclude]
    return and_(true(), *included, *excluded)


def _access_blob(query: AccessBlobFilter, d: Dialect) -> ColumnElement:
    clauses = [has_any_tag(list(query.tags))] if query.tags else []
    if query.user_id is not None:
        clauses.append(owned_by(query.user_id))
    return or_(false(), *clauses)


QUERY_TRANSLATIONS: dict[type, Callable[[Any, Dialect], ColumnElement]] = {
    Eq: lambda q, d: d.eq(META, q.key, q.value),
    NotEq: lambda q, d: and_(d.present(META, q.key), not_(d.eq(META, q.key, q.value))),
    Comparison: _comparison,
    Contains: lambda q, d: d.contains(META, q.key, q.value),
    In: _in,
    NotIn: _notin,
    KeyPresent: lambda q, d: d.present(META, q.key) if q.exists else not_(d.present(META, q.key)),
    Regex: lambda q, d: d.regex(META, q.key, q.pattern, q.case_sensitive),
    Like: _like,
    FullText: lambda q, d: d.fulltext(META, q.text),
    SpecsQuery: _specs,
    StructureFamilyQuery: lambda q, d: nodes.c.structure_family == q.value.value,
    KeysFilter: lambda q, d: nodes.c.key.in_(list(q.keys)) if q.keys else false(),
    KeyLookup: lambda q, d: nodes.c.key == q.key,
    AccessBlobFilter: _access_blob,
    AccessTagsFilter: lambda q, d: has_any_tag(list(q.tags)) if q.tags else false(),
}


def condition_for(query: Any, dialect: Dialect) -> ColumnElement:
    """The SQL condition selecting the nodes that match ``query``."""
    translate = QUERY_TRANSLATIONS.get(type(query))
    if translate is None:
        name = default_query_registry.query_type_to_name.get(type(query))
        raise UnsupportedQuery(name or type(query).__name__)
    if dataclasses.is_dataclass(query):
        for field in dataclasses.fields(query):
            # A NUL character fails the statement wherever a value becomes a JSON path (keys, on
            # both databases) and anywhere on PostgreSQL, whose text and JSONB cannot hold it.
            refuse_nul = field.name == "key" or dialect.name == "postgresql"
            _check_bindable(getattr(query, field.name), field.name, refuse_nul)
    return translate(query, dialect)


_INT64 = range(-(2**63), 2**63)


def _check_bindable(value: Any, name: str, refuse_nul: bool = False) -> None:
    """400 for a query value no database driver can bind (the in-memory trees compare any):
    an integer past 64 bits, text with a lone surrogate (no UTF-8 form), and where
    ``refuse_nul``, text holding a NUL character."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise InvalidQuery(f"The query's {name} holds an integer past 64 bits: {value}")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidQuery(f"The query's {name} holds text with no UTF-8 form") from None
        if refuse_nul and "\x00" in value:
            raise InvalidQuery(f"The query's {name} holds a NUL character")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_bindable(item, name, refuse_nul)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_bindable(key, name, refuse_nul)
            _check_bindable(item, name, refuse_nul)

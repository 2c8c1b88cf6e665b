"""The registry that gives each query type its HTTP name.

Over HTTP a query travels as ``filter[{name}][condition][{field}]={encoded value}``; this module
maps names to query classes and turns such parameters back into query objects. It imports
nothing heavy, so clients can use it freely.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .errors import InvalidQuery

Q = TypeVar("Q", bound=type)

# "___" is reserved: it joins name and field where brackets cannot be used (e.g. form fields).
_RESERVED = "___"
_FILTER_PARAM = re.compile(r"^filter\[([^\]]+)\]\[condition\]\[([^\]]+)\]$")


class QueryRegistry:
    """A two-way table between query classes and their HTTP names."""

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}
        self._by_type: dict[type, str] = {}

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def name_to_query_type(self) -> dict[str, type]:
        return dict(self._by_name)

    @property
    def query_type_to_name(self) -> dict[type, str]:
        return dict(self._by_type)

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[Q], Q]:
        """Class decorator registering a query dataclass under ``name`` (default: class name)."""

        def decorator(cls: Q) -> Q:
            self._add(name or cls.__name__.lower(), cls, overwrite)
            return cls

        return decorator

    def _add(self, name: str, cls: type, overwrite: bool) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"Query type {cls.__name__} must be a dataclass")
        bad = [n for n in [name, *(f.name for f in dataclasses.fields(cls))] if _RESERVED in n]
        if bad:
            raise ValueError(f"Query names and fields may not contain {_RESERVED!r}: {bad}")
        existing = self._by_name.get(name)
        if existing is not None and existing is not cls and not overwrite:
            raise ValueError(f"The query name {name!r} is already registered to {existing}")
        self._by_name[name] = cls
        self._by_type[cls] = name

    def name_of(self, query_type: type) -> str:
        """The registered name of a query class; ``KeyError`` if it was never registered."""
        return self._by_type[query_type]

    def query_type(self, name: str) -> type:
        return self._by_name[name]

    def encode_params(self, query: Any) -> dict[str, str]:
        """A query as HTTP query parameters ``filter[name][condition][field]``."""
        name = self.name_of(type(query))
        return {f"filter[{name}][condition][{k}]": v for k, v in query.encode().items()}

    def decode_params(self, params: Iterable[tuple[str, str]]) -> list[Any]:
        """Queries from (parameter, value) pairs, e.g. ``request.query_params.multi_items()``.

        The i-th value of every field of one name forms the i-th query of that type. Names
        nobody registered are ignored, as upstream servers do.
        """
        fields_by_name: dict[str, dict[str, list[str]]] = {}
        for param, value in params:
            match = _FILTER_PARAM.match(param)
            if match and match.group(1) in self._by_name:
                name, field = match.groups()
                fields_by_name.setdefault(name, {}).setdefault(field, []).append(value)
        queries = []
        for name, fields in fields_by_name.items():
            queries.extend(self._decode_group(name, fields))
        return queries

    def _decode_group(self, name: str, fields: dict[str, list[str]]) -> list[Any]:
        lengths = {field: len(values) for field, values in fields.items()}
        if len(set(lengths.values())) != 1:
            raise InvalidQuery(f"Query {name!r} has unequal numbers of values per field: {lengths}")
        cls = self._by_name[name]
        rows = [
            dict(zip(fields, values, strict=True)) for values in zip(*fields.values(), strict=True)
        ]
        return [_decode_one(cls, name, row) for row in rows]


def _decode_one(cls: type, name: str, fields: dict[str, str]) -> Any:
    expected = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - expected
    if unknown:
        raise InvalidQuery(f"Query {name!r} has no field(s) {sorted(unknown)}")
    try:
        return cls.decode(**fields)
    except TypeError as error:  # a required field is missing
        raise InvalidQuery(f"Query {name!r} could not be built from {fields}: {error}") from None


default_query_registry = QueryRegistry()
register = default_query_registry.register

"""An in-memory container: a mapping of keys to adapters that can be searched and sorted.

The mapping is held as given and never copied, so a mapping that changes after construction
(e.g. one a background task appends to) is seen live. Searches and sorts return variations
that share the children; the order they present is always computed from the *given* order, so
``("_", -1)`` means "given order reversed" no matter how many searches came before.
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ..errors import BadRequest, InvalidQuery, NoSuchEntry, UnsupportedQuery
from ..queries import (
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    KeyLookup,
    KeyPresent,
    KeysFilter,
    NotEq,
    NotIn,
    Operator,
    Regex,
    RegexBudget,
    SpecsQuery,
    StructureFamilyQuery,
)
from ..query_registration import default_query_registry
from ..structures.container import ContainerStructure
from .base import ContainerAdapterBase
from .protocols import Listing, SearchesDeep, supports

GIVEN_ORDER = "_"  # the sort key meaning "the order of the mapping as given"
# "" is what clients send for "the server's default order", which for a mapping is the same.
_GIVEN_ORDER_KEYS = frozenset({GIVEN_ORDER, ""})
MISSING = object()  # what lookup_dotted finds where a key is absent


def lookup_dotted(metadata: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (``"sample.color"``) in nested metadata, or ``MISSING``."""
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


@dataclass(frozen=True)
class SortingItem:
    """One level of a sort: a dotted metadata key (or ``"_"``) and direction 1 or -1."""

    key: str
    direction: int = 1

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise BadRequest(f"Sorting direction must be 1 or -1, not {self.direction!r}")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "direction": self.direction}


_DEFAULT_SORTING = (SortingItem(GIVEN_ORDER, 1),)


def normalize_sorting(sorting: Iterable[Any]) -> list[SortingItem]:
    """Accept SortingItems, ``(key, direction)`` pairs or ``{"key", "direction"}`` dicts."""
    items = []
    for item in sorting:
        if isinstance(item, Mapping):
            item = SortingItem(item["key"], int(item["direction"]))
        elif not isinstance(item, SortingItem):
            key, direction = item
            item = SortingItem(key, int(direction))
        items.append(item)
    return items


def _typed_sort_key(value: Any) -> tuple:
    # Fallback when values of different types cannot be compared: numbers, then text, then rest.
    if isinstance(value, int | float):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, repr(value))


def _sort_by_metadata(keys: list[str], mapping: Mapping, item: SortingItem) -> list[str]:
    """A stable sort of ``keys`` by one metadata key; nodes lacking it go last either way."""
    values = {k: lookup_dotted(mapping[k].metadata(), item.key) for k in keys}
    present = [k for k in keys if values[k] is not MISSING]
    missing = [k for k in keys if values[k] is MISSING]
    reverse = item.direction < 0
    try:
        present = sorted(present, key=values.__getitem__, reverse=reverse)
    except TypeError:
        present = sorted(present, key=lambda k: _typed_sort_key(values[k]), reverse=reverse)
    return present + missing


def _ordered_keys(mapping: Mapping, sorting: Sequence[SortingItem]) -> list[str]:
    keys = list(mapping)
    by_metadata = []
    for item in sorting:
        if item.key in _GIVEN_ORDER_KEYS:
            # Keys are unique in the given order, so nothing after this item can break a tie.
            if item.direction < 0:
                keys.reverse()
            break
        by_metadata.append(item)
    for item in reversed(by_metadata):  # least significant first; each sort is stable
        keys = _sort_by_metadata(keys, mapping, item)
    return keys


class _SliceableView(Sequence):
    """keys(), values() or items() of a MapAdapter, in its sort order, sliceable like a list."""

    def __init__(self, adapter: MapAdapter, project: Callable[[str], Any]):
        self._adapter = adapter
        self._project = project

    def __len__(self) -> int:
        return len(self._adapter)

    def __iter__(self) -> Iterator[Any]:
        return map(self._project, self._adapter._iter_keys())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step > 0:  # walk only as far as needed, without listing everything
                return list(itertools.islice(iter(self), start, stop, step))
            return list(self)[index]
        position = range(len(self))[index]  # negative indices and IndexError, like a list
        return next(itertools.islice(iter(self), position, None))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {list(self[:10])}{' ...' if len(self) > 10 else ''}>"


class _KeysView(_SliceableView):
    def __contains__(self, key: object) -> bool:
        return key in self._adapter


QueryFunction = Callable[[Any, "MapAdapter"], "MapAdapter"]


class MapAdapter(ContainerAdapterBase):
    """Serve a mapping of keys to adapters (nesting allowed) as a container node."""

    _query_functions: ClassVar[dict[type, QueryFunction]] = {}

    def __init__(
        self,
        mapping: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
        sorting: Iterable[Any] | None = None,
        specs: Any = None,
        entries_stale_after: timedelta | None = None,
        metadata_stale_after: timedelta | None = None,
        must_revalidate: bool = True,
    ):
        super().__init__(None, metadata=metadata, specs=specs)
        self._mapping = mapping
        self.sorting = normalize_sorting(sorting or _DEFAULT_SORTING)
        self.entries_stale_after = entries_stale_after
        self.metadata_stale_after = metadata_stale_after
        self.must_revalidate = must_revalidate
        # Collected by the app builder: zero-argument async callables and FastAPI routers.
        self.background_tasks: list[Callable] = []
        self.startup_tasks: list[Callable] = []
        self.shutdown_tasks: list[Callable] = []
        self.include_routers: list[Any] = []

    # --- mapping protocol, in sort order ---

    def _iter_keys(self) -> Iterator[str]:
        first = self.sorting[0]
        if first.key in _GIVEN_ORDER_KEYS and first.direction == 1:
            return iter(self._mapping)  # the common case: no copy, no sort
        return iter(_ordered_keys(self._mapping, self.sorting))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._mapping[key]
        except KeyError:
            raise NoSuchEntry(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self._mapping.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._mapping

    def __iter__(self) -> Iterator[str]:
        return self._iter_keys()

    def __len__(self) -> int:
        return len(self._mapping)

    def keys(self) -> _SliceableView:
        return _KeysView(self, lambda key: key)

    def values(self) -> _SliceableView:
        return _SliceableView(self, self._mapping.__getitem__)

    def items(self) -> _SliceableView:
        return _SliceableView(self, lambda key: (key, self._mapping[key]))

    def structure(self) -> ContainerStructure:
        return ContainerStructure(tuple(self._iter_keys()))

    def read(self, fields: Sequence[str] | None = None) -> MapAdapter:
        """This container, or the sub-container of the children named in ``fields``."""
        if fields is None:
            return self
        for field in fields:
            if field not in self._mapping:
                raise NoSuchEntry(field)
        return self.new_variation(mapping={field: self._mapping[field] for field in fields})

    # --- cache hints ---

    @property
    def metadata_stale_at(self) -> datetime | None:
        if self.metadata_stale_after is None:
            return None
        return datetime.now(UTC) + self.metadata_stale_after

    @property
    def entries_stale_at(self) -> datetime | None:
        if self.entries_stale_after is None:
            return None
        return datetime.now(UTC) + self.entries_stale_after

    # --- variations: search, sort ---

    def new_variation(
        self,
        *,
        mapping: Mapping[str, Any] | None = None,
        sorting: Iterable[Any] | None = None,
        must_revalidate: bool | None = None,
    ) -> MapAdapter:
        """A shallow copy (same class, metadata, specs, tasks) with some parts replaced."""
        variation = copy.copy(self)
        if mapping is not None:
            variation._mapping = mapping
        if sorting is not None:
            variation.sorting = normalize_sorting(sorting) or list(_DEFAULT_SORTING)
        if must_revalidate is not None:
            variation.must_revalidate = must_revalidate
        return variation

    def filter(self, predicate: Callable[[str, Any], bool]) -> MapAdapter:
        """A variation keeping the children for which ``predicate(key, child)`` is true."""
        kept = {key: child for key, child in self._mapping.items() if predicate(key, child)}
        return self.new_variation(mapping=kept)

    def sort(self, sorting: Iterable[Any]) -> MapAdapter:
        """Order by dotted metadata keys, e.g. ``[("color", 1), ("_", -1)]``; missing last."""
        return self.new_variation(sorting=sorting)

    @classmethod
    def register_query(cls, query_type: type, function: QueryFunction) -> QueryFunction:
        """Teach this class (and its subclasses) to evaluate ``query_type``."""
        if "_query_functions" not in vars(cls):
            cls._query_functions = {}  # a subclass's registrations stay its own
        cls._query_functions[query_type] = function
        return function

    @classmethod
    def _query_function(cls, query_type: type) -> QueryFunction | None:
        for klass in cls.__mro__:
            function = vars(klass).get("_query_functions", {}).get(query_type)
            if function is not None:
                return function
        return None

    def search(self, query: Any) -> MapAdapter:
        function = self._query_function(type(query))
        if function is None:
            name = default_query_registry.query_type_to_name.get(type(query))
            raise UnsupportedQuery(name or type(query).__name__)
        return function(query, self)

    def search_deep(self, max_depth: int | None = None) -> DeepListing:
        """Every descendant (at most ``max_depth`` levels down) under its path below this node
        (``"a/b/c"``), parents before their members, in the given order.

        In-memory containers are walked. A container that searches its own descendants (a
        catalog under a ``trees:`` root) is asked for them, and its matches follow the
        in-memory ones. Containers whose members are read from a file (HDF5, zarr) refuse
        deep search and are matched but not entered, as a catalog does not enter a
        registered file.
        """
        if max_depth is not None and max_depth < 1:
            raise BadRequest(f"max_depth must be at least 1, not {max_depth}")
        found: dict[str, Any] = {}
        mounts: list[tuple[str, Any]] = []

        def walk(mapping: Mapping[str, Any], prefix: str, depth: int) -> None:
            for key, child in mapping.items():
                if "/" in key:  # its path would name another node
                    raise BadRequest(f"Cannot deep search below the key {key!r}: it holds '/'")
                path = prefix + key
                found[path] = child
                if (max_depth is not None and depth >= max_depth) or not supports(
                    child, SearchesDeep
                ):
                    continue
                if isinstance(child, MapAdapter):
                    walk(child._mapping, path + "/", depth + 1)
                else:
                    remaining = None if max_depth is None else max_depth - depth
                    mounts.append((path, child.search_deep(remaining)))

        walk(self._mapping, "", 1)
        return DeepListing(_Descendants(found), mounts)

    def get_distinct(
        self, metadata: Sequence[str], structure_families: bool, specs: bool, counts: bool
    ) -> dict[str, Any]:
        """Distinct values among the children, as the ``/distinct`` route reports them."""
        children = list(self._mapping.values())
        result: dict[str, Any] = {"metadata": None, "structure_families": None, "specs": None}
        if metadata:
            result["metadata"] = {key: distinct_at(children, key, counts) for key in metadata}
        if structure_families:
            families = (str(child.structure_family) for child in children)
            result["structure_families"] = distinct_values(families, counts)
        if specs:
            # As upstream's MapAdapter reports them: a spec without a version by its name.
            spec_lists = (
                [s.to_json() if s.version is not None else s.name for s in child.specs]
                for child in children
            )
            result["specs"] = distinct_values(spec_lists, counts)
        return result

    def __repr__(self) -> str:
        keys = list(self.keys()[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"<{type(self).__name__} {{{', '.join(map(repr, keys))}{more}}}>"


# --- deep search ---


class _Descendants(MapAdapter):
    """The in-memory part of a deep search, keyed by path (``"a/b/c"``): searched as children
    are, except that key queries match a node's own key, as a catalog's deep search does."""


def _own_key(path: str) -> str:
    return path.rpartition("/")[2]


def _deep_key_lookup(query: KeyLookup, tree: MapAdapter) -> MapAdapter:
    return tree.filter(lambda path, _: _own_key(path) == query.key)


def _deep_keys_filter(query: KeysFilter, tree: MapAdapter) -> MapAdapter:
    wanted = set(query.keys)
    return tree.filter(lambda path, _: _own_key(path) in wanted)


class DeepListing:
    """What :meth:`MapAdapter.search_deep` gives: its in-memory descendants, then those of each
    container that searches its own (``mounts``: its path and its deep variation), read as one
    listing that is searched, counted and read a page at a time."""

    def __init__(self, local: MapAdapter, mounts: Sequence[tuple[str, Any]]):
        self._local = local
        self._mounts = tuple(mounts)
        self._sizes: dict[int, int] = {}  # a variation does not change: count each part once

    def search(self, query: Any) -> DeepListing:
        # A deep variation is searchable by the SearchesDeep contract.
        mounts = [(path, deep.search(query)) for path, deep in self._mounts]
        return DeepListing(self._local.search(query), mounts)

    def _parts(self) -> list[tuple[str, Listing]]:
        return [("", self._local), *((f"{path}/", deep) for path, deep in self._mounts)]

    async def _size(self, index: int, part: Listing) -> int:
        if index not in self._sizes:
            self._sizes[index] = await part.count()
        return self._sizes[index]

    async def count(self) -> int:
        return sum([await self._size(index, part) for index, (_, part) in enumerate(self._parts())])

    async def items_range(self, offset: int = 0, limit: int | None = None) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        for index, (prefix, part) in enumerate(self._parts()):
            wanted = None if limit is None else limit - len(items)
            if wanted == 0:
                break
            if offset:  # pages after the first skip whole parts by their counts
                size = await self._size(index, part)
                if offset >= size:
                    offset -= size
                    continue
            page = await part.items_range(offset, wanted)
            items.extend((prefix + key, child) for key, child in page)
            offset = 0
        return items


# --- distinct values ---


def _fingerprint(value: Any) -> Any:
    # Metadata values may be lists or dicts, which cannot be dictionary keys as they are.
    if isinstance(value, Mapping):
        return ("mapping", frozenset((k, _fingerprint(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("sequence", tuple(_fingerprint(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return ("value", value)


def distinct_values(values: Iterable[Any], counts: bool) -> list[dict[str, Any]]:
    """Distinct values in order of first appearance, optionally with their counts."""
    tally: dict[Any, list] = {}
    for value in values:
        tally.setdefault(_fingerprint(value), [value, 0])[1] += 1
    if counts:
        return [{"value": value, "count": count} for value, count in tally.values()]
    return [{"value": value} for value, _ in tally.values()]


def distinct_at(children: Iterable[Any], key: str, counts: bool) -> list[dict[str, Any]]:
    """Distinct values of the dotted metadata ``key`` among ``children`` (absent ones left out)."""
    values = (lookup_dotted(child.metadata(), key) for child in children)
    return distinct_values((v for v in values if v is not MISSING), counts)


# --- query evaluation ---


def _safe(test: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """A test that says False, instead of raising, for values it cannot compare."""

    def safe_test(value: Any) -> bool:
        try:
            return bool(test(value))
        except InvalidQuery:
            raise  # the query's own fault (a regular expression that takes too long)
        except (TypeError, ValueError):  # e.g. str < int, or ambiguous array truth values
            return False

    return safe_test


def filter_by_metadata(tree: MapAdapter, key: str, test: Callable[[Any], Any]) -> MapAdapter:
    """Keep the children that have dotted ``key`` and whose value there passes ``test``."""
    test = _safe(test)

    def predicate(_: str, child: Any) -> bool:
        value = lookup_dotted(child.metadata(), key)
        return value is not MISSING and test(value)

    return tree.filter(predicate)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def full_text(query: FullText, tree: MapAdapter) -> MapAdapter:
    # Upstream semantics: metadata is lower-cased, the query words are taken as given.
    wanted = set(query.text.split())

    def predicate(_: str, child: Any) -> bool:
        words = {word for text in _strings(child.metadata()) for word in text.lower().split()}
        return not wanted.isdisjoint(words)

    return tree.filter(predicate)


def regex(query: Regex, tree: MapAdapter) -> MapAdapter:
    ignore_case, budget = not query.case_sensitive, RegexBudget()
    return filter_by_metadata(
        tree,
        query.key,
        lambda v: isinstance(v, str) and budget.found(query.pattern, v, ignore_case),
    )


def eq(query: Eq, tree: MapAdapter) -> MapAdapter:
    return filter_by_metadata(tree, query.key, lambda v: v == query.value)


def noteq(query: NotEq, tree: MapAdapter) -> MapAdapter:
    return filter_by_metadata(tree, query.key, lambda v: v != query.value)


_OPERATORS = {
    Operator.lt: operator.lt,
    Operator.gt: operator.gt,
    Operator.le: operator.le,
    Operator.ge: operator.ge,
}


def comparison(query: Comparison, tree: MapAdapter) -> MapAdapter:
    compare = _OPERATORS[query.operator]
    return filter_by_metadata(tree, query.key, lambda v: compare(v, query.value))


def contains(query: Contains, tree: MapAdapter) -> MapAdapter:
    def test(value: Any) -> bool:
        return isinstance(value, Iterable) and not isinstance(value, str) and query.value in value

    return filter_by_metadata(tree, query.key, test)


def in_(query: In, tree: MapAdapter) -> MapAdapter:
    return filter_by_metadata(tree, query.key, lambda v: v in query.value)


def notin(query: NotIn, tree: MapAdapter) -> MapAdapter:
    if not query.value:
        return tree.new_variation()  # nothing is excluded, not even nodes lacking the key
    return filter_by_metadata(tree, query.key, lambda v: v not in query.value)


def keypresent(query: KeyPresent, tree: MapAdapter) -> MapAdapter:
    def predicate(_: str, child: Any) -> bool:
        return (lookup_dotted(child.metadata(), query.key) is not MISSING) == query.exists

    return tree.filter(predicate)


def keys_filter(query: KeysFilter, tree: MapAdapter) -> MapAdapter:
    wanted = set(query.keys)
    return tree.filter(lambda key, _: key in wanted)


def key_lookup(query: KeyLookup, tree: MapAdapter) -> MapAdapter:
    # A direct lookup, not a scan. Upstream marks its result must_revalidate=False: it names
    # one entry rather than listing a set that may grow.
    child = tree.get(query.key, MISSING)
    mapping = {} if child is MISSING else {query.key: child}
    return tree.new_variation(mapping=mapping, must_revalidate=False)


def specs(query: SpecsQuery, tree: MapAdapter) -> MapAdapter:
    def predicate(_: str, child: Any) -> bool:
        names = {spec.name for spec in child.specs}
        return names.issuperset(query.include) and names.isdisjoint(query.exclude)

    return tree.filter(predicate)


def structure_family(query: StructureFamilyQuery, tree: MapAdapter) -> MapAdapter:
    return tree.filter(lambda _, child: child.structure_family == query.value)


for _query_type, _function in [
    (FullText, full_text),
    (Regex, regex),
    (Eq, eq),
    (NotEq, noteq),
    (Comparison, comparison),
    (Contains, contains),
    (In, in_),
    (NotIn, notin),
    (KeyPresent, keypresent),
    (KeysFilter, keys_filter),
    (KeyLookup, key_lookup),
    (SpecsQuery, specs),
    (StructureFamilyQuery, structure_family),
]:
    MapAdapter.register_query(_query_type, _function)

_Descendants.register_query(KeyLookup, _deep_key_lookup)
_Descendants.register_query(KeysFilter, _deep_keys_filter)

"""Containers: read-only mappings over ``/search`` with lazy paging, queries, sorting, and the
methods that create children."""

from __future__ import annotations

import collections.abc
import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Any

from ..structures.core import StructureFamily
from ..structures.data_source import DataSource
from .base import BaseClient, check_metadata, specs_json
from .utils import ClientError, json_body, path_url

ASCENDING = 1
DESCENDING = -1
PAGE = 100  # nodes per page of a listing


def _query_params(queries: Sequence[Any]) -> list[tuple[str, str]]:
    from ..query_registration import default_query_registry

    params: list[tuple[str, str]] = []
    for query in queries:
        params.extend(default_query_registry.encode_params(query).items())
    return params


def _sort_param(sorting: Sequence[tuple[str, int]]) -> str:
    return ",".join(key if direction > 0 else f"-{key}" for key, direction in sorting)


class Container(BaseClient, collections.abc.Mapping):
    """A container node, as a mapping of keys to node clients.

    Listings are fetched a page at a time; ``keys()``, ``values()`` and ``items()`` are views
    that can be sliced (``c.keys()[5:10]``) without reading the rest.
    """

    def __init__(
        self,
        context: Any,
        *,
        item: dict[str, Any],
        structure_clients: Any,
        include_data_sources: bool = False,
        queries: Sequence[Any] = (),
        sorting: Sequence[tuple[str, int]] | None = None,
    ):
        super().__init__(
            context, item=item, structure_clients=structure_clients,
            include_data_sources=include_data_sources,
        )  # fmt: skip
        self._queries = list(queries)
        self._sorting = list(sorting) if sorting is not None else None

    def new_variation(self, **changes: Any) -> Container:
        changes.setdefault("queries", self._queries)
        changes.setdefault("sorting", self._sorting)
        return super().new_variation(**changes)  # type: ignore[return-value]

    # --- listing ---

    def _params(self) -> list[tuple[str, str]]:
        params = _query_params(self._queries)
        if self._sorting:
            params.append(("sort", _sort_param(self._sorting)))
        if self._include_data_sources:
            params.append(("include_data_sources", "true"))
        return params

    def _page(self, offset: int, limit: int, *, keys_only: bool) -> dict:
        params = [*self._params(), ("page[offset]", str(offset)), ("page[limit]", str(limit))]
        if keys_only:
            params.append(("fields", ""))
        return self.context.get_json(f"search/{self._path}", params=params)

    def __len__(self) -> int:
        return int(self._page(0, 0, keys_only=True)["meta"]["count"])

    def _iter(
        self, start: int = 0, stop: int | None = None, *, keys_only: bool
    ) -> Iterator[dict[str, Any]]:
        offset = start
        while stop is None or offset < stop:
            limit = PAGE if stop is None else min(PAGE, stop - offset)
            page = self._page(offset, limit, keys_only=keys_only)
            items = page["data"]
            yield from items
            offset += len(items)
            if not items or offset >= int(page["meta"].get("count", offset)):
                return

    def __iter__(self) -> Iterator[str]:
        for item in self._iter(keys_only=True):
            yield item["id"]

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def keys(self) -> ListView:  # type: ignore[override]
        return ListView(self, "keys")

    def values(self) -> ListView:  # type: ignore[override]
        return ListView(self, "values")

    def items(self) -> ListView:  # type: ignore[override]
        return ListView(self, "items")

    def __getitem__(self, key: str | tuple[str, ...]) -> BaseClient:
        parts = list(key) if isinstance(key, tuple) else [key]
        segments = [s for part in parts for s in str(part).split("/") if s]
        if not segments:
            raise KeyError(key)
        if self._queries and not self._passes_queries(segments[0]):
            raise KeyError(segments[0])
        params = {"include_data_sources": "true"} if self._include_data_sources else None
        path = path_url([*self.path_parts, *segments])
        try:
            document = self.context.get_json(f"metadata/{path}", params=params)
        except ClientError as error:
            if error.status_code == 404:
                raise KeyError(key) from None
            raise
        return self.client_for_item(document["data"])

    def _passes_queries(self, key: str) -> bool:
        from ..queries import KeyLookup

        params = [*_query_params([*self._queries, KeyLookup(key)]), ("fields", "")]
        return bool(self.context.get_json(f"search/{self._path}", params=params)["data"])

    # --- queries ---

    def search(self, query: Any) -> Container:
        """The children matching ``query`` (and every query searched before)."""
        return self.new_variation(queries=[*self._queries, query])

    def sort(self, *sorting: tuple[str, int]) -> Container:
        """The children sorted by metadata keys: ``c.sort(("color", ASCENDING), ("x", -1))``."""
        return self.new_variation(sorting=list(sorting))

    def distinct(
        self,
        *metadata_keys: str,
        structure_families: bool = False,
        specs: bool = False,
        counts: bool = False,
    ) -> dict[str, Any]:
        """The distinct values of metadata keys (and families, specs) among the children."""
        params = [
            *_query_params(self._queries),
            *(("metadata", key) for key in metadata_keys),
            ("structure_families", str(structure_families).lower()),
            ("specs", str(specs).lower()),
            ("counts", str(counts).lower()),
        ]
        return self.context.get_json(f"distinct/{self._path}", params=params)

    # --- creating children ---

    def new(
        self,
        structure_family: str,
        data_sources: Sequence[Any],
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Create a child node; registered data (data sources with assets) is sent to
        ``/register``, anything else to ``/metadata``. Returns its client."""
        check_metadata(metadata)
        sources = [s.to_json() if hasattr(s, "to_json") else dict(s) for s in data_sources]
        body: dict[str, Any] = {
            "structure_family": str(getattr(structure_family, "value", structure_family)),
            "metadata": dict(metadata or {}),
            "specs": specs_json(specs),
            "data_sources": sources,
        }
        if key is not None:
            body["id"] = key
        if access_tags is not None:
            body["access_tags"] = list(access_tags)
        route = "register" if any(s.get("assets") for s in sources) else "metadata"
        created = self.context.request("POST", f"{route}/{self._path}", **json_body(body)).json()
        return self._child(created["id"])

    def _child(self, key: str) -> BaseClient:
        path = path_url([*self.path_parts, key])
        params = {"include_data_sources": "true"} if self._include_data_sources else None
        return self.client_for_item(
            self.context.get_json(f"metadata/{path}", params=params)["data"]
        )

    def create_container(
        self,
        key: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> Container:
        return self.new(  # type: ignore[return-value]
            "container", [], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )

    def write_array(
        self,
        array: Any,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Store ``array`` (numpy, dask, or anything ``numpy.asarray`` takes) as a new array
        node; a dask array keeps its chunks, a numpy array is split into chunks of at most
        ``WRITE_CHUNK_BYTES`` (32 MiB) along its first axis, written concurrently."""
        import numpy

        from ..structures.array import ArrayStructure
        from .array import default_chunks, write_blocks

        if not hasattr(array, "dtype") or not hasattr(array, "shape"):
            array = numpy.asarray(array)
        structure = ArrayStructure.from_array(
            array, chunks=default_chunks(array), dims=tuple(dims) if dims else None
        )
        source = DataSource(StructureFamily.array, structure)  # stored by the server
        client = self.new(
            "array", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        write_blocks(client, array, structure)
        return client

    def write_dataframe(
        self,
        dataframe: Any,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Store a table (pandas or dask DataFrame, or a dict of columns) as a new table
        node; a dask frame's partitions become the table's partitions."""
        from ..structures.table import TableStructure
        from .dataframe import as_partitions

        partitions, meta = as_partitions(dataframe)
        structure = TableStructure.from_pandas(meta, npartitions=len(partitions))
        source = DataSource(StructureFamily.table, structure)  # stored by the server
        client = self.new(
            "table", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        for number, partition in enumerate(partitions):
            client.write_partition(number, partition)  # type: ignore[attr-defined]
        return client

    write_table = write_dataframe

    def write_sparse(
        self,
        coords: Any,
        data: Any,
        shape: Sequence[int],
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Store a COO sparse array (``coords`` of shape (ndim, nnz), ``data`` of nnz)."""
        import numpy

        from ..structures.array import data_type_from_numpy
        from ..structures.sparse import COOStructure

        data = numpy.asarray(data)
        structure = COOStructure(
            chunks=tuple((int(s),) for s in shape), shape=tuple(int(s) for s in shape),
            data_type=data_type_from_numpy(data.dtype), dims=tuple(dims) if dims else None,
        )  # fmt: skip
        source = DataSource(StructureFamily.sparse, structure)  # stored by the server
        client = self.new(
            "sparse", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        client.write(coords, data)  # type: ignore[attr-defined]
        return client

    def delete_contents(
        self,
        keys: str | Sequence[str] | None = None,
        recursive: bool = False,
        external_only: bool = True,
    ) -> None:
        """Delete the children ``keys`` (default: all of them)."""
        if keys is None:
            keys = list(self)
        elif isinstance(keys, str):
            keys = [keys]
        params = {"recursive": str(recursive).lower(), "external_only": str(external_only).lower()}
        with concurrent.futures.ThreadPoolExecutor(self.context.max_connections) as pool:
            list(pool.map(
                lambda key: self.context.request(
                    "DELETE", f"metadata/{path_url([*self.path_parts, key])}", params=params
                ),
                keys,
            ))  # fmt: skip

    def export(
        self, filepath: Any, fields: Sequence[str] | None = None, *, format: str | None = None
    ) -> None:
        """Write the container (or only its children ``fields``) to ``filepath``, as
        upstream's ``Container.export``."""
        params = {"field": list(fields)} if fields else {}
        super().export(filepath, format=format, **params)

    _export_route = "container/full"

    def __repr__(self) -> str:
        try:
            keys = self.keys()[:10]
            count = len(self)
        except Exception:  # a repr must not fail
            return f"<{type(self).__name__} /{'/'.join(self.path_parts)}>"
        more = ", ..." if count > len(keys) else ""
        listed = ", ".join(repr(k) for k in keys)
        return f"<{type(self).__name__} {{{listed}{more}}}>"


class ListView(collections.abc.Sequence):
    """The keys, values or items of a container, fetched lazily, sliceable."""

    def __init__(self, container: Container, kind: str):
        self._container = container
        self._kind = kind

    def _convert(self, item: dict[str, Any]) -> Any:
        if self._kind == "keys":
            return item["id"]
        client = self._container.client_for_item(item)
        return client if self._kind == "values" else (item["id"], client)

    def __len__(self) -> int:
        return len(self._container)

    def __iter__(self) -> Iterator[Any]:
        keys_only = self._kind == "keys"
        for item in self._container._iter(keys_only=keys_only):
            yield self._convert(item)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._slice(index)
        if index < 0:
            index += len(self)
            if index < 0:
                raise IndexError(index)
        found = self._window(index, index + 1)
        if not found:
            raise IndexError(index)
        return self._convert(found[0])

    def _window(self, start: int, stop: int | None) -> list[dict[str, Any]]:
        return list(self._container._iter(start, stop, keys_only=self._kind == "keys"))

    def _slice(self, index: slice) -> list[Any]:
        """Python's slice semantics, reading only the window of entries it touches; the
        length is asked for only when a bound counts from the end."""
        step = 1 if index.step is None else index.step
        if step == 0:
            raise ValueError("slice step cannot be zero")
        start, stop = index.start, index.stop
        from_end = any(v is not None and v < 0 for v in (start, stop))
        if step > 0 and not from_end:
            start = start or 0
            if stop is not None and stop <= start:
                return []
            return [self._convert(item) for item in self._window(start, stop)][::step]
        positions = range(*index.indices(len(self)))
        if not positions:
            return []
        low, high = min(positions), max(positions)
        window = self._window(low, high + 1)
        return [self._convert(window[i - low]) for i in positions if i - low < len(window)]

    def head(self, n: int = 5) -> list[Any]:
        return self[:n]

    def tail(self, n: int = 5) -> list[Any]:
        return self[-n:] if n else []

    def first(self) -> Any:
        return self[0]

    def last(self) -> Any:
        return self[-1]

    def __repr__(self) -> str:
        return f"<{self._kind} of {self._container!r}>"


__all__ = ["ASCENDING", "DESCENDING", "Container"]

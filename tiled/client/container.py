"""Containers: read-only mappings over ``/search`` with lazy paging, queries, sorting, and the
methods that create children."""

from __future__ import annotations

import collections.abc
import concurrent.futures
import operator
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..mimetypes import SQL_TABLE_MIMETYPE
from ..structures.core import StructureFamily
from ..structures.data_source import DataSource
from .base import BaseClient, check_metadata, specs_json
from .utils import (
    NEVER_SENT,
    NOT_PROCESSED,
    ClientError,
    handle_error,
    json_body,
    path_url,
    with_retries,
)

ASCENDING = 1
DESCENDING = -1
PAGE = 100  # nodes per page of a listing
CONFLICT = 409
# Families whose node's structure is that of its one data source (a create's answer holds it).
SINGLE_SOURCE_FAMILIES = frozenset(
    {
        StructureFamily.array,
        StructureFamily.sparse,
        StructureFamily.table,
        StructureFamily.awkward,
        StructureFamily.ragged,
    }
)


def _query_params(queries: Sequence[Any]) -> list[tuple[str, str]]:
    from ..query_registration import default_query_registry

    params: list[tuple[str, str]] = []
    for query in queries:
        params.extend(default_query_registry.encode_params(query).items())
    return params


def _sort_param(sorting: Sequence[tuple[str, int]]) -> str:
    # The default order ("") is spelled "+" ascending and "-" descending.
    return ",".join((key or "+") if direction > 0 else f"-{key}" for key, direction in sorting)


def _reversed(sorting: Sequence[tuple[str, int]] | None) -> list[tuple[str, int]]:
    """The exact reverse of ``sorting``: each key's direction flipped, and the default order
    that breaks ties (implicitly ascending, last) made explicit and descending."""
    flipped = [(key, -direction) for key, direction in sorting or ()]
    if not any(key in ("", "_") for key, _ in flipped):
        flipped.append(("", -1))
    return flipped


def _next_position(link: str | None) -> tuple[str, str] | None:
    """Where the page after this one starts, from the server's ``next`` link: a cursor
    (upstream's servers and this one, in default order) or an offset; None at the end."""
    if not link:
        return None
    from urllib.parse import parse_qs, urlparse

    query = parse_qs(urlparse(link).query)
    for name in ("page[cursor]", "page[offset]"):
        if query.get(name):
            return name, query[name][0]
    return None


def _paged_items(
    context: Any, route: str, params: list[tuple[str, str]], start: int, stop: int | None
) -> Iterator[dict[str, Any]]:
    """The items of a listing ``route`` from position ``start`` to ``stop`` (the end when
    None), a page at a time, following the server's ``next`` links (cursors or offsets)."""
    position: tuple[str, str] | None = ("page[offset]", str(start))
    remaining = None if stop is None else stop - start
    while position is not None:
        page = context.get_json(route, params=[*params, position])
        for item in page["data"]:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            yield item
        if not page["data"] or remaining == 0:
            return
        position = _next_position((page.get("links") or {}).get("next"))


def _deprecated_indexer(container: Container, kind: str) -> ListView:
    warnings.warn(
        f"Instead of {kind}_indexer[...] use {kind}()[...]. "
        f"The {kind}_indexer accessor is deprecated.",
        DeprecationWarning,
        stacklevel=3,
    )
    return ListView(container, kind)


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

    def _params(self, direction: int = 1) -> list[tuple[str, str]]:
        params = _query_params(self._queries)
        sorting = self._sorting if direction > 0 else _reversed(self._sorting)
        if sorting:
            params.append(("sort", _sort_param(sorting)))
        if self._include_data_sources:
            params.append(("include_data_sources", "true"))
        return params

    def _page(self, offset: int, limit: int, *, keys_only: bool) -> dict:
        params = [*self._params(), ("page[offset]", str(offset)), ("page[limit]", str(limit))]
        if keys_only:
            params.append(("fields", ""))
        return self.context.get_json(f"search/{self._path}", params=params)

    def __len__(self) -> int:
        inlined = self._inlined()
        if inlined is not None:
            return len(inlined)
        return int(self._page(0, 0, keys_only=True)["meta"]["count"])

    def _inlined(self) -> list[dict[str, Any]] | None:
        """The children's items when the server sent them with this node (a dataset's
        variables) and this listing is the node's own: no query, default order."""
        structure = self._item["attributes"].get("structure")
        contents = structure.get("contents") if isinstance(structure, dict) else None
        if contents is None or self._queries or self._sorting:
            return None
        return [{**item, "id": item.get("id", key)} for key, item in contents.items()]

    def _entries(
        self,
        start: int,
        stop: int | None,
        direction: int,
        page_size: int | None = None,
        *,
        keys_only: bool,
        ignore_inlined: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The children's items from ``start`` to ``stop`` (positions counted from the first,
        or from the last when ``direction`` is -1, in which case they come last first).

        Pages of ``page_size`` (the server's default when None) are requested one after the
        other, following the server's ``next`` link (a cursor where it gives one), until
        ``stop`` or the end; no count is needed, not even for positions from the end.
        """
        inlined = None if ignore_inlined else self._inlined()
        if inlined is not None:
            ordered = inlined if direction > 0 else inlined[::-1]
            yield from ordered[start:stop]
            return
        if stop is not None and stop <= start:
            return
        base = self._params(direction)
        if keys_only:
            base.append(("fields", ""))
        if page_size is not None:
            base.append(("page[limit]", str(page_size)))
        yield from _paged_items(self.context, f"search/{self._path}", base, start, stop)

    def _keys_slice(
        self,
        start: int,
        stop: int | None,
        direction: int,
        page_size: int | None = None,
        *,
        _ignore_inlined_contents: bool = False,
    ) -> Iterator[str]:
        """Keys from ``start`` to ``stop`` in ``direction`` (upstream's private name)."""
        for item in self._entries(start, stop, direction, page_size, keys_only=True,
                                  ignore_inlined=_ignore_inlined_contents):  # fmt: skip
            yield item["id"]

    def _items_slice(
        self,
        start: int,
        stop: int | None,
        direction: int,
        page_size: int | None = None,
        *,
        _ignore_inlined_contents: bool = False,
    ) -> Iterator[tuple[str, BaseClient]]:
        """``(key, client)`` pairs from ``start`` to ``stop`` in ``direction``."""
        for item in self._entries(start, stop, direction, page_size, keys_only=False,
                                  ignore_inlined=_ignore_inlined_contents):  # fmt: skip
            yield item["id"], self.client_for_item(item)

    def __iter__(self, *, _ignore_inlined_contents: bool = False) -> Iterator[str]:
        return self._keys_slice(0, None, 1, _ignore_inlined_contents=_ignore_inlined_contents)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, tuple)):
            return False  # as a dict of text keys says of any other key
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def keys(self) -> ListView:  # type: ignore[override]
        return ListView(self, "keys")

    def values(self) -> ListView:  # type: ignore[override]
        return ListView(self, "values")

    def items(self) -> ListView:  # type: ignore[override]
        return ListView(self, "items")

    # Upstream's deprecated spellings of keys(), values() and items().
    @property
    def keys_indexer(self) -> ListView:
        return _deprecated_indexer(self, "keys")

    @property
    def values_indexer(self) -> ListView:
        return _deprecated_indexer(self, "values")

    @property
    def items_indexer(self) -> ListView:
        return _deprecated_indexer(self, "items")

    def __getitem__(self, key: str | tuple[str, ...]) -> BaseClient:
        parts = list(key) if isinstance(key, tuple) else [key]
        if not all(isinstance(part, str) for part in parts):
            # Not str(): c[0] would find a key "0" (positions: c.values()[0]).
            raise TypeError(
                f"Containers are indexed by key (text), not {key!r}; by position: "
                "c.keys()[i], c.values()[i]"
            )
        segments = [s for part in parts for s in part.split("/") if s]
        if not segments:
            return self  # "" or "/": this node, as upstream's client gives it
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

    def _entry_key(self, item: dict[str, Any]) -> str:
        return item["id"]

    def _passes_queries(self, key: str) -> bool:
        from ..queries import KeyLookup

        params = [*_query_params([*self._queries, KeyLookup(key)]), ("fields", "")]
        return bool(self.context.get_json(f"search/{self._path}", params=params)["data"])

    # --- queries ---

    def search(self, query: Any) -> Container:
        """The children matching ``query`` (and every query searched before)."""
        try:
            _query_params([query])  # a query's mistakes are found here, not when listing
        except KeyError:
            raise TypeError(
                f"Not a query: {query!r}; search with one of tiled.queries, e.g. "
                "Key('color') == 'red' or FullText('word')"
            ) from None
        return self.new_variation(queries=[*self._queries, query])

    def search_deep(self, *queries: Any, max_depth: int | None = None) -> DeepSearchResults:
        """The descendants at any depth (at most ``max_depth`` levels down) matching all of
        ``queries``, keyed by their path below this container as a tuple of keys (upstream's
        method; the server must offer ``/search-deep``, as a catalog's does).

        >>> results = client.search_deep(Key("sample") == "abc")
        >>> results[("run1", "scan", "image")]
        """
        if not queries:
            raise TypeError("search_deep() needs at least one query")
        try:
            _query_params(queries)
        except KeyError:
            raise TypeError(f"Not queries: {queries!r}; use tiled.queries") from None
        if "search_deep" not in (self.item.get("links") or {}):
            raise NotImplementedError("This server does not support deep search.")
        return DeepSearchResults(self, queries, max_depth)

    def sort(self, *sorting: tuple[str, int]) -> Container:
        """The children sorted by metadata keys: ``c.sort(("color", ASCENDING), ("x", -1))``."""
        pairs = []
        for entry in sorting:
            try:
                key, direction = entry
                if not isinstance(key, str):
                    raise TypeError
                # As upstream: any negative number is descending, anything else ascending.
                pairs.append((key, DESCENDING if direction < 0 else ASCENDING))
            except (TypeError, ValueError):
                raise TypeError(
                    "Sort by (key, direction) pairs, direction ASCENDING (1) or DESCENDING "
                    f"(-1), e.g. c.sort(('color', ASCENDING)); not {entry!r}"
                ) from None
        return self.new_variation(sorting=pairs)

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
        metadata = check_metadata(metadata)
        sources = [s.to_json() if hasattr(s, "to_json") else dict(s) for s in data_sources]
        body: dict[str, Any] = {
            "structure_family": str(getattr(structure_family, "value", structure_family)),
            "metadata": dict(metadata or {}),
            "specs": specs_json(specs),
            "data_sources": sources,
        }
        if key is not None and not isinstance(key, str):
            raise TypeError(f"A key is text, not {key!r}")
        # Named here when not given (as the server would name it): every attempt of this
        # create names the same node, so a retry after an answer that was lost finds it.
        body["id"] = key or uuid.uuid4().hex
        if access_tags is not None:
            body["access_tags"] = list(access_tags)
        route = "register" if any(s.get("assets") for s in sources) else "metadata"
        content = json_body(body)
        response, maybe_made = self._post_create(f"{route}/{self._path}", content)
        sent = orjson.loads(content["content"])  # what the server got: metadata as JSON
        if response.status_code == CONFLICT and maybe_made:
            adopted = self._own_node(sent)
            if adopted is not None:
                return adopted
        created = handle_error(response).json()
        item = self._created_item(sent, created)
        return self._child(created["id"]) if item is None else self.client_for_item(item)

    def _post_create(self, path: str, content: dict[str, Any]) -> tuple[Any, bool]:
        """POST a create, retried as a read is (it names its node: a second attempt cannot
        make a second node, it finds the name taken); the last answer, and whether an
        attempt before it may have made the node (its answer lost, or a server error)."""
        import httpx

        url = self.context.url(path)
        maybe_made = False

        def send() -> httpx.Response:
            nonlocal maybe_made
            with self.context.throttle():
                try:
                    response = self.context.http_client.request("POST", url, **content)
                except NEVER_SENT:
                    raise
                except httpx.TransportError:
                    maybe_made = True
                    raise
            if response.status_code >= 500 and response.status_code not in NOT_PROCESSED:
                maybe_made = True
            return response

        return with_retries(send, context=self.context), maybe_made

    def _own_node(self, sent: dict[str, Any]) -> BaseClient | None:
        """The node under the key of a create whose answer was lost (the retry was told the
        name is taken), if it is the one that create made: same family, specs and metadata.
        None where it differs (another writer's node: the conflict stands)."""
        try:
            existing = self._child(sent["id"])
        except (KeyError, ClientError):
            return None
        attributes = existing.item["attributes"]
        same = (
            attributes.get("structure_family") == sent["structure_family"]
            and specs_json(attributes.get("specs") or []) == sent["specs"]
            and attributes.get("metadata") == sent["metadata"]
        )
        return existing if same else None

    def _created_item(self, sent: dict[str, Any], created: dict[str, Any]) -> dict | None:
        """The document of a node just made, from the request and the server's answer (as
        upstream's client builds it: no second request), or None for the families whose
        structure the answer does not hold."""
        family = sent["structure_family"]
        sources = created.get("data_sources", sent["data_sources"])
        if family == StructureFamily.container:
            structure = {"contents": None, "count": None}
        elif family in SINGLE_SOURCE_FAMILIES and len(sources) == 1:
            structure = sources[0].get("structure")
        else:
            return None
        attributes = {
            "ancestors": list(self.path_parts),
            "structure_family": family,
            "specs": sent["specs"],
            "metadata": created.get("metadata", sent["metadata"]),
            "structure": structure,
            "access_tags": created.get("access_tags", sent.get("access_tags")),
            "data_sources": sources,
        }
        return {"id": created["id"], "links": created.get("links", {}), "attributes": attributes}

    def register(
        self,
        *uris: str | Path,
        key: str | None = None,
        structure: Any = None,
        mimetype: str | None = None,
        parameters: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Register external files as one new node (the files stay where they are; the
        server reads them, so they must lie in its readable storage).

        Several files make one dataset (a stack of images, a table's partitions), in the
        order given; one directory may be a store (zarr). The files are opened here first, as
        the server will open them (with ``parameters``, which are kept for it), to find the
        structure, metadata and specs. ``structure`` overrides the structure found, if it
        fits the data (same data type and number of elements, or same columns); ValueError
        otherwise. ``metadata`` is merged over the files' own. Returns the node's client.
        """
        from .register import Settings, describe, item_for_uris

        metadata = check_metadata(metadata)
        settings = Settings.init()
        item = item_for_uris(uris, mimetype, parameters, settings)
        node = describe(item, settings)
        (source,) = node["data_sources"]
        source["properties"] = {}  # the walk's change detection has no use here
        if structure is not None:
            source["structure"], source["properties"] = _overridden(
                node["structure_family"], structure, source["structure"]
            )
        return self.new(
            node["structure_family"],
            [source],
            key=key,
            metadata={**node["metadata"], **(metadata or {})},
            specs=specs,
            access_tags=access_tags,
        )

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
        data: Any = None,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
        dataframe: Any = None,
    ) -> BaseClient:
        """Store a table (pandas or dask DataFrame, or a dict of columns) as a new table
        node; a dask frame's partitions become the table's partitions. ``data`` is
        upstream's name of the table (``dataframe=`` is taken too)."""
        from ..structures.table import TableStructure
        from .dataframe import as_partitions, schema_of

        if dataframe is not None:
            if data is not None:
                raise TypeError("Give the table as data=..., not also as dataframe=...")
            data = dataframe
        elif data is None:
            raise TypeError("write_dataframe() missing the table: write_dataframe(data)")
        partitions, meta = as_partitions(data)
        # A pandas frame's column types are read from its values, not its empty head: an
        # object column (text, bytes, lists) would be Arrow's null type without its values.
        schema = schema_of(partitions[0] if len(partitions) == 1 else meta, meta)
        structure = TableStructure.from_arrow_schema(schema, len(partitions))
        source = DataSource(StructureFamily.table, structure)  # stored by the server
        client = self.new(
            "table", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        for number, partition in enumerate(partitions):
            client.write_partition(number, partition)  # type: ignore[attr-defined]
        return client

    write_table = write_dataframe

    def create_appendable_table(
        self,
        schema: Any,
        npartitions: int = 1,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
        table_name: str | None = None,
    ) -> BaseClient:
        """A new, empty table of ``schema`` (a ``pyarrow.Schema``) whose partitions grow by
        ``append_partition(partition, dataframe)``, each append visible whole or not at all.
        The server keeps the rows in its SQL storage, in the SQL table ``table_name`` (by
        default one shared by all tables of this schema)."""
        from ..structures.table import TableStructure

        structure = TableStructure.from_arrow_schema(schema, npartitions)
        source = DataSource(
            StructureFamily.table, structure, mimetype=SQL_TABLE_MIMETYPE,
            parameters={} if table_name is None else {"table_name": table_name},
        )  # fmt: skip
        return self.new(
            "table", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )

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

    def write_awkward(
        self,
        array: Any,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
    ) -> BaseClient:
        """Store an awkward array (packed first: only the data it shows are sent)."""
        import awkward

        from ..structures.awkward import AwkwardStructure

        form, length, buffers = awkward.to_buffers(awkward.to_packed(array))
        structure = AwkwardStructure(length=length, form=form.to_dict())
        source = DataSource(StructureFamily.awkward, structure)  # stored by the server
        client = self.new(
            "awkward", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        client.write(buffers)  # type: ignore[attr-defined]
        return client

    def write_ragged(
        self,
        array: Any,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
        max_partition_bytes: int | None = None,
        appendable: bool = True,
    ) -> BaseClient:
        """Store a ragged array (a ragged or awkward array, or nested lists), in chunks of
        rows of at most ``max_partition_bytes`` (default ``WRITE_CHUNK_BYTES``); rows can
        be appended later with ``patch(..., extend=True)``."""
        from ..structures.ragged import RaggedStructure, make_ragged_array, make_ragged_chunks
        from .array import WRITE_CHUNK_BYTES

        if not appendable:
            raise NotImplementedError("appendable=False is not implemented")
        array = make_ragged_array(array)
        chunks = make_ragged_chunks(array, max_partition_bytes or WRITE_CHUNK_BYTES)
        structure = RaggedStructure.from_array(array, chunks=chunks, dims=dims)
        source = DataSource(StructureFamily.ragged, structure)  # stored by the server
        client = self.new(
            "ragged", [source], key=key, metadata=metadata, specs=specs, access_tags=access_tags
        )
        start = 0
        for block, rows in enumerate(structure.chunks[0]):
            rows_of_block = make_ragged_array(array, slice=(slice(start, start + rows),))
            client.write_block(rows_of_block, block)  # type: ignore[attr-defined]
            start += rows
        return client

    def delete_contents(
        self,
        keys: str | Sequence[str] | None = None,
        recursive: bool = False,
        external_only: bool = True,
    ) -> Container:
        """Delete the children ``keys`` (default: all of them; a key given twice is deleted
        once). Returns this container, as upstream's client does."""
        if keys is None:
            keys = list(self)
        elif isinstance(keys, str):
            keys = [keys]
        keys = list(dict.fromkeys(keys))
        params = {"recursive": str(recursive).lower(), "external_only": str(external_only).lower()}
        with concurrent.futures.ThreadPoolExecutor(self.context.max_connections) as pool:
            list(pool.map(
                lambda key: self.context.request(
                    "DELETE", f"metadata/{path_url([*self.path_parts, key])}", params=params
                ),
                keys,
            ))  # fmt: skip
        return self

    def export(
        self, filepath: Any, fields: Sequence[str] | None = None, *, format: str | None = None
    ) -> None:
        """Write the container (or only its children ``fields``) to ``filepath``, as
        upstream's ``Container.export``."""
        params = {"field": list(fields)} if fields else {}
        super().export(filepath, format=format, **params)

    _export_route = "container/full"

    def subscribe(self, executor: concurrent.futures.Executor | None = None) -> Any:
        """Live updates of this container (nodes created in it, metadata changed): a
        :class:`~tiled.client.stream.ContainerSubscription`; see the how-to on streaming."""
        from .stream import ContainerSubscription

        return ContainerSubscription(
            self.context, self.path_parts, executor, self.structure_clients
        )

    def __repr__(self) -> str:
        try:
            keys = self.keys()[:10]
            count = len(self)
        except Exception:  # a repr must not fail
            return f"<{type(self).__name__} /{'/'.join(self.path_parts)}>"
        more = ", ..." if count > len(keys) else ""
        listed = ", ".join(repr(k) for k in keys)
        return f"<{type(self).__name__} {{{listed}{more}}}>"


def _overridden(
    family: str, structure: Any, found: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(structure, properties)`` of a registration whose structure the caller gives: the
    given one if it can serve the data found (an array of the same data type and number of
    elements, a table of the same column types), with the files' own chunks recorded when
    they differ (the server reads the files by those); ValueError otherwise."""
    from ..structures.families import structure_from_json

    given = structure if isinstance(structure, dict) else structure.to_json()
    provided, inferred = (structure_from_json(family, s) for s in (given, found))
    check = _COMPATIBLE.get(family)
    if check is None or not check(provided, inferred):
        raise ValueError(
            "The provided structure is not compatible with the structure read from the "
            f"file(s).\n  provided: {provided!r}\n  inferred: {inferred!r}"
        )
    properties: dict[str, Any] = {}
    if family == "array" and given.get("chunks") != found.get("chunks"):
        properties["chunks"] = found.get("chunks")
    return given, properties


def _same_elements(provided: Any, inferred: Any) -> bool:
    import math

    return provided.data_type == inferred.data_type and math.prod(provided.shape) == math.prod(
        inferred.shape
    )


def _same_columns(provided: Any, inferred: Any) -> bool:
    ours, theirs = provided.arrow_schema_decoded, inferred.arrow_schema_decoded
    return [f.type for f in ours] == [f.type for f in theirs]


# Whether a given structure can serve data of the structure found, by family.
_COMPATIBLE = {"array": _same_elements, "table": _same_columns}


class DeepSearchResults(collections.abc.Mapping):
    """The matches of :meth:`Container.search_deep`: client nodes keyed by their path (a
    tuple of keys) below the container searched, in the order the nodes were made, read a
    page at a time. ``keys()``, ``values()`` and ``items()`` are sliceable views (read from
    the first match; positions from the end are refused)."""

    def __init__(self, container: Container, queries: Sequence[Any], max_depth: int | None):
        self._container = container
        self._queries = list(queries)
        self._max_depth = max_depth
        self._path = container._path

    def _params(self) -> list[tuple[str, str]]:
        params = _query_params(self._queries)
        if self._max_depth is not None:
            params.append(("max_depth", str(self._max_depth)))
        if self._container._include_data_sources:
            params.append(("include_data_sources", "true"))
        return params

    def __len__(self) -> int:
        page = self._container.context.get_json(
            f"search-deep/{self._path}", params=[*self._params(), ("fields", "count")]
        )
        return int(page["meta"]["count"])

    # What ListView reads: pages of items, a key for each, a client for each.
    def _entries(
        self, start: int, stop: int | None, direction: int, page_size: int | None = None,
        *, keys_only: bool = False,
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        if direction < 0:
            raise NotImplementedError("Deep search results are read from the first match")
        if stop is not None and stop <= start:
            return
        base = self._params()
        if page_size is not None:
            base.append(("page[limit]", str(page_size)))
        route = f"search-deep/{self._path}"
        yield from _paged_items(self._container.context, route, base, start, stop)

    def _entry_key(self, item: dict[str, Any]) -> tuple[str, ...]:
        path = (*item["attributes"]["ancestors"], item["id"])
        return tuple(path[len(self._container.path_parts) :])

    def client_for_item(self, item: dict[str, Any]) -> BaseClient:
        return self._container.client_for_item(item)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self.keys())

    def keys(self) -> ListView:  # type: ignore[override]
        return ListView(self, "keys")  # type: ignore[arg-type]

    def values(self) -> ListView:  # type: ignore[override]
        return ListView(self, "values")  # type: ignore[arg-type]

    def items(self) -> ListView:  # type: ignore[override]
        return ListView(self, "items")  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[str, ...] | str) -> BaseClient:
        wanted = (
            tuple(part for part in key.split("/") if part) if isinstance(key, str) else tuple(key)
        )
        for item in self._entries(0, None, 1):
            if self._entry_key(item) == wanted:
                return self.client_for_item(item)
        raise KeyError(key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({len(self)} matches)>"


class ListView(collections.abc.Sequence):
    """The keys, values or items of a container, fetched lazily, sliceable.

    Indexing and slicing read only the entries asked for, in pages of at most the slice's
    length (or of ``page_size(n)``): positions counted from the end are read in reverse
    order, so ``last()``, ``tail()`` and ``[-3:]`` cost one request and no count.
    """

    def __init__(self, container: Container, kind: str, page_size: int | None = None):
        self._container = container
        self._kind = kind
        self._page_size = page_size

    def page_size(self, n: int) -> ListView:
        """This view, reading pages of at most ``n`` entries."""
        if n < 1:
            raise ValueError(f"The page size must be positive, not {n}")
        return ListView(self._container, self._kind, n)

    def _convert(self, item: dict[str, Any]) -> Any:
        key = self._container._entry_key(item)
        if self._kind == "keys":
            return key
        client = self._container.client_for_item(item)
        return client if self._kind == "values" else (key, client)

    def _read(self, start: int, stop: int | None, direction: int) -> list[Any]:
        page_size = self._page_size
        if stop is not None:
            page_size = max(stop - start, 1) if page_size is None else min(page_size, stop - start)
        entries = self._container._entries(
            start, stop, direction, page_size, keys_only=self._kind == "keys"
        )
        return [self._convert(item) for item in entries]

    def __len__(self) -> int:
        return len(self._container)

    def __iter__(self) -> Iterator[Any]:
        entries = self._container._entries(
            0, None, 1, self._page_size, keys_only=self._kind == "keys"
        )
        for item in entries:
            yield self._convert(item)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._slice(index)
        index = operator.index(index)
        # A position from the end is a position from the start of the reversed listing.
        start, direction = (index, 1) if index >= 0 else (-1 - index, -1)
        found = self._read(start, start + 1, direction)
        if not found:
            raise IndexError(f"{self._kind[:-1]} index {index} out of range")
        return found[0]

    def _slice(self, index: slice) -> list[Any]:
        """Python's slice semantics, reading only the entries the slice spans. Bounds given
        all from the start, or all from the end, need no count; mixed bounds need one."""
        step = 1 if index.step is None else operator.index(index.step)
        if step == 0:
            raise ValueError("slice step cannot be zero")
        start, stop = (None if v is None else operator.index(v) for v in (index.start, index.stop))
        given = [v for v in (start, stop) if v is not None]
        from_start = all(v >= 0 for v in given) and (step > 0 or start is not None)
        from_end = all(v < 0 for v in given)
        if not (from_start or from_end):
            start, stop, step = index.indices(len(self))
            from_start, from_end = True, False
            if step < 0 and stop < 0:
                stop = None  # down to the first entry
        if from_start and step > 0:
            found = self._read(start or 0, stop, 1)
        elif from_start:  # backwards from ``start`` (inclusive) to ``stop`` (exclusive)
            low = 0 if stop is None else stop + 1
            found = self._read(low, start + 1, 1)[::-1]
        elif step > 0:  # forwards, counted from the end: read in reverse, then turn around
            low = 0 if stop is None else -stop
            found = self._read(low, None if start is None else -start, -1)[::-1]
        else:  # backwards, counted from the end
            low = 0 if start is None else -1 - start
            found = self._read(low, None if stop is None else -1 - stop, -1)
        return found[:: abs(step)]

    def head(self, n: int = 5) -> list[Any]:
        return self[:n]

    def tail(self, n: int = 5) -> list[Any]:
        return self[-n:] if n > 0 else []

    def first(self) -> Any:
        return self[0]

    def last(self) -> Any:
        return self[-1]

    def __repr__(self) -> str:
        return f"<{self._kind} of {self._container!r}>"


__all__ = ["ASCENDING", "DESCENDING", "Container"]

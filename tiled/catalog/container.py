"""Catalog containers: listings, lookups, search, sorting and distinct values answered in SQL.

A container adapter holds no children: each listing is a query. ``search`` and ``sort``
return variations carrying more SQL conditions or another order; ``filter`` (used by access
policies) carries Python predicates applied lazily while pages of rows are read. Every method
that touches the database is async: ``count``, ``keys_range``, ``items_range``, ``get``,
``lookup_adapter``, ``get_distinct``, ``create_node``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select

from .. import stream_messages
from ..adapters.base import (
    XARRAY_COORDINATE_SPEC,
    ContainerAdapterBase,
    is_group,
    xarray_dataset_attributes,
)
from ..adapters.mapping import SortingItem, distinct_at, distinct_values, normalize_sorting
from ..adapters.zarr_writable import ZARR_MIMETYPE
from ..errors import BadRequest, Conflict, InvalidKey, NoSuchEntry, Unsupported
from ..queries import SpecsQuery
from ..structures.array import ArrayStructure, BuiltinDtype
from ..structures.core import Spec, StructureFamily
from ..structures.data_source import DataSource
from ..utils import run_sync
from ..zarr_format.model import regular_chunks
from ..zarr_format.submitted import SubmittedArray
from . import webhooks as webhook_events
from .access import tags_of_node
from .core import Catalog, NodeRecord, join_path
from .creation import check_key, create_child, register_children
from .nodes import CatalogNode, ListedNode, UnavailableNode, is_registered, open_node
from .orm import ROOT_ID, nodes, nodes_closure
from .queries import condition_for
from .records import fetch_records, lookup_parameters, lookup_query, path_ids, records_query
from .streams import close_stream

DEFAULT_SORTING = (SortingItem("", 1),)
_GIVEN_ORDER = frozenset({"", "_"})
_KEY_ORDER = frozenset({"id"})
PAGE = 100  # rows read at a time when Python predicates filter a listing
MAX_JOINED_STEPS = 32  # path segments resolved by one statement (one join each)

Predicate = Callable[[str, Any], bool]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogContainerStructure:
    """A container's structure: its number of children (None when not known without a query)."""

    count: int | None

    def to_json(self, contents: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"contents": contents, "count": self.count}


class CatalogContainerBase(ContainerAdapterBase):
    """The listing, search and creation shared by the root and the container nodes."""

    def __init__(
        self,
        catalog: Catalog,
        segments: tuple[str, ...],
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
        access_blob: dict[str, Any] | None = None,
        child_count: int | None = None,
        node_id: int = ROOT_ID,
    ):
        super().__init__(None, metadata=metadata, specs=specs)
        self._catalog = catalog
        self._node_id = node_id
        self._segments = tuple(segments)
        self._path = "/".join(self._segments)
        self.access_blob = access_blob
        self._child_count = child_count
        self._conditions: tuple[Any, ...] = ()
        self._predicates: tuple[Predicate, ...] = ()
        self.sorting: list[SortingItem] = list(DEFAULT_SORTING)
        self.must_revalidate = True
        # A deep variation (search_deep) spans every descendant, not only the children.
        self._deep = False
        self._max_depth: int | None = None

    @property
    def access_tags(self) -> frozenset[str]:
        return tags_of_node(self.access_blob)

    def exclusive(self, *below: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Writers of this node (or of its descendant ``below``) one at a time, in every
        process (see :class:`~tiled.adapters.protocols.ExcludesWriters`)."""
        return self._catalog.exclusive("/".join((*self._segments, *below)))

    # --- variations ---

    def new_variation(self, **changes: Any) -> CatalogContainerBase:
        variation = copy.copy(self)
        for name, value in changes.items():
            setattr(variation, name, value)
        return variation

    @property
    def is_plain(self) -> bool:
        """Whether this is the node's own listing (no search, no filter, not deep)."""
        return not self._conditions and not self._predicates and not self._deep

    def search(self, query: Any) -> CatalogContainerBase:
        """A variation listing only the children matching ``query`` (evaluated in SQL)."""
        condition = condition_for(query, self._catalog.dialect)
        return self.new_variation(_conditions=(*self._conditions, condition))

    def sort(self, sorting: Iterable[Any]) -> CatalogContainerBase:
        """A variation ordered by dotted metadata keys (missing values last); "" = insertion."""
        items = normalize_sorting(sorting) or list(DEFAULT_SORTING)
        return self.new_variation(sorting=items)

    def search_deep(self, max_depth: int | None = None) -> CatalogContainerBase:
        """A variation spanning all descendants (at most ``max_depth`` levels down) instead of
        the children: its searches, counts and distinct values cover the whole subtree, and
        ``items_range`` gives each match under its path below this node (``"a/b/c"``), in
        the order the nodes were made. Other listings are refused: a descendant's key alone
        does not say where it is.
        """
        if max_depth is not None and max_depth < 1:
            raise BadRequest(f"max_depth must be at least 1, not {max_depth}")
        return self.new_variation(_deep=True, _max_depth=max_depth)

    def filter(self, predicate: Predicate) -> CatalogContainerBase:
        """A variation keeping the children for which ``predicate(key, child)`` is true."""
        return self.new_variation(_predicates=(*self._predicates, predicate))

    # --- structure ---

    def structure(self) -> CatalogContainerStructure:
        return CatalogContainerStructure(self._child_count if self.is_plain else None)

    def __len__(self) -> int:
        if self._child_count is None or not self.is_plain:
            raise TypeError(
                "The number of children of a catalog container needs a query: use `await count()`"
            )
        return self._child_count

    # --- SQL ---

    def _where(self) -> list[Any]:
        if not self._deep:
            return [nodes.c.parent == self._node_id, *self._conditions]
        # The closure table holds every (ancestor, descendant, depth): one indexed lookup.
        below = select(nodes_closure.c.descendant).where(
            nodes_closure.c.ancestor == self._node_id, nodes_closure.c.depth >= 1
        )
        if self._max_depth is not None:
            below = below.where(nodes_closure.c.depth <= self._max_depth)
        return [nodes.c.id.in_(below), *self._conditions]

    def _order_for(self, table: Any) -> list[Any]:
        """The listing's ORDER BY on ``table`` (the nodes table or a subquery of it)."""
        order: list[Any] = []
        for item in self.sorting:
            if item.key in _GIVEN_ORDER:
                order.append(table.c.id.desc() if item.direction < 0 else table.c.id.asc())
                return order
            if item.key in _KEY_ORDER:  # upstream's standard sort key: the node's key
                order.append(table.c.key.desc() if item.direction < 0 else table.c.key.asc())
                continue
            key = item.key.removeprefix("metadata.")  # the namespaced spelling of a metadata key
            value = self._catalog.dialect.sort_key(table.c.metadata, key)
            order += [value.is_(None), value.desc() if item.direction < 0 else value.asc()]
        return [*order, table.c.id.asc()]

    def _refuse_deep_listing(self) -> None:
        if self._deep:
            raise Unsupported(
                "A deep variation (search_deep) answers counts, searches, distinct values "
                "and pages of items under their paths; list each container's keys instead"
            )

    async def _records(self, offset: int, limit: int | None) -> list[NodeRecord]:
        query = records_query(self._where(), self._order_for, offset, limit)
        async with self._catalog.connect() as connection:
            records = await fetch_records(connection, query, self._path)
            if self._deep:
                await self._place_below(connection, records)
            return records

    async def _place_below(self, connection: Any, records: list[NodeRecord]) -> None:
        """Give each record of a deep listing its parent's path (each has its own): the keys
        of its ancestors strictly between this node and it."""
        if not records:
            return
        step, below = nodes_closure.alias("step"), nodes_closure.alias("below")
        # Driven from each record's own closure rows (an index lookup each), not from every
        # descendant of this node.
        steps = (
            select(step.c.descendant, nodes.c.key)
            .select_from(
                step.join(
                    below,
                    and_(
                        below.c.descendant == step.c.descendant, below.c.ancestor == self._node_id
                    ),
                ).join(nodes, nodes.c.id == step.c.ancestor)
            )  # fmt: skip
            .where(
                step.c.descendant.in_([record.id for record in records]),
                step.c.depth >= 1,
                step.c.depth < below.c.depth,
            )
            .order_by(step.c.descendant, step.c.depth.desc())
        )
        between: dict[int, list[str]] = {}
        for descendant, key in (await connection.execute(steps)).all():
            between.setdefault(descendant, []).append(key)
        for record in records:
            keys = between.get(record.id)
            record.parent = join_path(self._path, "/".join(keys)) if keys else self._path

    def relative_key(self, record_path: str) -> str:
        """A record's path below this node (its key, for a child)."""
        return record_path[len(self._path) + 1 :] if self._path else record_path

    async def _adapters(
        self, records: list[NodeRecord], open_registered: bool = True
    ) -> list[tuple[str, Any]]:
        return await adapters_for(self._catalog, records, open_registered)

    async def _sql_items(self, offset: int, limit: int | None) -> list[tuple[str, Any]]:
        # A listing shows registered nodes from their rows: it opens none of their files.
        records = await self._records(offset, limit)
        items = await self._adapters(records, open_registered=False)
        if self._deep:  # each under its path below this node
            return [
                (self.relative_key(r.path), child)
                for r, (_, child) in zip(records, items, strict=True)
            ]
        return items

    async def _visible_items(self) -> AsyncIterator[tuple[str, Any]]:
        """Children passing the predicates, read a page at a time."""
        offset = 0
        while True:
            page = await self._sql_items(offset, PAGE)
            for key, child in page:
                if all(predicate(key, child) for predicate in self._predicates):
                    yield key, child
            if len(page) < PAGE:
                return
            offset += PAGE

    # --- listing ---

    async def count(self) -> int:
        if self._predicates:
            return sum([1 async for _ in self._visible_items()])
        if self.is_plain and self._child_count is not None:
            return self._child_count
        query = select(func.count()).select_from(nodes).where(*self._where())
        async with self._catalog.connect() as connection:
            return (await connection.execute(query)).scalar_one()

    async def items_range(self, offset: int = 0, limit: int | None = None) -> list[tuple[str, Any]]:
        if not self._predicates:
            return await self._sql_items(offset, limit)
        found: list[tuple[str, Any]] = []
        position = 0
        async for item in self._visible_items():
            if limit is not None and len(found) >= limit:
                break
            if position >= offset:
                found.append(item)
            position += 1
        return found

    # --- keyset pages (in insertion order only): stable while children are added ---

    @property
    def _keyset_direction(self) -> int | None:
        """1 or -1 when the listing is in insertion order (forwards or backwards) and filtered
        in SQL only, so that a page can start after a node id; else None."""
        if (
            self._predicates or self._deep or len(self.sorting) != 1
            or self.sorting[0].key not in _GIVEN_ORDER
        ):  # fmt: skip
            return None
        return 1 if self.sorting[0].direction > 0 else -1

    async def cursor_for_offset(self, offset: int) -> int | None:
        """The cursor (node id) of the entry before ``offset``; None at 0, past the end, or
        when the order does not allow cursors (sorted by metadata, filtered in Python)."""
        if offset <= 0 or self._keyset_direction is None:
            return None
        query = (
            select(nodes.c.id).where(*self._where()).order_by(*self._order_for(nodes))
            .offset(offset - 1).limit(1)
        )  # fmt: skip
        async with self._catalog.connect() as connection:
            return (await connection.execute(query)).scalar_one_or_none()

    async def items_page(
        self, cursor: int | None = None, limit: int | None = None
    ) -> tuple[list[tuple[str, Any]], int | None]:
        """``(items, next cursor)``: up to ``limit`` children after the node id ``cursor``
        (from the first when None); the next cursor is None on the last page."""
        direction = self._keyset_direction
        if direction is None:
            if cursor is not None:
                raise BadRequest("page[cursor] applies to the default (insertion) order only")
            return await self.items_range(0, limit), None
        where = self._where()
        if cursor is not None:
            where = [*where, nodes.c.id > cursor if direction > 0 else nodes.c.id < cursor]
        if limit == 0:
            return [], None
        query = records_query(where, self._order_for, 0, None if limit is None else limit + 1)
        async with self._catalog.connect() as connection:
            records = await fetch_records(connection, query, self._path)
        following = None
        if limit is not None and len(records) > limit:
            records = records[:limit]
            following = records[-1].id
        return await self._adapters(records, open_registered=False), following

    async def keys_range(self, offset: int = 0, limit: int | None = None) -> list[str]:
        self._refuse_deep_listing()
        if self._predicates:
            return [key for key, _ in await self.items_range(offset, limit)]
        query = select(nodes.c.key).where(*self._where()).order_by(*self._order_for(nodes))
        query = query.offset(offset or None).limit(limit)
        async with self._catalog.connect() as connection:
            return list((await connection.execute(query)).scalars())

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        return await self.keys_range(offset, limit)

    async def get(self, key: str, default: Any = None) -> Any:
        """The child ``key`` if this (possibly searched or filtered) listing has it."""
        self._refuse_deep_listing()
        query = records_query([*self._where(), nodes.c.key == key])
        async with self._catalog.connect() as connection:
            records = await fetch_records(connection, query, self._path)
        if not records:
            return default
        ((_, child),) = await self._adapters(records)
        if not all(predicate(key, child) for predicate in self._predicates):
            return default
        return child

    async def zarr_member(self, key: str) -> Any:
        child = await self.get(key)
        if child is None:
            raise NoSuchEntry(self._catalog.node_at((*self._segments, key)))
        return child

    async def lookup_adapter(self, segments: Sequence[str]) -> Any:
        """The node at ``segments`` below this one, found with one query.

        Navigation ignores searches and filters (as path lookups do everywhere); a path that
        continues inside a table (its columns) costs one more query to find the table.
        """
        if not segments:
            return self
        if len(segments) > MAX_JOINED_STEPS:
            # SQLite joins at most 64 tables: a longer path is resolved a stretch at a time.
            head = await self.lookup_adapter(segments[:MAX_JOINED_STEPS])
            if not is_group(head):
                raise NoSuchEntry(self._catalog.node_at((*self._segments, *segments)))
            return await head.lookup_adapter(segments[MAX_JOINED_STEPS:])
        path = join_path(self._path, "/".join(segments))
        cached, generation = await self._catalog.cached_lookup(path)
        if cached is not None:
            return cached
        parent = path.rpartition("/")[0]
        async with self._catalog.connect() as connection:
            records = await fetch_records(
                connection,
                lookup_query(len(segments)),
                parent,
                lookup_parameters(self._node_id, segments),
            )
            if not records:
                adapter = await self._lookup_inside(connection, list(segments))
                self._catalog.remember_lookup(path, adapter, generation)
                return adapter
        adapter = (await self._adapters(records))[0][1]
        self._catalog.remember_lookup(path, adapter, generation)
        return adapter

    async def _lookup_inside(self, connection: Any, segments: list[str]) -> Any:
        """A path that goes on below a node with members of its own: a table's columns, the
        members of a registered HDF5 file or zarr group (at any depth)."""
        missing = NoSuchEntry(self._catalog.node_at((*self._segments, *segments)))
        if len(segments) < 2:
            raise missing
        ids = (await connection.execute(path_ids(self._node_id, segments[:-1]))).one_or_none()
        found = [node_id for node_id in (ids or ()) if node_id is not None]
        if not found:
            raise missing
        depth = len(found)
        node_path = join_path(self._path, "/".join(segments[:depth]))
        # A registered file is opened once for a burst of requests inside it (zarr chunks).
        node, generation = await self._catalog.cached_lookup(node_path)
        if node is None:
            # (Not join_path: at depth 1 the parent is this node, whose path has no '/' after.)
            parent = "/".join((*self._segments, *segments[: depth - 1]))
            query = records_query([nodes.c.id == found[-1]])
            records = await fetch_records(connection, query, parent)
            deepest = records[0] if records else None
            if deepest is None or not has_members_of_its_own(deepest):
                raise missing
            ((_, node),) = await self._adapters([deepest])
            self._catalog.remember_lookup(node_path, node, generation)
        elif isinstance(node, CatalogContainerBase):
            raise missing  # its children are rows, and the query found none there
        if isinstance(node, UnavailableNode):
            raise node.unavailable()  # whatever lies inside it, this server cannot read it
        if not is_group(node):
            raise missing
        return await node.lookup_adapter(segments[depth:])

    # --- distinct values ---

    async def get_distinct(
        self, metadata: Sequence[str] = (), structure_families: bool = False,
        specs: bool = False, counts: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Distinct metadata values, families and spec lists among the listed children."""
        if self._predicates:
            return await self._distinct_in_python(metadata, structure_families, specs, counts)
        result: dict[str, Any] = {"metadata": None, "structure_families": None, "specs": None}
        async with self._catalog.connect() as connection:
            if metadata:
                result["metadata"] = {
                    key: await self._distinct(
                        connection, self._catalog.dialect.json_value(nodes.c.metadata, key), counts
                    )
                    for key in metadata
                }
            if structure_families:
                result["structure_families"] = await self._distinct(
                    connection, nodes.c.structure_family, counts
                )
            if specs:
                result["specs"] = await self._distinct(connection, nodes.c.specs, counts)
        return result

    async def _distinct(self, connection: Any, value: Any, counts: bool) -> list[dict[str, Any]]:
        first = func.min(nodes.c.id)
        query = (
            select(value.label("value"), func.count().label("count"))
            .where(*self._where(), value.is_not(None))
            .group_by(value)
            .order_by(first)
        )
        rows = (await connection.execute(query)).all()
        if counts:
            return [{"value": row.value, "count": row.count} for row in rows]
        return [{"value": row.value} for row in rows]

    async def _distinct_in_python(
        self, metadata: Sequence[str], structure_families: bool, specs: bool, counts: bool
    ) -> dict[str, Any]:
        children = [child async for _, child in self._visible_items()]
        result: dict[str, Any] = {"metadata": None, "structure_families": None, "specs": None}
        if metadata:
            result["metadata"] = {key: distinct_at(children, key, counts) for key in metadata}
        if structure_families:
            result["structure_families"] = distinct_values(
                (str(c.structure_family) for c in children), counts
            )
        if specs:
            result["specs"] = distinct_values(
                ([s.to_json() for s in c.specs] for c in children), counts
            )
        return result

    # --- zarr ---

    async def to_zarr_meta(self, options: Any = None) -> Any:
        if not any(spec.name == "xarray_dataset" for spec in self.specs):
            return await super().to_zarr_meta(options)
        # The default asks for children synchronously; here they come from one query.
        from ..zarr_format.model import ZarrGroupMeta

        coordinates = await self.search(SpecsQuery([XARRAY_COORDINATE_SPEC])).keys_range()
        return ZarrGroupMeta(attributes=xarray_dataset_attributes(self, coordinates))

    # --- writing ---

    async def create_node(
        self,
        *,
        key: str | None = None,
        structure_family: StructureFamily | str,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Spec | str | dict] | None = None,
        data_sources: Sequence[Any] = (),
        access_blob: dict[str, Any] | None = None,
        register: bool = False,
    ) -> Any:
        """Create a child with its storage; all or nothing. See :mod:`tiled.catalog.creation`."""
        record = await create_child(
            self._catalog, self._node_id, self._path, key=key, structure_family=structure_family,
            metadata=metadata, specs=specs, data_sources=data_sources,
            access_blob=access_blob, register=register,
        )  # fmt: skip
        if self._child_count is not None:
            self._child_count += 1  # counts are a snapshot taken with the row; keep ours true
        await self._announce_created([record])
        # Registration has just opened the files; the answer needs only the row.
        ((_, child),) = await self._adapters([record], open_registered=False)
        return child

    async def create_zarr_array(
        self, key: str, array: SubmittedArray, *, access_blob: dict[str, Any] | None = None
    ) -> Any:
        """Create an array child stored as the zarr array a client wrote through /zarr (its
        documents, chunk grid and codecs); its attributes become the node's metadata."""
        meta = array.meta
        structure = ArrayStructure(
            data_type=BuiltinDtype.from_numpy_dtype(meta.dtype),
            chunks=regular_chunks(meta.shape, meta.chunk_shape),
            shape=meta.shape,
            dims=meta.dimension_names,
        )
        source = DataSource(
            structure_family=StructureFamily.array, structure=structure, mimetype=ZARR_MIMETYPE
        )
        record = await create_child(
            self._catalog, self._node_id, self._path, key=key, structure_family="array",
            metadata=dict(meta.attributes), specs=None, data_sources=[source],
            access_blob=access_blob, register=False, zarr_documents=array.stored_documents,
        )  # fmt: skip
        if self._child_count is not None:
            self._child_count += 1
        await self._announce_created([record])
        ((_, child),) = await self._adapters([record], open_registered=False)
        return child

    async def create_zarr_group(
        self, key: str, attributes: dict[str, Any], *, access_blob: dict[str, Any] | None = None
    ) -> Any:
        """Create an empty container child, a group a client wrote through /zarr."""
        return await self.create_node(
            key=key, structure_family=StructureFamily.container, metadata=attributes,
            access_blob=access_blob,
        )  # fmt: skip

    async def register_children(
        self, children: Sequence[dict[str, Any]], *, files_read: bool = False
    ) -> list[Any]:
        """Register many children in one transaction (see
        :func:`tiled.catalog.creation.register_children`): per child, in order, ``None`` or
        the :class:`TiledError` that refused it."""
        results = await register_children(
            self._catalog, self._node_id, self._path, children, files_read=files_read
        )
        created = [r for r in results if isinstance(r, NodeRecord)]
        if self._child_count is not None:
            self._child_count += len(created)
        await self._announce_created(created)
        return [None if isinstance(r, NodeRecord) else r for r in results]

    async def _announce_created(self, children: list[NodeRecord]) -> None:
        """Tell this container's webhooks and live subscribers of its new children."""
        if not children:
            return
        if self._catalog.webhooks is not None:
            events = [webhook_events.child_created(record) for record in children]
            await self._catalog.webhooks.announce(self._node_id, *events)
        if self._catalog.streams is not None:
            messages = [stream_messages.child_created(record) for record in children]
            await self._catalog.streams.announce(self._node_id, *messages)

    def live_stream(self) -> Any:
        """This node's live stream (see :class:`~tiled.adapters.protocols.HasLiveStream`)."""
        streams = self._catalog.streams
        return None if streams is None else streams.of_node(self._node_id)

    async def close_stream(self) -> None:
        """End this node's live stream and tell its webhooks (upstream's ``stream-closed``)."""
        await close_stream(self._catalog, self._node_id, self._segments)

    def webhooks(self) -> Any:
        """This node's webhooks (see :class:`~tiled.adapters.protocols.HasWebhooks`)."""
        hooks = self._catalog.webhooks
        return None if hooks is None else hooks.of_node(self._node_id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} /{self._path}>"


class CatalogRootAdapter(CatalogContainerBase):
    """The root of a catalog, or of the subtree below its node at ``mount_path`` (upstream's
    ``mount_node``): its metadata, specs and access blob are configuration, not a row.

    A mounted root finds its node when it starts (:meth:`startup`, which the server calls);
    with ``create_mount_nodes`` the missing containers along the path are created then, the
    last one with this root's specs and access blob."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        metadata=None,
        specs=None,
        access_blob=None,
        mount_path: Sequence[str] = (),
        create_mount_nodes: bool = False,
    ):
        super().__init__(catalog, (), metadata=metadata, specs=specs, access_blob=access_blob)
        catalog.root = self  # the tree its errors name nodes in (Catalog.node_at)
        self.mount_path = tuple(mount_path)
        self.create_mount_nodes = create_mount_nodes
        self.startup_tasks = [self.startup]
        self.shutdown_tasks = [self.shutdown]
        self.background_tasks: list[Any] = []
        self.include_routers: list[Any] = []

    @property
    def _node_id(self) -> int:
        if not self.mount_path:
            return ROOT_ID
        # A mounted root used before it has found its node would list the database's root
        # (parent IS NULL): every query reads the node id through this guard.
        if self._catalog.mount_id is None:
            raise RuntimeError(
                f"The catalog mounted at {self.mount_node!r} finds its node when it starts: "
                "await its startup() first (the server does)"
            )
        return self._catalog.mount_id

    @_node_id.setter
    def _node_id(self, value: int) -> None:
        pass  # the database's root, or the mounted node the catalog follows (Catalog.mount_id)

    @property
    def mount_node(self) -> str:
        """The path in the database of the node served as this root (``"/"``: its root)."""
        return "/" + "/".join(self.mount_path)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def context(self) -> CatalogContext:
        """What the catalog holds about its storage, under upstream's name."""
        return CatalogContext(self._catalog)

    async def startup(self) -> None:
        await self._catalog.startup()
        if self.mount_path:
            self._catalog.mount_id = None  # found again, as if for the first time
            node = await self._mounted_node()
            self._segments, self._path = node._segments, node._path
            self._catalog.mount_path, self._catalog.mount_id = self.mount_path, node._node_id

    async def shutdown(self) -> None:
        await self._catalog.dispose()

    async def _mounted_node(self) -> CatalogContainerBase:
        database_root = CatalogContainerBase(self._catalog, ())
        try:
            node = await database_root.lookup_adapter(self.mount_path)
        except NoSuchEntry:
            if not self.create_mount_nodes:
                raise ValueError(
                    f"mount_node {self.mount_node!r} was not found in the database. Create "
                    "the node first (with the Python client or the HTTP API) and start the "
                    "server again, or set create_mount_nodes_if_not_exist: true in the "
                    "configuration"
                ) from None
            node = await self._create_mount_path(database_root)
        return self._checked_mount(node)

    async def _create_mount_path(self, node: CatalogContainerBase) -> CatalogContainerBase:
        # As upstream: the containers along the path get no metadata, specs or tags, but the
        # last (the one served) gets this root's specs and access blob. Every key is checked
        # before any is created: a path refused half-way would be left half made.
        for key in self.mount_path:
            try:
                check_key(key)
            except InvalidKey as err:
                raise ValueError(f"mount_node {self.mount_node!r}: {err}") from None
        for depth, key in enumerate(self.mount_path, start=1):
            last = depth == len(self.mount_path)
            child = await node.get(key)
            if child is None:
                logger.info("Creating the container %s of mount_node %s", key, self.mount_node)
                try:
                    child = await node.create_node(
                        key=key, structure_family=StructureFamily.container, metadata={},
                        specs=self.specs if last else [],
                        access_blob=self.access_blob if last else None,
                    )  # fmt: skip
                except Conflict:  # another process of this server created it first
                    child = await node.get(key)
            node = self._checked_mount(child, self.mount_path[:depth])
        return node

    def _checked_mount(self, node: Any, path: Sequence[str] | None = None) -> Any:
        if isinstance(node, CatalogContainerAdapter):
            return node
        shown = "/" + "/".join(self.mount_path if path is None else path)
        family = getattr(node, "structure_family", "node")
        what = (
            "a registered container"
            if family == StructureFamily.container
            else _article(str(getattr(family, "value", family)))
        )
        raise ValueError(
            f"mount_node {self.mount_node!r}: {shown!r} is {what}, not a container of "
            "the catalog; only a container whose children are catalog nodes can be mounted"
        )


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


class CatalogContext:
    """Upstream's ``catalog.context``: the storage of a catalog, by URI."""

    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    @property
    def writable_storage(self) -> dict[str, Any]:
        from ..storage import FileStorage, parse_storage

        found = [
            parse_storage(location.uri) if isinstance(location, FileStorage) else location
            for location in self._catalog.writable_locations
        ]
        found += self._catalog.writable_sql_storage
        return {storage.uri: storage for storage in found}


class CatalogContainerAdapter(CatalogNode, CatalogContainerBase):
    """A container node: a row with children, history and deletion."""

    def __init__(self, catalog: Catalog, record: NodeRecord):
        CatalogContainerBase.__init__(
            self, catalog, record.segments, metadata=record.metadata, specs=record.specs,
            access_blob=record.access_blob, child_count=record.child_count, node_id=record.id,
        )  # fmt: skip
        self.bind(catalog, record)


def is_catalog_container(record: NodeRecord) -> bool:
    """A container whose children are catalog rows (not one registered from a file)."""
    return record.structure_family == StructureFamily.container and not record.data_sources


def has_members_of_its_own(record: NodeRecord) -> bool:
    """A node whose members come from its data, not from rows: a table (its columns), a
    registered container (an HDF5 file's groups and datasets, a zarr group's members)."""
    return not is_catalog_container(record) and record.structure_family in (
        StructureFamily.table, StructureFamily.container,
        StructureFamily.awkward, StructureFamily.ragged,  # their buffers (the zarr view)
    )  # fmt: skip


async def adapters_for(
    catalog: Catalog, records: list[NodeRecord], open_registered: bool = True
) -> list[tuple[str, Any]]:
    """``(key, adapter)`` per record; storage of data nodes is opened on one worker thread.

    With ``open_registered`` false (listings), registered nodes are :class:`ListedNode`: their
    files are opened only if something asks for their data.
    """
    built: dict[int, Any] = {}
    to_open = []
    for record in records:
        if is_catalog_container(record):
            built[record.id] = CatalogContainerAdapter(catalog, record)
        elif not open_registered and is_registered(record):
            built[record.id] = ListedNode(catalog, record)
        else:
            to_open.append(record)
    if to_open:
        built.update(await run_sync(lambda: {r.id: open_node(catalog, r) for r in to_open}))
    return [(record.key, built[record.id]) for record in records]


__all__ = ["CatalogContainerAdapter", "CatalogContainerStructure", "CatalogRootAdapter"]

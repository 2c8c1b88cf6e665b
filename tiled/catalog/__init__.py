"""The SQL catalog: a tree of nodes kept in SQLite or PostgreSQL, data in server storage.

::

    from tiled.catalog import from_uri, in_memory

    tree = from_uri("sqlite:///catalog.db", writable_storage="data/", init_if_not_exists=True)
    tree = in_memory(writable_storage=tmp_path)

Both return the root container adapter synchronously; the database is first touched by the
first async call (or the server's startup task). See ``docs/source/explanation/architecture.md``
for the layout: ``orm`` (tables), ``database`` (engines, migrations), ``queries`` (query -> SQL),
``records`` (rows -> records), ``container`` and ``nodes`` (adapters), ``creation``, ``storage``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..storage import ObjectStorage, register_storage
from .container import CatalogContainerAdapter, CatalogRootAdapter
from .core import Catalog
from .database import async_url, initialize_database, upgrade_database
from .errors import DatabaseNotInitialized, InvalidKey, WouldDeleteData
from .mimetypes import AdapterRegistry
from .storage import is_sql_uri, storage_paths, writable_locations

__all__ = [
    "CatalogContainerAdapter",
    "CatalogRootAdapter",
    "DatabaseNotInitialized",
    "InvalidKey",
    "WouldDeleteData",
    "async_url",
    "from_uri",
    "in_memory",
    "initialize_database",
    "upgrade_database",
]

_POOL_OPTIONS = {"catalog_pool_size": "pool_size", "catalog_max_overflow": "max_overflow"}


def from_uri(
    uri: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    specs: list[Any] | None = None,
    writable_storage: Any = None,
    readable_storage: Any = None,
    init_if_not_exists: bool = False,
    adapters_by_mimetype: dict[str, Any] | None = None,
    top_level_access_blob: dict[str, Any] | None = None,
    lookup_cache_ttl: float = 1.0,
    durable: bool = True,
    mount_node: str | Sequence[str] | None = None,
    create_mount_nodes_if_not_exist: bool = False,
    **options: Any,
) -> CatalogRootAdapter:
    """The root adapter of the catalog in database ``uri`` (SQLite path/URI or PostgreSQL).

    ``writable_storage``: a directory (path or ``file://`` URI), a bucket (a dict: ``provider``
    ``"s3"``, ``uri`` ``http(s)://endpoint/bucket``, ``config`` the options of obstore's
    ``S3Store``), or a list of them; new data go in the first that can hold them (arrays and
    tables: either; sparse and awkward arrays: a directory). SQL URIs among them (``sqlite:///``, ``duckdb:///``,
    ``postgresql://``) hold appendable tables (the first; ``storage_pool_size`` and
    ``storage_max_overflow`` size their connection pools). ``readable_storage``: directories
    from which files may be registered, and SQL databases whose tables may be read (writable
    storage is readable too). ``adapters_by_mimetype``: mimetype -> adapter
    class (upstream's style: ``from_catalog``/``from_uris``) or factory, or the import path of
    one; these take precedence over the defaults (:mod:`tiled.catalog.mimetypes`). Upstream's
    pool options (``catalog_pool_size``, ``catalog_max_overflow``) are
    honoured, and so is ``cache_config`` (upstream's streaming cache of this catalog, e.g.
    ``{"uri": "memory"}``), which a server built on this catalog uses unless its own
    ``streaming_cache`` setting says otherwise; the other options (webhooks) are accepted and
    ignored.
    ``mount_node``: serve the container at this path of the database (``"/a/b"`` or
    ``["a", "b"]``) as the root, found when the adapter starts (``await root.startup()``, which
    the server does); ``create_mount_nodes_if_not_exist`` creates the missing containers then.
    ``lookup_cache_ttl``: seconds a resolved node may be reused without a query; writes through
    this process drop the cache at once, so only other processes' writes can show this late
    (0 disables it). ``durable=False``: a SQLite catalog that may be lost with a crash of the
    machine (a temporary index) commits without waiting for the disk.
    """
    writable = storage_paths(writable_storage)
    for directory in writable:
        directory.mkdir(parents=True, exist_ok=True)
    locations = writable_locations(writable_storage)
    for location in locations:
        if isinstance(location, ObjectStorage):
            register_storage(location)  # so that its nodes' assets find it (get_storage)
    sql_storage = []
    if any(is_sql_uri(item) for item in _items(writable_storage) + _items(readable_storage)):
        from .sql_tables import configure_sql_storage  # ADBC drivers only when needed

        sql_storage = configure_sql_storage(
            writable_storage, readable_storage, pool_size=options.get("storage_pool_size"),
            max_overflow=options.get("storage_max_overflow"),
        )  # fmt: skip
    catalog = Catalog(
        async_url(uri),
        writable_storage=writable,
        readable_storage=storage_paths(readable_storage),
        init_if_not_exists=init_if_not_exists,
        adapters_by_mimetype=AdapterRegistry.default(adapters_by_mimetype),
        pool_options={
            **{_POOL_OPTIONS[k]: v for k, v in options.items() if k in _POOL_OPTIONS},
            **({} if durable else {"durable": False}),
        },
        lookup_cache_ttl=lookup_cache_ttl,
        writable_sql_storage=sql_storage,
        writable_locations=locations,
    )
    # Read by the server that serves this catalog (tiled.server.api.streams).
    catalog.requested_streaming_cache = options.get("cache_config")
    return CatalogRootAdapter(
        catalog, metadata=metadata, specs=specs, access_blob=top_level_access_blob,
        mount_path=mount_segments(mount_node),
        create_mount_nodes=create_mount_nodes_if_not_exist,
    )  # fmt: skip


def mount_segments(mount_node: str | Sequence[str] | None) -> tuple[str, ...]:
    """The keys along a ``mount_node`` path: ``"/a/b"`` (slashes around ignored) or
    ``["a", "b"]``; None, ``"/"`` and ``[]`` are the database's root. ValueError if malformed."""
    if mount_node is None:
        return ()
    if isinstance(mount_node, str):
        segments = tuple(segment for segment in mount_node.split("/") if segment)
    elif isinstance(mount_node, Sequence) and all(isinstance(s, str) for s in mount_node):
        segments = tuple(mount_node)
        if any(not segment or "/" in segment for segment in segments):
            raise ValueError(
                f"mount_node {list(mount_node)!r}: each segment is one non-empty key, without '/'"
            )
    else:
        raise ValueError(
            f"mount_node must be a path ('/a/b') or a list of keys, not {mount_node!r}"
        )
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"mount_node {mount_node!r} may not contain '.' or '..' segments")
    return segments


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str | Path | dict) else list(value)


def in_memory(
    *,
    metadata: dict[str, Any] | None = None,
    specs: list[Any] | None = None,
    writable_storage: Any = None,
    readable_storage: Any = None,
    adapters_by_mimetype: dict[str, Callable[..., Any]] | None = None,
    top_level_access_blob: dict[str, Any] | None = None,
    **ignored: Any,
) -> CatalogRootAdapter:
    """A catalog in an in-memory SQLite database (gone with the process), schema created."""
    return from_uri(
        "sqlite+aiosqlite:///:memory:",
        metadata=metadata,
        specs=specs,
        writable_storage=writable_storage,
        readable_storage=readable_storage,
        init_if_not_exists=True,
        adapters_by_mimetype=adapters_by_mimetype,
        top_level_access_blob=top_level_access_blob,
    )

"""Which adapter reads registered (external, read-only) data, by the data source's mimetype.

One registry serves every registered data source and checks every registration. An entry is
either

- an adapter class in upstream's style, with ``from_catalog(data_source, node, /, **parameters)``
  and usually ``from_uris(*data_uris, **parameters)``: the classes of
  :data:`tiled.mimetypes.DEFAULT_ADAPTERS_BY_MIMETYPE`, and any configured ones; or
- a factory of this project, ``factory(data_source, *, metadata, specs) -> adapter``, for the
  formats this project reads with its own adapters (zarr, Parquet, sparse Parquet blocks). A
  factory given a data source without a structure reads the structure from the files, unless
  it is marked ``needs_structure``.

Entries are loaded on first use: listing the registry imports nothing, and a format whose
adapter module or optional dependency is missing only matters to the nodes of that format.
Configured entries (``adapters_by_mimetype``, from Python or YAML) override the defaults and
may be given as import paths (``package.module:Class``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .. import mimetypes as registry_defaults
from ..adapters.files import asset_uris, path_from_uri, uri_from_path
from ..adapters.parquet import PARQUET_MIMETYPE, ParquetTableAdapter
from ..adapters.sparse_parquet import (
    SPARSE_PARQUET_MIMETYPE,
    ParquetSparseAdapter,
    blocks_directory,
)
from ..adapters.zarr import ZarrArrayAdapter, ZarrGroupAdapter
from ..adapters.zarr_writable import ZARR_MIMETYPE
from ..errors import BadRequest
from ..structures.data_source import DataSource
from ..utils import import_object


class AdapterUnavailable(Exception):
    """The registry lists the mimetype, but its adapter cannot be loaded here (a module or an
    optional dependency is missing); the message says which and why."""


def _single_uri(source: DataSource) -> str:
    if len(source.assets) != 1:
        raise BadRequest(f"{source.mimetype} data need exactly one asset")
    return source.assets[0].data_uri


def _open_zarr(path: Any) -> Any:
    import zarr

    from ..adapters.zarr import ContainedStore

    try:
        # Its documents too are read only from regular files inside it (a FIFO in place of
        # one hung the walk; a link out of the store was read).
        return zarr.open(ContainedStore(path), mode="r")
    except FileNotFoundError:
        raise
    except Exception as err:  # zarr names a missing or malformed store in several ways
        if not path.exists():
            raise FileNotFoundError(f"No such file or directory: '{path}'") from None
        raise BadRequest(f"Cannot open a zarr store at {path}: {err}") from None


def zarr_node(source: DataSource, *, metadata=None, specs=None) -> Any:
    """A registered zarr array (family array) or group (family container, members read from
    the store at any depth)."""
    import zarr

    # Whether the store is what the node declares is the caller's check (registration refuses
    # a mismatch; serving answers 4xx), so that a walker can ask what a store holds.
    node = _open_zarr(path_from_uri(_single_uri(source)))
    if isinstance(node, zarr.Group):
        return ZarrGroupAdapter(node, metadata=metadata, specs=specs)
    if source.structure is None or isinstance(source.structure, dict):
        given = dict(metadata) if metadata is not None else None  # from_array edits it
        return ZarrArrayAdapter.from_array(node, metadata=given, specs=specs)
    return ZarrArrayAdapter(node, source.structure, metadata=metadata, specs=specs)


def zarr_array(source: DataSource, *, metadata=None, specs=None) -> ZarrArrayAdapter:
    """A registered zarr array (the factory's name in configurations written before groups)."""
    return zarr_node(source, metadata=metadata, specs=specs)


def parquet_table(source: DataSource, *, metadata=None, specs=None) -> ParquetTableAdapter:
    uris = asset_uris(source)
    if not uris:
        raise BadRequest("Parquet tables need at least one asset")
    return ParquetTableAdapter.from_uris(
        *uris, structure=source.structure, metadata=metadata, specs=specs
    )


def parquet_sparse(source: DataSource, *, metadata=None, specs=None) -> ParquetSparseAdapter:
    if source.structure is None:
        raise BadRequest("Sparse Parquet data must be registered with their structure")
    if not source.assets:
        raise BadRequest("Sparse Parquet data need their block files (or directory) as assets")
    asset = source.assets[0]
    directory = blocks_directory(asset.data_uri, asset.is_directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No such directory: '{directory}'")
    return ParquetSparseAdapter(
        uri_from_path(directory), source.structure, metadata=metadata, specs=specs
    )


# Block files tell neither the shape nor the chunks: the registration must declare them.
parquet_sparse.needs_structure = True  # type: ignore[attr-defined]

# This project's own readers, preferred to the registry's classes for these formats (upstream's
# ParquetDatasetAdapter is, here, the Parquet factory).
PROJECT_FACTORIES: dict[str, Callable[..., Any]] = {
    ZARR_MIMETYPE: zarr_node,
    PARQUET_MIMETYPE: parquet_table,
    SPARSE_PARQUET_MIMETYPE: parquet_sparse,
}


def _from_defaults(mimetype: str) -> Callable[[], Any]:
    return lambda: registry_defaults.DEFAULT_ADAPTERS_BY_MIMETYPE[mimetype]


def _given(entry: Any) -> Callable[[], Any]:
    if isinstance(entry, str):
        return lambda: import_object(entry)
    return lambda: entry


class AdapterRegistry(Mapping[str, Any]):
    """Mimetype -> adapter class or factory, each loaded (imported) on first use and kept.

    ``registry[mimetype]`` raises :class:`AdapterUnavailable` when the entry cannot be loaded;
    ``mimetype in registry`` only asks whether one is listed (it imports nothing).
    """

    def __init__(self, loaders: Mapping[str, Callable[[], Any]]):
        self._loaders = dict(loaders)
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls, overrides: Mapping[str, Any] | None = None) -> AdapterRegistry:
        """The registry's defaults, this project's factories, then ``overrides`` (objects or
        import paths), each later table taking precedence."""
        loaders = {m: _from_defaults(m) for m in registry_defaults.DEFAULT_ADAPTERS_BY_MIMETYPE}
        loaders.update({m: _given(f) for m, f in PROJECT_FACTORIES.items()})
        loaders.update({m: _given(e) for m, e in (overrides or {}).items()})
        return cls(loaders)

    def __getitem__(self, mimetype: str) -> Any:
        if mimetype in self._loaded:
            return self._loaded[mimetype]
        loader = self._loaders[mimetype]  # KeyError: not listed at all
        with self._lock:
            try:
                entry = loader()
            except (ImportError, AttributeError) as err:
                raise AdapterUnavailable(
                    f"the adapter for {mimetype!r} cannot be loaded ({type(err).__name__}: {err})"
                ) from None
            self._loaded[mimetype] = entry
        return entry

    def __contains__(self, mimetype: object) -> bool:
        return mimetype in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


def default_registry(overrides: Mapping[str, Any] | None = None) -> AdapterRegistry:
    return AdapterRegistry.default(overrides)


# Kept for callers that merge their own entries over the defaults (``{**DEFAULT..., ...}``):
# this project's factories, which need no import.
DEFAULT_ADAPTERS_BY_MIMETYPE: dict[str, Callable[..., Any]] = dict(PROJECT_FACTORIES)

__all__ = [
    "DEFAULT_ADAPTERS_BY_MIMETYPE",
    "PROJECT_FACTORIES",
    "AdapterRegistry",
    "AdapterUnavailable",
    "default_registry",
    "parquet_sparse",
    "parquet_table",
    "zarr_array",
    "zarr_node",
]

"""Registered (external) data: opened through the adapter registry, checked when registered.

Serving opens a data source with the structure the catalog stored (``from_catalog`` or a
project factory); registering reads the files themselves (``from_uris``, or a factory given no
structure), so that a declared structure is compared with what the files hold and a missing
one is filled in. Both refuse any asset outside the readable storage, symlinks and ``..``
resolved first.

Adapters written in upstream's style (no async listing, no zarr hooks) are wrapped so the
server can serve them like its own: :func:`conform`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy

from ..adapters.base import (
    ArrayAdapterBase,
    ContainerAdapterBase,
    SparseAdapterBase,
    TableAdapterBase,
)
from ..adapters.files import asset_uris, path_from_uri
from ..adapters.mapping import MapAdapter
from ..adapters.table import TableAdapter, _StoredPartitions
from ..errors import BadRequest, Forbidden, NoSuchEntry, TiledError
from ..ndslice import NDSlice
from ..structures.core import StructureFamily, normalize_specs
from ..structures.data_source import DataSource
from ..structures.families import structure_from_json
from .mimetypes import AdapterRegistry, AdapterUnavailable

# --- the node as upstream-style adapters read it --------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    """What ``from_catalog(data_source, node)`` reads of the node (upstream passes its ORM row,
    whose metadata attribute is spelled ``metadata_``)."""

    metadata_: dict[str, Any]
    specs: list[Any]
    structure_family: StructureFamily
    key: str | None = None
    id: int | None = None


# --- readable storage -------------------------------------------------------------------------------


# Parameters that adapters' ``from_catalog`` take as the files to read, in place of the assets.
FILE_PARAMETERS = ("data_uri", "data_uris")


def _file_uris(source: DataSource) -> list[Any]:
    """Every URI the data source's adapter may open: its assets, and any file parameter."""
    uris: list[Any] = [asset.data_uri for asset in source.assets]
    for name in FILE_PARAMETERS:
        value = (source.parameters or {}).get(name)
        if value is not None:
            uris.extend([value] if isinstance(value, str) else list(value))
    return uris


def outside_readable_storage(source: DataSource, roots: Sequence[Path]) -> str | None:
    """Why one of the files the data source names may not be read, or None when all may.

    Each asset (and each file named by the ``data_uri``/``data_uris`` parameters, which
    adapters read in place of the assets) is resolved (symlinks followed, ``..`` collapsed)
    before it is compared with the resolved roots, so neither a link nor a relative step leads
    out of the readable storage.
    """
    resolved_roots = [Path(root).resolve() for root in roots]
    for uri in _file_uris(source):
        try:
            path = path_from_uri(uri).resolve()
        except (ValueError, OSError, TypeError, AttributeError) as err:
            return f"{uri!r} is not a readable local file: {err}"
        if not any(path.is_relative_to(root) for root in resolved_roots):
            return f"{uri} is outside the readable storage"
    return None


def check_readable_storage(source: DataSource, roots: Sequence[Path]) -> None:
    reason = outside_readable_storage(source, roots)
    if reason is not None:
        raise Forbidden(f"Refusing to register: {reason}")


# --- opening ------------------------------------------------------------------------------------------


def _is_adapter_class(entry: Any) -> bool:
    return hasattr(entry, "from_catalog") or hasattr(entry, "from_uris")


def open_external(
    registry: AdapterRegistry,
    source: DataSource,
    node: NodeView,
) -> Any:
    """The served adapter of a registered data source (blocking: opens files)."""
    entry = registry[source.mimetype]
    if hasattr(entry, "from_catalog"):
        adapter = entry.from_catalog(source, node, **source.parameters)
    elif hasattr(entry, "from_uris"):
        adapter = entry.from_uris(*asset_uris(source), **source.parameters)
    else:
        adapter = entry(source, metadata=node.metadata_, specs=node.specs)
    return conform(adapter)


def read_files(registry: AdapterRegistry, source: DataSource, node: NodeView) -> tuple[Any, bool]:
    """An adapter built from what the files hold, and whether its structure was read from them
    (False: the format cannot tell its structure, so the declared one was used)."""
    entry = registry[source.mimetype]
    if hasattr(entry, "from_uris"):
        return conform(entry.from_uris(*asset_uris(source), **source.parameters)), True
    if hasattr(entry, "from_catalog"):
        bare = replace(source, structure=None)
        try:
            return conform(entry.from_catalog(bare, node, **source.parameters)), True
        except (AttributeError, TypeError):
            # An adapter that cannot open without a structure: trust the declared one.
            return open_external(registry, source, node), source.structure is None
    # No metadata given: the adapter takes the files' own (attributes of a zarr group, ...).
    if getattr(entry, "needs_structure", False):
        return conform(entry(source, metadata=None, specs=None)), False
    bare = replace(source, structure=None)
    return conform(entry(bare, metadata=None, specs=None)), True


def why_unopenable(mimetype: str | None, err: BaseException) -> str:
    """A one-line reason, for a client, that the files of a data source could not be opened."""
    return f"cannot open its {mimetype} data: {_detail(err)}"


def _detail(err: BaseException) -> str:
    if isinstance(err, AdapterUnavailable | TiledError):
        return str(err)
    name = getattr(err, "filename", None) or err
    if isinstance(err, FileNotFoundError):
        return f"a file it needs is missing ({name})"
    if isinstance(err, PermissionError):
        return f"permission denied reading {name}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'unreadable'}"


# --- structures, as the catalog stores and compares them ------------------------------------------------


def container_keys(adapter: Any) -> list[str]:
    structure = adapter.structure()
    keys = getattr(structure, "keys", None)
    if keys is not None and not callable(keys):
        return [str(k) for k in keys]
    return [str(k) for k in adapter.keys()]


def found_structure(family: StructureFamily, adapter: Any) -> Any:
    """The adapter's structure as the catalog stores it: this project's structure objects, or
    for a container upstream's ``{"keys": [...]}``."""
    if family == StructureFamily.container:
        return {"keys": container_keys(adapter)}
    structure = adapter.structure()
    if hasattr(structure, "to_json"):
        structure = structure.to_json()
    elif dataclasses.is_dataclass(structure):
        structure = dataclasses.asdict(structure)
    return structure_from_json(family.value, structure)


def _dtype(data_type: Any) -> Any:
    return None if data_type is None else data_type.to_numpy_dtype()


def _array_differences(declared: Any, found: Any, allowed: frozenset[str]) -> list[str]:
    """What the adapter cannot serve. Another number of elements never; another shape of as
    many elements (a reshape, with its own chunks) or another data type (a cast) only if the
    adapter says it can (``allowed``, see :data:`DECLARED_CHANGES`), as upstream's file
    sequences reshape and its CSV arrays cast. :func:`_probe_array` then checks it does."""
    if math.prod(declared.shape) != math.prod(found.shape):
        return [
            f"shape {list(declared.shape)}, {math.prod(declared.shape)} elements (the file "
            f"has {list(found.shape)}, {math.prod(found.shape)})"
        ]
    differences = []
    if "shape" not in allowed:
        if tuple(declared.shape) != tuple(found.shape):
            differences.append(f"shape {list(declared.shape)} (the file has {list(found.shape)})")
        if tuple(map(tuple, declared.chunks)) != tuple(map(tuple, found.chunks)):
            differences.append(f"chunks {declared.chunks} (the file has {found.chunks})")
    if "data_type" not in allowed and _dtype(declared.data_type) != _dtype(found.data_type):
        differences.append(
            f"data type {_dtype(declared.data_type)} (the file has {_dtype(found.data_type)})"
        )
    same_shape = tuple(declared.shape) == tuple(found.shape)
    if same_shape and declared.dims is not None and found.dims is not None:
        if declared.dims != found.dims:
            differences.append(f"dims {list(declared.dims)} (the file has {list(found.dims)})")
    return differences


def _probe_array(adapter: Any, declared: Any) -> list[str]:
    """Whether the adapter opened with the declared structure serves it: its first element
    read, of the declared data type. A format that cannot cast or reshape fails here."""
    if not all(declared.shape):
        return []  # no element to read
    wanted = _dtype(declared.data_type)
    first = NDSlice(*(slice(0, 1) for _ in declared.shape))
    try:
        values = numpy.asarray(adapter.read(first))
    except (TiledError, ValueError, TypeError, OverflowError) as err:
        return [f"data it cannot serve from the files ({_detail(err)})"]
    if values.dtype.newbyteorder("=") != wanted.newbyteorder("="):
        return [f"data type {wanted} (the file has {values.dtype})"]
    if values.shape != (1,) * len(declared.shape):
        return [f"shape {list(declared.shape)}, which the files do not take"]
    return []


def _sparse_differences(declared: Any, found: Any, allowed: frozenset[str]) -> list[str]:
    differences = []
    if tuple(declared.shape) != tuple(found.shape):
        differences.append(f"shape {list(declared.shape)} (the file has {list(found.shape)})")
    if tuple(map(tuple, declared.chunks)) != tuple(map(tuple, found.chunks)):
        differences.append(f"chunks {declared.chunks} (the files have {found.chunks})")
    return differences


def _table_differences(declared: Any, found: Any, allowed: frozenset[str]) -> list[str]:
    differences = []
    if list(declared.columns) != list(found.columns):
        differences.append(f"columns {list(declared.columns)} (the file has {list(found.columns)})")
    if declared.npartitions != found.npartitions:
        differences.append(
            f"{declared.npartitions} partitions (the files make {found.npartitions})"
        )
    return differences


def _container_differences(declared: Any, found: Any, allowed: frozenset[str]) -> list[str]:
    keys = declared.get("keys") if isinstance(declared, dict) else None
    if keys is None:
        return []  # upstream's walker may send no keys; nothing to compare
    if set(map(str, keys)) != set(found["keys"]):
        return [f"members {sorted(keys)} (the file has {sorted(found['keys'])})"]
    return []


STRUCTURE_DIFFERENCES = {
    StructureFamily.array: _array_differences,
    StructureFamily.sparse: _sparse_differences,
    StructureFamily.table: _table_differences,
    StructureFamily.container: _container_differences,
}

# family -> check of a declared structure the files do not have but may be served as (the
# adapter opened with it, as serving will), run when the adapter allowed a difference.
FIT_PROBES = {StructureFamily.array: _probe_array}

# The attribute by which an adapter (class) says which differences between a declared
# structure and its files' it serves: "shape" (another shape of as many elements, with its own
# chunks) and "data_type" (values cast). Without it, the declared structure must be the files'.
DECLARED_CHANGES = "declared_structure_changes"


def checked_registration(
    registry: AdapterRegistry,
    source: DataSource,
    node: NodeView,
    readable_roots: Sequence[Path],
) -> DataSource:
    """The data source to store for a registration: its assets inside the readable storage, its
    files opened, its family and declared structure those of the files (or, if it declared
    none, the structure read from them). Raises a :class:`TiledError` (4xx) otherwise."""
    if source.mimetype not in registry:
        raise BadRequest(
            f"Cannot register data of type {source.mimetype!r}; known types: {sorted(registry)}"
        )
    if not source.assets:
        raise BadRequest("A registered data source needs at least one asset")
    check_readable_storage(source, readable_roots)
    family = StructureFamily(source.structure_family)
    try:
        adapter, from_files = read_files(registry, source, node)
    except Exception as err:
        raise BadRequest(f"Cannot register: {why_unopenable(source.mimetype, err)}") from None
    adapter_family = StructureFamily(adapter.structure_family)
    if adapter_family != family:
        raise BadRequest(
            f"The data source is declared {family.value}, but its {source.mimetype} files "
            f"hold a {adapter_family.value}"
        )
    found = found_structure(family, adapter)
    if source.structure is None:
        return replace(source, structure=found)
    if from_files and source.structure != found:
        allowed = frozenset(getattr(adapter, DECLARED_CHANGES, ()))
        check = STRUCTURE_DIFFERENCES.get(family, lambda d, f, a: [])
        differences = check(source.structure, found, allowed)
        probe = FIT_PROBES.get(family)
        if not differences and allowed and probe is not None:
            try:
                declared_adapter = open_external(registry, source, node)
            except Exception as err:
                raise BadRequest(
                    f"Cannot register: {why_unopenable(source.mimetype, err)}"
                ) from None
            differences = probe(declared_adapter, source.structure)
        if differences:
            raise BadRequest(
                "The declared structure is not compatible with the files: it declares "
                + "; ".join(differences)
            )
        source = _with_files_chunks(source, found)
    return source


def _with_files_chunks(source: DataSource, found: Any) -> DataSource:
    """Upstream's record of the files' own chunking when the declared structure has others
    (``properties["chunks"]``), which upstream's servers read the files by; a value the
    client recorded is kept."""
    chunks = getattr(found, "chunks", None)
    declared = getattr(source.structure, "chunks", None)
    if chunks is None or declared is None or "chunks" in (source.properties or {}):
        return source
    if tuple(map(tuple, chunks)) == tuple(map(tuple, declared)):
        return source
    properties = {**(source.properties or {}), "chunks": [list(c) for c in chunks]}
    return replace(source, properties=properties)


# --- upstream-style adapters, wrapped to serve like this project's ------------------------------------


def _specs_of(adapter: Any) -> list[Any]:
    specs = getattr(adapter, "specs", None) or []
    return normalize_specs(
        [{"name": s.name, "version": getattr(s, "version", None)} if hasattr(s, "name") else s
         for s in specs]
    )  # fmt: skip


def _metadata_of(adapter: Any) -> dict[str, Any]:
    metadata = getattr(adapter, "metadata", None)
    value = metadata() if callable(metadata) else metadata
    return dict(value or {})


class ForeignArray(ArrayAdapterBase):
    """An upstream-style array adapter, with this project's zarr hooks and block reads."""

    def __init__(self, inner: Any):
        structure = found_structure(StructureFamily.array, inner)
        super().__init__(structure, metadata=_metadata_of(inner), specs=_specs_of(inner))
        self.inner = inner

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        return numpy.asarray(self.inner.read(slice=slice) if slice else self.inner.read())


class ForeignSparse(SparseAdapterBase):
    """An upstream-style sparse adapter, with this project's zarr hooks."""

    def __init__(self, inner: Any):
        structure = found_structure(StructureFamily.sparse, inner)
        super().__init__(structure, metadata=_metadata_of(inner), specs=_specs_of(inner))
        self.inner = inner

    def read(self, slice: NDSlice = NDSlice()) -> Any:
        return self.inner.read(slice=slice) if slice else self.inner.read()

    def read_block(self, block: Sequence[int], slice: NDSlice = NDSlice()) -> Any:
        return self.inner.read_block(block, slice=slice) if slice else self.inner.read_block(block)


class _ForeignPartitions(_StoredPartitions):
    """The partitions of an upstream-style table, read through its ``read_partition``."""

    def __init__(self, inner: Any, npartitions: int, meta: Any):
        super().__init__([None] * npartitions)
        self.inner = inner
        self.meta = meta

    def read(self, index: int, fields: Sequence[str] | None = None) -> Any:
        columns = list(fields) if fields is not None else None
        if hasattr(self.inner, "read_partition"):
            frame = self.inner.read_partition(index, columns)
        else:
            frame = self.inner.read(columns)
        return frame.compute() if hasattr(frame, "compute") else frame

    def _compute_lengths(self) -> tuple[int, ...]:
        return tuple(len(self.read(i)) for i in range(len(self.frames)))


def foreign_table(inner: Any) -> TableAdapter:
    """An upstream-style table adapter as this project's table (columns, partitions, zarr)."""
    structure = found_structure(StructureFamily.table, inner)
    table = TableAdapter.__new__(TableAdapter)
    TableAdapterBase.__init__(
        table, structure, metadata=_metadata_of(inner), specs=_specs_of(inner)
    )
    table._partitions = _ForeignPartitions(inner, structure.npartitions, structure.meta)
    table._columns = {}
    return table


class _ConformedMembers(Mapping[str, Any]):
    """The members of an upstream-style container, each conformed when it is looked up."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getitem__(self, key: str) -> Any:
        try:
            child = self.inner[key]
        except (KeyError, IndexError):
            raise NoSuchEntry([key]) from None
        return conform(child)

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner.keys())

    def __len__(self) -> int:
        return len(self.inner)


def foreign_container(inner: Any) -> MapAdapter:
    return MapAdapter(
        _ConformedMembers(inner), metadata=_metadata_of(inner), specs=_specs_of(inner)
    )


# family -> (this project's base class, the wrapper for an adapter not derived from it)
CONFORMING = {
    StructureFamily.array: (ArrayAdapterBase, ForeignArray),
    StructureFamily.sparse: (SparseAdapterBase, ForeignSparse),
    StructureFamily.table: (TableAdapterBase, foreign_table),
    StructureFamily.container: (ContainerAdapterBase, foreign_container),
}


def conform(adapter: Any) -> Any:
    """``adapter`` if it is one of this project's, else wrapped so that it serves like one."""
    family = StructureFamily(adapter.structure_family)
    if family not in CONFORMING:
        raise BadRequest(f"This server does not serve nodes of the {family.value!r} family")
    base, wrap = CONFORMING[family]
    return adapter if isinstance(adapter, base) else wrap(adapter)


__all__ = [
    "NodeView",
    "check_readable_storage",
    "checked_registration",
    "conform",
    "open_external",
    "outside_readable_storage",
    "why_unopenable",
]

"""Storage of the catalog's nodes: where new data goes, and what registered data may be read.

Each node with writable data gets its own directory ``{writable_storage}/{uuid}``, named by a
random id rather than the node's path, so that renaming-free deletes and re-creates of a key
never collide and removing a node's data is removing one directory. Arrays are zarr v3
directories; tables are one Parquet file per partition inside the node directory; sparse
arrays are one Parquet file per block inside it.
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..adapters.awkward import AWKWARD_BUFFERS_MIMETYPE, check_awkward_structure
from ..adapters.files import path_from_uri, uri_from_path
from ..adapters.parquet import PARQUET_MIMETYPE
from ..adapters.ragged import RAGGED_SQL_MIMETYPE
from ..adapters.sparse_parquet import SPARSE_PARQUET_MIMETYPE, block_path
from ..adapters.sql import SQL_TABLE_MIMETYPE
from ..adapters.zarr_writable import ZARR_MIMETYPE, create_zarr_array, store_zarr_documents
from ..errors import BadRequest
from ..storage import is_sql_uri  # noqa: F401 (one home; this module's callers import it here)
from ..structures.core import StructureFamily
from ..structures.data_source import Asset, DataSource, Management

WRITABLE_MIMETYPES = {
    StructureFamily.array: ZARR_MIMETYPE,
    StructureFamily.table: PARQUET_MIMETYPE,
    StructureFamily.sparse: SPARSE_PARQUET_MIMETYPE,
    StructureFamily.awkward: AWKWARD_BUFFERS_MIMETYPE,
    StructureFamily.ragged: RAGGED_SQL_MIMETYPE,  # rows in SQL storage (see .sql_tables)
}
# Families stored in one directory of files named by the adapter (awkward buffers), with the
# check their structure passes first.
DIRECTORY_FAMILIES = {StructureFamily.awkward: check_awkward_structure}
# What the catalog keeps in its SQL storage, not in directories: appendable tables (asked for
# by mimetype) and ragged arrays (always, as upstream).
SQL_STORED_MIMETYPES = frozenset({SQL_TABLE_MIMETYPE, RAGGED_SQL_MIMETYPE})


def is_new_sql_source(source: DataSource) -> bool:
    """Whether ``source`` asks for new data in the catalog's SQL storage."""
    if source.assets:
        return False
    family = StructureFamily(source.structure_family)
    return (source.mimetype or WRITABLE_MIMETYPES.get(family)) in SQL_STORED_MIMETYPES


def storage_paths(value: Any) -> list[Path]:
    """Directories from a path, a ``file://`` URI, or a list of them (SQL URIs are skipped)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | Path) else list(value)
    paths = []
    for item in items:
        text = str(item)
        if "://" in text and not text.startswith("file:"):
            continue  # e.g. SQL storage of appendable tables (see .sql_tables)
        paths.append(path_from_uri(text).absolute())
    return paths


def partition_name(index: int) -> str:
    return f"partition-{index}.parquet"


def new_directory(root: Path) -> Path:
    """A fresh path for one node's data (not created yet)."""
    return root / uuid.uuid4().hex


def create_storage(
    directory: Path, source: DataSource, zarr_documents: Mapping[str, bytes] | None = None
) -> DataSource:
    """Make the (empty) storage of a writable data source in ``directory``; describe it.
    An array starts from ``zarr_documents`` when given (see ``create_child``)."""
    family = StructureFamily(source.structure_family)
    structure = source.structure
    if family == StructureFamily.array and zarr_documents is not None:
        store_zarr_documents(directory, zarr_documents)
        found = [Asset(uri_from_path(directory), True, parameter="data_uri")]
    elif family == StructureFamily.array:
        structure = create_zarr_array(directory, structure)
        found = [Asset(uri_from_path(directory), True, parameter="data_uri")]
    elif family == StructureFamily.table:
        directory.mkdir(parents=True)
        found = [
            Asset(uri_from_path(directory / partition_name(i)), False, "data_uris", num=i)
            for i in range(structure.npartitions)
        ]
    elif family in DIRECTORY_FAMILIES:
        DIRECTORY_FAMILIES[family](structure)
        directory.mkdir(parents=True)
        found = [Asset(uri_from_path(directory), True, parameter="data_uri")]
    else:
        # As upstream: one asset per block file (written when the block is), in block order.
        directory.mkdir(parents=True)
        grid = itertools.product(*(range(len(sizes)) for sizes in structure.chunks))
        found = [
            Asset(uri_from_path(block_path(directory, block)), False, "data_uris", num=number)
            for number, block in enumerate(grid)
        ]
    return replace(
        source, structure=structure, mimetype=WRITABLE_MIMETYPES[family], assets=found,
        management=Management.writable,
    )  # fmt: skip


def check_writable_source(source: DataSource) -> None:
    family = StructureFamily(source.structure_family)
    if family not in WRITABLE_MIMETYPES:
        raise BadRequest(f"The catalog cannot store data of structure family {family.value}")
    if source.structure is None:
        raise BadRequest("A data source to be written needs a structure")
    wanted = WRITABLE_MIMETYPES[family]
    if source.mimetype not in (None, wanted):
        raise BadRequest(
            f"Data of family {family.value} are stored as {wanted}, not {source.mimetype}"
        )


def node_directories(uris: Iterable[tuple[str, bool]], roots: list[Path]) -> set[Path]:
    """The per-node directories holding the given writable assets (``(data_uri, is_dir)``)."""
    found = set()
    for uri, is_directory in uris:
        if not uri.startswith("file:"):
            continue  # rows in SQL storage: removed by .sql_tables.delete_datasets
        path = path_from_uri(uri)
        directory = path if is_directory else path.parent
        if any(directory.parent == root for root in roots):
            found.add(directory)  # only ever a direct child of a storage root
    return found


def remove_directories(directories: Iterable[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def local_tabular_storage(directory: Path, stem: str) -> str:
    """A SQL storage URI for appendable tables (and ragged arrays) in a file of ``directory``:
    DuckDB, as upstream's throw-away servers use, or SQLite where DuckDB is not installed."""
    import importlib.util

    if importlib.util.find_spec("adbc_driver_duckdb") and importlib.util.find_spec("duckdb"):
        return f"duckdb:///{Path(directory) / f'{stem}.duckdb'}"
    return f"sqlite:///{Path(directory) / f'{stem}.sqlite'}"

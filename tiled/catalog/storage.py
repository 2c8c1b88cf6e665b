"""Storage of the catalog's nodes: where new data goes, and what registered data may be read.

Each node with writable data gets a place of its own, named by a random id rather than the
node's path, so that deletes and re-creates of a key never collide and removing a node's data
is removing one place: the directory ``{directory}/{uuid}``, or the prefix ``{uuid}/`` of a
bucket (see :mod:`tiled.adapters.node_storage`). New data go to the first writable storage
that can hold their family: arrays (zarr v3) and tables (one Parquet file or object per
partition; CSV or an Arrow IPC file where the client asks for ``text/csv`` or
``application/vnd.apache.arrow.file``) to a directory or a bucket; sparse arrays (one Parquet
file per block) and awkward arrays (one file per buffer) to a directory only.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..adapters.arrow import APACHE_ARROW_FILE_MIME_TYPE
from ..adapters.awkward import AWKWARD_BUFFERS_MIMETYPE, check_awkward_structure
from ..adapters.files import path_from_uri, uri_from_path
from ..adapters.node_storage import BucketStorage, DirectoryStorage, NodeStorage
from ..adapters.parquet import PARQUET_MIMETYPE
from ..adapters.ragged import RAGGED_SQL_MIMETYPE
from ..adapters.sparse_parquet import SPARSE_PARQUET_MIMETYPE, block_path
from ..adapters.sql import SQL_TABLE_MIMETYPE
from ..adapters.stored_csv import CSV_MIMETYPE, check_csv_storable
from ..adapters.zarr_writable import ZARR_MIMETYPE, create_zarr_array, store_zarr_documents
from ..errors import BadRequest, InvalidDtype, UnsupportedUploadType
from ..storage import FileStorage, ObjectStorage, Storage, is_sql_uri, parse_storage
from ..structures.core import StructureFamily
from ..structures.data_source import Asset, DataSource, Management

WRITABLE_MIMETYPES = {
    StructureFamily.array: ZARR_MIMETYPE,
    StructureFamily.table: PARQUET_MIMETYPE,
    StructureFamily.sparse: SPARSE_PARQUET_MIMETYPE,
    StructureFamily.awkward: AWKWARD_BUFFERS_MIMETYPE,
    StructureFamily.ragged: RAGGED_SQL_MIMETYPE,  # rows in SQL storage (see .sql_tables)
}


def _any_arrow_schema(structure: Any) -> None:
    """Arrow IPC files hold every type an Arrow schema names: nothing to refuse."""


# What else a family may be stored as, when a client asks for it by mimetype (upstream's
# text/csv and Arrow IPC file tables), with the check the structure passes first.
OTHER_WRITABLE_MIMETYPES = {
    StructureFamily.table: {
        CSV_MIMETYPE: check_csv_storable,
        APACHE_ARROW_FILE_MIME_TYPE: _any_arrow_schema,
    }
}
# The file of each partition of a stored table, by its mimetype.
PARTITION_SUFFIXES = {
    PARQUET_MIMETYPE: ".parquet",
    CSV_MIMETYPE: ".csv",
    APACHE_ARROW_FILE_MIME_TYPE: ".arrow",
}
# Families stored in one directory of files named by the adapter (awkward buffers), with the
# check their structure passes first.
DIRECTORY_FAMILIES = {StructureFamily.awkward: check_awkward_structure}
# What the catalog keeps in its SQL storage, not in directories: appendable tables (asked for
# by mimetype) and ragged arrays (always, as upstream).
SQL_STORED_MIMETYPES = frozenset({SQL_TABLE_MIMETYPE, RAGGED_SQL_MIMETYPE})

logger = logging.getLogger(__name__)


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
    items = [value] if isinstance(value, str | Path | Mapping) else list(value)
    paths = []
    for item in items:
        if isinstance(item, Mapping):
            continue  # a bucket (see writable_locations)
        text = str(item)
        if "://" in text and not text.startswith("file:"):
            continue  # e.g. SQL storage of appendable tables (see .sql_tables)
        paths.append(path_from_uri(text).absolute())
    return paths


def writable_locations(value: Any) -> list[Storage]:
    """The directories and buckets among ``writable_storage`` items (a path, a URI, a bucket's
    dict, or a list of them), in order; SQL URIs are skipped (see .sql_tables)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | Path | Mapping) else list(value)
    found: list[Storage] = []
    for item in items:
        if isinstance(item, Mapping):
            found.append(parse_storage(dict(item)))
        elif not is_sql_uri(str(item)):
            found.append(FileStorage(str(storage_paths(item)[0])))
    return found


def partition_name(index: int, mimetype: str = PARQUET_MIMETYPE) -> str:
    return f"partition-{index}{PARTITION_SUFFIXES[mimetype]}"


# The families a bucket can hold; the others need files in a directory.
BUCKET_FAMILIES = frozenset({StructureFamily.array, StructureFamily.table})


def new_node_storage(locations: Sequence[Storage], source: DataSource) -> NodeStorage:
    """A fresh place (not created yet) for one node's data, in the first of ``locations``
    that can hold the source's family."""
    family = StructureFamily(source.structure_family)
    for location in locations:
        if isinstance(location, ObjectStorage) and family in BUCKET_FAMILIES:
            return BucketStorage(location, uuid.uuid4().hex)
        if isinstance(location, FileStorage):
            return DirectoryStorage(location.path / uuid.uuid4().hex)
    raise BadRequest(
        f"Data of family {family.value} are stored in a directory, and this catalog's "
        "writable_storage has buckets only: add a directory to store them"
    )


def new_directory(root: Path) -> Path:
    """A fresh path for one node's data (not created yet)."""
    return root / uuid.uuid4().hex


def create_storage(
    storage: NodeStorage | Path,
    source: DataSource,
    zarr_documents: Mapping[str, bytes] | None = None,
) -> DataSource:
    """Make the (empty) storage of a writable data source in ``storage``; describe it.
    An array starts from ``zarr_documents`` when given (see ``create_child``)."""
    if isinstance(storage, Path):
        storage = DirectoryStorage(storage)
    family = StructureFamily(source.structure_family)
    structure = source.structure
    mimetype = stored_mimetype(source)
    if family == StructureFamily.array and zarr_documents is not None:
        store_zarr_documents(storage, zarr_documents)
        found = [Asset(storage.uri, True, parameter="data_uri")]
    elif family == StructureFamily.array:
        structure = create_zarr_array(storage, structure)
        found = [Asset(storage.uri, True, parameter="data_uri")]
    elif family == StructureFamily.table:
        storage.create()
        found = [
            Asset(storage.uri_of(partition_name(i, mimetype)), False, "data_uris", num=i)
            for i in range(structure.npartitions)
        ]
    elif not isinstance(storage, DirectoryStorage):
        raise BadRequest(f"Data of family {family.value} cannot be stored in a bucket")
    elif family in DIRECTORY_FAMILIES:
        DIRECTORY_FAMILIES[family](structure)
        storage.create()
        found = [Asset(storage.uri, True, parameter="data_uri")]
    else:
        # As upstream: one asset per block file (written when the block is), in block order.
        directory = storage.path
        directory.mkdir(parents=True)
        grid = itertools.product(*(range(len(sizes)) for sizes in structure.chunks))
        found = [
            Asset(uri_from_path(block_path(directory, block)), False, "data_uris", num=number)
            for number, block in enumerate(grid)
        ]
    return replace(
        source, structure=structure, mimetype=mimetype, assets=found,
        management=Management.writable,
    )  # fmt: skip


def stored_mimetype(source: DataSource) -> str:
    """What a writable source's data are stored as: what it asks for, if the catalog can
    store its family so (see :func:`check_writable_source`), else the family's default."""
    family = StructureFamily(source.structure_family)
    if source.mimetype in OTHER_WRITABLE_MIMETYPES.get(family, {}):
        return source.mimetype
    return WRITABLE_MIMETYPES[family]


def check_writable_source(source: DataSource) -> None:
    family = StructureFamily(source.structure_family)
    if family not in WRITABLE_MIMETYPES:
        raise BadRequest(f"The catalog cannot store data of structure family {family.value}")
    if source.structure is None:
        raise BadRequest("A data source to be written needs a structure")
    wanted = WRITABLE_MIMETYPES[family]
    others = OTHER_WRITABLE_MIMETYPES.get(family, {})
    if source.mimetype in others:
        others[source.mimetype](source.structure)
    elif source.mimetype not in (None, wanted):
        can = " or ".join([wanted, *others])
        # 415 as upstream's answer: a media type the server cannot store.
        raise UnsupportedUploadType(
            f"Data of family {family.value} are stored as {can}, not {source.mimetype}"
        )
    if family == StructureFamily.array:
        check_zarr_storable(source.structure.data_type)


def check_zarr_storable(data_type: Any) -> None:
    """Refuse (400, before any storage or row is made) an array data type that the catalog's
    zarr v3 storage cannot hold as it is: one zarr-python has no type for (``float128``,
    ``complex256``, objects), or one a reader of the stored array would read as another (a
    record with a sub-array field or a big-endian field)."""
    from ..zarr_format.v3 import read_back_dtype

    dtype = data_type.to_numpy_dtype()
    if read_back_dtype(dtype) != dtype:
        raise InvalidDtype(
            str(dtype), "the catalog stores arrays as zarr v3, which cannot hold this data type"
        )


def node_storages(
    uris: Iterable[tuple[str, bool]], locations: Sequence[Storage]
) -> list[NodeStorage]:
    """The places of the nodes holding the given writable assets (``(data_uri, is_dir)``):
    only ever a direct child of one of the catalog's directories or buckets."""
    directories = [loc.path for loc in locations if isinstance(loc, FileStorage)]
    buckets = [loc for loc in locations if isinstance(loc, ObjectStorage)]
    found: dict[str, NodeStorage] = {}
    for uri, is_directory in uris:
        scheme = urlsplit(uri).scheme
        if scheme == "file":
            path = path_from_uri(uri)
            directory = path if is_directory else path.parent
            if any(directory.parent == root for root in directories):
                found[str(directory)] = DirectoryStorage(directory)
        elif scheme in ("http", "https"):
            for bucket in buckets:
                if not uri.startswith(bucket.uri + "/"):
                    continue
                parts = uri[len(bucket.uri) + 1 :].split("/")
                if (is_directory and len(parts) == 1) or (not is_directory and len(parts) == 2):
                    storage = BucketStorage(bucket, parts[0])
                    found[storage.uri] = storage
        # Other schemes are rows in SQL storage: removed by .sql_tables.delete_datasets.
    return list(found.values())


def node_directories(uris: Iterable[tuple[str, bool]], roots: list[Path]) -> set[Path]:
    """The per-node directories holding the given writable assets (``(data_uri, is_dir)``)."""
    places = node_storages(uris, [FileStorage(str(root)) for root in roots])
    return {place.path for place in places if isinstance(place, DirectoryStorage)}


def remove_directories(directories: Iterable[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def destroy_storages(storages: Iterable[NodeStorage]) -> None:
    """Remove the data of nodes that are gone (their rows deleted or never committed). A store
    failing now leaves objects nobody refers to; that is logged, not raised, since the nodes
    are gone whatever happens here."""
    for storage in storages:
        try:
            storage.destroy()
        except Exception as err:  # noqa: BLE001 - see above
            logger.warning(
                "Could not remove the data of a deleted node at %s: %s", storage.uri, err
            )


def local_tabular_storage(directory: Path, stem: str) -> str:
    """A SQL storage URI for appendable tables (and ragged arrays) in a file of ``directory``:
    DuckDB, as upstream's throw-away servers use, or SQLite where DuckDB is not installed."""
    import importlib.util

    if importlib.util.find_spec("adbc_driver_duckdb") and importlib.util.find_spec("duckdb"):
        return f"duckdb:///{Path(directory) / f'{stem}.duckdb'}"
    return f"sqlite:///{Path(directory) / f'{stem}.sqlite'}"

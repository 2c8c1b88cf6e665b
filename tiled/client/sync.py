"""Copy nodes from one Tiled server to another, or within one: :func:`copy` (upstream's
``tiled.client.sync.copy``).

A member is made anew at the destination with its key, metadata, specs and data source (the
same structure, and the same storage format: a table stored as CSV stays CSV), then its data
are written there through the destination's API: arrays and sparse arrays block by block,
tables partition by partition (appendable ones appended), awkward and ragged arrays whole.
Data registered from files (``external``) are not copied: the node is registered at the
destination as the same files, which that server must be allowed to read (its
``readable_storage``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..mimetypes import SQL_TABLE_MIMETYPE
from ..structures.core import StructureFamily
from ..structures.data_source import DataSource, Management
from .utils import ClientError

__all__ = ["copy"]

CONFLICT = 409
ON_CONFLICT = ("error", "warn", "skip")


def copy(source: Any, dest: Any, on_conflict: str = "error") -> None:
    """Copy ``source`` into ``dest``.

    ``source`` is a container's client (its members are copied, and theirs, into the
    container ``dest``: a search's results copy what matched), a mapping of keys to nodes'
    clients, or pairs of them (``container.items()[:10]``); or the client of a node with data
    (an array, a table...), whose data are written into ``dest``, a node of the same structure.

    A key ``dest`` holds already (the server's 409) is an error with ``on_conflict="error"``
    (the default); ``"skip"`` leaves that node as it is, ``"warn"`` too, with a warning.

    >>> from tiled.client import from_uri
    >>> from tiled.client.sync import copy
    >>> copy(from_uri("http://a:8000", api_key="k"), from_uri("http://b:8000", api_key="k"))
    """
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict is one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    family = getattr(source, "structure_family", None)
    if family is None:
        members = source.items() if isinstance(source, Mapping) else source
        _copy_members(members, dest, on_conflict)
    elif family == StructureFamily.container:
        _copy_members(_with_data_sources(source).items(), dest, on_conflict)
    else:
        _data_copier(family)(source, dest)


def _with_data_sources(container: Any) -> Any:
    # Listed with their data sources: one request per page, not one per member.
    return container.new_variation(include_data_sources=True)


def _copy_members(members: Iterable[tuple[str, Any]], dest: Any, on_conflict: str) -> None:
    for key, node in members:
        family = StructureFamily(node.structure_family)
        sources = node.data_sources()
        if len(sources) > 1:
            raise NotImplementedError(f"{key!r} has several data sources: it cannot be copied")
        registered = bool(sources) and sources[0].management == Management.external
        if registered:
            new_sources = sources  # the same files, read by the destination's server
        elif family == StructureFamily.container:
            new_sources = []
        elif not sources:
            raise ValueError(f"{key!r} is a {family.value} without a data source: no data to copy")
        else:
            (stored,) = sources
            new_sources = [
                DataSource(
                    structure_family=stored.structure_family,
                    structure=stored.structure,
                    mimetype=stored.mimetype,
                    management=stored.management,
                )  # fmt: skip
            ]
        try:
            made = dest.new(
                family, new_sources, key=key, metadata=dict(node.metadata), specs=list(node.specs)
            )
        except ClientError as err:
            if err.response.status_code != CONFLICT or on_conflict == "error":
                raise
            if on_conflict == "warn":
                warnings.warn(
                    f"Not copied: {key!r} is in the destination already", UserWarning, stacklevel=3
                )
            continue
        if registered:
            continue  # its files are its data
        if family == StructureFamily.container:
            _copy_members(_with_data_sources(node).items(), made, on_conflict)
        else:
            _data_copier(family)(node, made)


def _blocks(chunks: Any) -> Iterable[tuple[int, ...]]:
    return itertools.product(*(range(len(sizes)) for sizes in chunks))


def _copy_array(source: Any, dest: Any) -> None:
    for block in _blocks(source.chunks):
        dest.write_block(source.read_block(block), block)


def _copy_sparse(source: Any, dest: Any) -> None:
    for block in _blocks(source.chunks):
        values = source.read_block(block)
        dest.write_block(values.coords, values.data, block)


def _copy_table(source: Any, dest: Any) -> None:
    (stored,) = dest.data_sources() or [None]
    appended = (
        stored is not None and stored.mimetype == SQL_TABLE_MIMETYPE
    )  # rows appended, not written
    for partition in range(source.structure().npartitions):
        rows = source.read_partition(partition)
        if appended:
            dest.append_partition(partition, rows)
        else:
            dest.write_partition(partition, rows)


def _copy_awkward(source: Any, dest: Any) -> None:
    import awkward

    _, _, buffers = awkward.to_buffers(source.read())
    dest.write(buffers)


def _copy_ragged(source: Any, dest: Any) -> None:
    dest.write(source.read())


DATA_COPIERS: dict[StructureFamily, Callable[[Any, Any], None]] = {
    StructureFamily.array: _copy_array,
    StructureFamily.sparse: _copy_sparse,
    StructureFamily.table: _copy_table,
    StructureFamily.awkward: _copy_awkward,
    StructureFamily.ragged: _copy_ragged,
}


def _data_copier(family: Any) -> Callable[[Any, Any], None]:
    try:
        return DATA_COPIERS[StructureFamily(family)]
    except (KeyError, ValueError):
        raise NotImplementedError(f"Data of structure family {family} cannot be copied") from None

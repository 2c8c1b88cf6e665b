"""Node encoders for containers: an HDF5 file of the whole subtree, or a JSON metadata tree."""

from __future__ import annotations

import io
from typing import Any

from ..errors import UnsupportedMediaType
from ..utils import run_sync
from . import _json
from ._walk import family_of, members


async def encode_hdf5(node: Any, options: Any) -> bytes:
    """Containers as groups, arrays (sparse ones densified) as datasets, each table as a group
    of column datasets, metadata as attributes; members HDF5 cannot hold are left out."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        await _fill_group(file, node)
    return buffer.getvalue()


async def _fill_group(group: Any, node: Any) -> None:
    from ._hdf5 import write_attributes

    write_attributes(group, node.metadata())
    async for key, child in members(node):
        family = family_of(child)
        if family == "container":
            await _fill_group(group.create_group(key), child)
        elif family == "table":
            await run_sync(_write_table_node, group.create_group(key), child)
        elif family in ("array", "sparse"):
            await run_sync(_write_array_node, group, key, child)


def _write_table_node(group: Any, node: Any) -> None:
    from ._hdf5 import write_attributes, write_table

    write_attributes(group, node.metadata())
    write_table(group, node.read())


def _write_array_node(group: Any, key: str, node: Any) -> None:
    from ._hdf5 import write_array, write_attributes

    data = node.read()
    if family_of(node) == "sparse":
        data = data.todense()
    try:
        write_array(group, key, data)
    except (TypeError, ValueError, UnsupportedMediaType):
        return  # a dtype HDF5 cannot hold: skip this member, keep the rest of the export
    write_attributes(group[key], node.metadata())


async def encode_json(node: Any, options: Any) -> bytes:
    """``{"contents": {key: {...}}, "metadata": {...}}`` down the tree; no data values."""
    return _json.dumps(await _describe(node))


async def _describe(node: Any) -> dict[str, Any]:
    if family_of(node) != "container":
        return {"metadata": node.metadata()}
    contents = {key: await _describe(child) async for key, child in members(node)}
    return {"contents": contents, "metadata": node.metadata()}

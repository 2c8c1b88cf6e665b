"""Node encoders for containers: an HDF5 file of the whole subtree, or a JSON metadata tree."""

from __future__ import annotations

import io
from typing import Any

# Attributes are what a node's metadata stands for, by spec (an xarray node's are its
# "attrs"), as the zarr view writes them; write_attributes leaves out the zarr view's note.
from ..adapters.base import zarr_attributes
from ..adapters.walk import walk
from ..errors import UnsupportedMediaType
from ..structures.json import to_json_value
from ..utils import run_sync
from . import _json
from ._walk import family_of


async def encode_hdf5(node: Any, options: Any) -> bytes:
    """Containers as groups, arrays (sparse ones densified) as datasets, each table as a group
    of column datasets, metadata as attributes; members HDF5 cannot hold are left out, and
    metadata it cannot hold is refused (406)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        await _fill_group(file, node)
    return buffer.getvalue()


async def _fill_group(file: Any, node: Any) -> None:
    from ._hdf5 import write_attributes

    write_attributes(file, zarr_attributes(node))
    async for visit in walk(node):
        child, parent = visit.node, file["/".join(visit.path[:-1]) or "/"]
        family = family_of(child)
        if family == "container":
            write_attributes(parent.create_group(visit.key), zarr_attributes(child))
            continue  # its members follow (depth first), inside the group just made
        visit.prune()
        if family == "table":
            await run_sync(_write_table_node, parent.create_group(visit.key), child)
        elif family in ("array", "sparse"):
            await run_sync(_write_array_node, parent, visit.key, child)


def _write_table_node(group: Any, node: Any) -> None:
    from ._hdf5 import write_attributes, write_table

    write_attributes(group, zarr_attributes(node))
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
    write_attributes(group[key], zarr_attributes(node))


async def encode_json(node: Any, options: Any) -> bytes:
    """``{"contents": {key: {...}}, "metadata": {...}}`` down the tree; no data values."""
    described = await _describe(node)
    try:
        return _json.dumps(described)
    except TypeError as err:  # orjson's JSONEncodeError: past its 255 levels of nesting
        if "recursion" not in str(err).lower():
            raise
        raise UnsupportedMediaType(
            "The tree is nested too deeply to be described in one JSON document: export a "
            "part of it, or export it as HDF5 or as a zarr zip"
        ) from None


async def _describe(node: Any) -> dict[str, Any]:
    if family_of(node) != "container":
        return {"metadata": to_json_value(node.metadata())}
    described = {"contents": {}, "metadata": to_json_value(node.metadata())}
    by_path: dict[tuple[str, ...], dict[str, Any]] = {(): described}
    async for visit in walk(node):
        child = visit.node
        if family_of(child) == "container":
            metadata = to_json_value(child.metadata())
            entry = by_path[visit.path] = {"contents": {}, "metadata": metadata}
        else:
            visit.prune()  # described by its metadata alone
            entry = {"metadata": to_json_value(child.metadata())}
        by_path[visit.path[:-1]]["contents"][visit.key] = entry
    return described

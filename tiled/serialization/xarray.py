"""Node encoders for ``xarray_dataset`` containers: the dataset as one pandas DataFrame.

The children are read, rebuilt into an ``xarray.Dataset`` (dimension names from each child's
structure; ``xarray_coord`` children as coordinates) and flattened with ``to_dataframe()``,
whose index holds the coordinates. To serve a subset of variables, pass the node's
``read(fields)`` variation as the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UnsupportedMediaType
from ..utils import run_sync
from ._walk import family_of, members, spec_names

NodeEncoder = Callable[[Any, Any], Any]


async def _variables(node: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data variables, coordinates)`` as ``{name: (dims, values)}``."""
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    async for key, child in members(node):
        if family_of(child) != "array":
            continue
        values = await run_sync(child.read)
        if values.dtype.fields is None and not values.dtype.isnative:
            # Arrow holds native byte order only (netCDF-3 variables are big-endian).
            values = values.astype(values.dtype.newbyteorder("="))
        dims = child.structure().dims or tuple(f"{key}_dim_{i}" for i in range(values.ndim))
        target = coords if "xarray_coord" in spec_names(child) else data_vars
        target[key] = (tuple(dims), values)
    return data_vars, coords


def _to_frame(data_vars: dict[str, Any], coords: dict[str, Any], reset_index: bool) -> Any:
    import xarray

    try:
        frame = xarray.Dataset(data_vars, coords=coords).to_dataframe()
    except (ValueError, TypeError) as error:
        raise UnsupportedMediaType(f"This dataset has no table form: {error}") from error
    # Text formats have no index, so the coordinates become ordinary columns there.
    return frame.reset_index() if reset_index else frame


def dataset_encoder(table_encoder: Callable[..., bytes], *, reset_index: bool) -> NodeEncoder:
    """A node encoder for datasets made of a table data encoder."""

    async def encode_dataset(node: Any, options: Any) -> bytes:
        data_vars, coords = await _variables(node)
        frame = await run_sync(_to_frame, data_vars, coords, reset_index)
        return await run_sync(table_encoder, frame, node.metadata())

    encode_dataset.__name__ = f"{table_encoder.__name__}_of_dataset"
    return encode_dataset


async def serialize_json(
    media_type: str, node: Any, metadata: Any = None, filter_for_access: Any = None
) -> bytes:
    """The dataset as JSON columns ``{"name": [values, ...]}`` (upstream Tiled's serializer
    signature). The index (the dimension coordinates) is left out, as upstream leaves it."""
    from .table import encode_json

    return await dataset_encoder(encode_json, reset_index=False)(node, None)

"""Resizing a stored array: what a shrink cuts off is forgotten, so that growing the array
again shows the fill value there, in every dimension and corner (zarr-python's own resize
keeps the chunks that stay whole, with the values they held outside the new shape)."""

from __future__ import annotations

import itertools

import numpy
import pytest
import zarr

from tiled.adapters.node_storage import DirectoryStorage
from tiled.adapters.zarr_writable import resize_stored

CASES = [
    # (shape, chunks, shrunk)
    ((10,), (4,), (6,)),
    ((10, 10), (4, 4), (5, 5)),  # a corner chunk cut along both dimensions
    ((10, 10), (4, 4), (5, 10)),
    ((9, 7), (4, 3), (9, 2)),
    ((7, 6, 5), (3, 4, 2), (4, 5, 3)),
    ((8, 8), (4, 4), (4, 6)),  # cut on a chunk boundary along one dimension only
    ((6, 5), (2, 2), (8, 3)),  # one dimension grows while another shrinks
]


@pytest.mark.parametrize("zarr_format, fill_value", [(3, 0), (3, 7), (2, None), (2, -1)])
@pytest.mark.parametrize("shape, chunks, shrunk", CASES)
def test_growing_after_a_shrink_shows_the_fill_value(
    tmp_path, shape, chunks, shrunk, zarr_format, fill_value
):
    storage = DirectoryStorage(tmp_path / "node")
    storage.create()
    array = zarr.create_array(
        storage.zarr_store(), shape=shape, chunks=chunks, dtype="i4",
        fill_value=fill_value, zarr_format=zarr_format,
    )  # fmt: skip
    data = numpy.arange(1, numpy.prod(shape) + 1, dtype="i4").reshape(shape)
    array[...] = data
    resize_stored(storage, shrunk)
    grown = tuple(max(a, b) + 2 for a, b in zip(shape, shrunk, strict=True))
    resize_stored(storage, grown)

    back = zarr.open_array(storage.zarr_store(), mode="r")[...]
    expected = numpy.full(grown, 0 if fill_value is None else fill_value, dtype="i4")
    kept = tuple(slice(0, min(a, b)) for a, b in zip(shape, shrunk, strict=True))
    expected[kept] = data[kept]
    numpy.testing.assert_array_equal(back, expected)
    # No chunk outside the shrunk shape's grid survived it.
    for index in itertools.product(
        *(range(-(-n // c)) for n, c in zip(grown, chunks, strict=True))
    ):
        outside = any(
            i * c >= min(a, b) for i, c, a, b in zip(index, chunks, shape, shrunk, strict=True)
        )
        key = ("c/" + "/".join(map(str, index))) if zarr_format == 3 else ".".join(map(str, index))
        if outside:
            assert storage.get(key) is None, key

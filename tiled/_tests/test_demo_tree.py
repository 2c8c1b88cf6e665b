"""The demo tree has upstream's paths, shapes, dtypes, chunks, metadata and values."""

from __future__ import annotations

import numpy
import pytest

CAT_GREEN = {"animal": "cat", "color": "green"}
DOG_RED = {"animal": "dog", "color": "red"}

# path: (family, shape, dtype, chunks)
ARRAYS = {
    "scalars/pi": ((), "<f8", ()),
    "scalars/e_arr": ((1,), "<U7", ((1,),)),
    "scalars/fsc": ((), "<U5", ()),
    "scalars/fortytwo": ((), "<i8", ()),
    "nested/images/tiny_image": ((50, 50), "<f8", ((50,), (50,))),
    "nested/images/small_image": ((300, 300), "<f8", ((300,), (300,))),
    "nested/images/medium_image": ((1000, 1000), "<f8", ((250,) * 4, (100,) * 10)),
    "nested/images/big_image": ((10000, 10000), "<f8", ((4096, 4096, 1808),) * 2),
    "nested/cubes/tiny_cube": ((50, 50, 50), "<f8", ((50,),) * 3),
    "nested/cubes/tiny_hypercube": ((50,) * 5, "<f8", ((27, 23),) * 5),
    "structured_data/xarray_dataset/temperature": ((2, 2, 3), "<f8", ((2,), (2,), (3,))),
    "structured_data/xarray_dataset/lat": ((2, 2), "<f8", ((2,), (2,))),
    "structured_data/xarray_dataset/time": ((3,), "<M8[ns]", ((3,),)),
    "flat_array": ((100,), "<f8", ((100,),)),
    "low_entropy": ((100, 100), "<i4", ((100,), (100,))),
    "high_entropy": ((100, 100), "<i8", ((100,), (100,))),
    "dynamic": ((3, 3), "<f8", ((3,), (3,))),
}
CONTAINERS = {
    "": ([ "scalars", "nested", "tables", "structured_data", "flat_array", "low_entropy", "high_entropy", "dynamic"], {}),
    "scalars": (["pi", "e_arr", "fsc", "fortytwo"], {"numbers": "constants", "precision": 5}),
    "nested": (["images", "cubes", "sparse_image", "awkward_array"], CAT_GREEN),
    "nested/images": (["tiny_image", "small_image", "medium_image", "big_image"], CAT_GREEN),
    "nested/cubes": (["tiny_cube", "tiny_hypercube"], DOG_RED),
    "tables": (["short_table", "long_table", "wide_table"], {}),
    "structured_data": (["pets", "xarray_dataset"], CAT_GREEN),
    "structured_data/xarray_dataset": (["temperature", "precipitation", "lon", "lat", "time"], {"attrs": {}}),
}  # fmt: skip


def node(tree, path):
    for part in filter(None, path.split("/")):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("path", list(ARRAYS))
def test_array_facts(demo_tree, path):
    shape, dtype, chunks = ARRAYS[path]
    structure = node(demo_tree, path).structure()
    assert structure.shape == shape
    assert structure.data_type.to_numpy_str() == dtype
    assert structure.chunks == chunks


@pytest.mark.parametrize("path", list(CONTAINERS))
def test_container_facts(demo_tree, path):
    keys, metadata = CONTAINERS[path]
    container = node(demo_tree, path)
    assert container.structure_family.value == "container"
    assert list(container) == keys
    assert container.metadata() == metadata


def test_tables_and_specs(demo_tree):
    short = node(demo_tree, "tables/short_table")
    assert short.structure().columns == ["A", "B", "C"] and short.structure().npartitions == 1
    assert short.metadata() == DOG_RED and [s.name for s in short.specs] == ["dataframe"]
    frame = short.read()
    assert [str(t) for t in frame.dtypes] == ["uint8"] * 3
    assert list(frame["A"][:10]) == [2, 5, 6, 7, 1, 6, 2, 3, 7, 3]
    assert (frame["C"] == 3 * frame["A"]).all()
    long = node(demo_tree, "tables/long_table")
    assert long.structure().npartitions == 5 and len(long.read_partition(4)) == 20_000
    wide = node(demo_tree, "tables/wide_table")
    assert len(wide.structure().columns) == 26
    frame = wide.read()
    numpy.testing.assert_allclose(frame["Z"], 26 * frame["A"])
    assert "index" in short.structure().arrow_schema_decoded.names
    xds = node(demo_tree, "structured_data/xarray_dataset")
    assert [s.name for s in xds.specs] == ["xarray_dataset"]
    assert [s.name for s in xds["temperature"].specs] == ["xarray_data_var"]
    assert [s.name for s in xds["time"].specs] == ["xarray_coord"]
    assert xds["temperature"].structure().dims == ("x", "y", "time")


def test_check_values_match_upstream(demo_tree):
    big = node(demo_tree, "nested/images/big_image").read((slice(0, 1), slice(0, 3)))
    numpy.testing.assert_allclose(big[0], [0.773956, 0.438878, 0.858598], atol=1e-6)
    assert node(demo_tree, "high_entropy").read().sum() == -5644
    temperature = node(demo_tree, "structured_data/xarray_dataset/temperature").read()
    numpy.testing.assert_allclose(temperature[0, 0], [18.0413, 8.1574, 25.5713], atol=1e-4)
    assert node(demo_tree, "nested/sparse_image").read().nnz == 1001
    numpy.testing.assert_allclose(
        node(demo_tree, "flat_array").read()[:3], [0.686338, 0.687618, 0.466602], atol=1e-6
    )
    pets = node(demo_tree, "structured_data/pets").read()
    assert pets["name"].tolist() == ["Rex", "Fido"] and pets["age"].tolist() == [9, 3]
    assert node(demo_tree, "scalars/fsc").read() == "1/137"
    assert node(demo_tree, "scalars/e_arr").read().tolist() == ["2.71828"]


def test_lazy_random_arrays_equal_an_eager_draw(demo_tree):
    rng = numpy.random.default_rng(seed=42)
    eager_rows = rng.random(3 * 10000).reshape(3, 10000)
    big = node(demo_tree, "nested/images/big_image")
    numpy.testing.assert_array_equal(
        big.read((slice(1, 3), slice(9990, 10000))), eager_rows[1:3, 9990:]
    )
    # The hypercube's stream starts after big, small, medium, tiny and cube.
    rng.bit_generator.advance(10000 * 10000 - 3 * 10000 + 300**2 + 1000**2 + 50**2 + 50**3)
    first_values = rng.random(100)
    cube = node(demo_tree, "nested/cubes/tiny_hypercube")
    numpy.testing.assert_array_equal(cube.read((0, 0, 0, slice(0, 2))).ravel(), first_values)

"""The Python client (``tiled.client``) against real servers: the demo tree in-process and over
a live uvicorn server, a writable SQLite catalog (SimpleTiledServer), and a multi-user server.

Expected values come from the source data (the demo tree's adapters, the frames and arrays
written) or are computed here from the source metadata, never typed in.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import subprocess
import sys
from urllib.parse import quote

import dask.array
import dask.dataframe
import httpx
import numpy
import pandas
import pyarrow
import pytest
import sparse
import xarray
import zarr

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.table import DataFrameAdapter
from tiled.client import (
    ASCENDING,
    DELETE_KEY,
    DESCENDING,
    Context,
    from_context,
    from_uri,
    record_history,
)
from tiled.client.array import ArrayClient
from tiled.client.utils import AuthenticationRequired, ClientError
from tiled.client.xarray import write_xarray_dataset
from tiled.config import Authentication
from tiled.ndslice import NDSlice
from tiled.queries import (
    AccessBlobFilter,
    AccessTagsFilter,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    Key,
    KeyLookup,
    KeyPresent,
    KeysFilter,
    Like,
    NotEq,
    NotIn,
    Regex,
    SpecQuery,
    SpecsQuery,
    StructureFamilyQuery,
)
from tiled.server.app import build_app
from tiled.server.simple import SimpleTiledServer

from .live_server import serve

# --- helpers ---


def source_of(tree, path: str):
    """The demo tree's adapter at ``path``."""
    node = tree
    for part in filter(None, path.split("/")):
        node = node[part]
    return node


def dataset_of(adapter) -> xarray.Dataset:
    """The xarray Dataset an xarray_dataset adapter serves, rebuilt from its variables."""
    data_vars, coords = {}, {}
    for name, child in adapter.items():
        variable = xarray.Variable(
            child.structure().dims, child.read(), child.metadata().get("attrs", {})
        )
        is_coord = "xarray_coord" in {spec.name for spec in child.specs}
        (coords if is_coord else data_vars)[name] = variable
    return xarray.Dataset(data_vars, coords=coords, attrs=adapter.metadata().get("attrs", {}))


def lookup(metadata: dict, dotted: str):
    """The value at a dotted key, or KeyError."""
    value = metadata
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def urls(history) -> list[str]:
    return [str(request.url) for request in history.requests]


# --- servers and clients ---


@pytest.fixture(scope="module")
def demo_context(demo_tree):
    """The demo tree served in-process, single-user (the app's own API key)."""
    with Context.from_app(build_app(demo_tree)) as context:
        yield context


@pytest.fixture(scope="module", params=["in-process", "live"])
def demo(request, demo_context, demo_server):
    """The demo tree's root: in-process through Context.from_app, and over loopback HTTP."""
    if request.param == "in-process":
        return from_context(demo_context)
    return from_uri(demo_server.url)


@pytest.fixture(scope="module")
def simple_server(tmp_path_factory):
    with SimpleTiledServer(tmp_path_factory.mktemp("simple"), api_key="secret") as server:
        yield server


@pytest.fixture(scope="module")
def writable(simple_server):
    return from_uri(simple_server.uri)


@pytest.fixture
def scratch(writable, request):
    """A new container of the writable catalog, one per test."""
    return writable.create_container(request.node.name.replace("[", "-").rstrip("]"))


# --- reading containers ---


def test_container_is_a_mapping_of_the_source(demo, demo_tree):
    keys = list(demo_tree)
    assert len(demo) == len(keys) and list(demo) == keys
    assert list(demo.keys()) == keys
    assert demo.keys()[1:3] == keys[1:3]
    assert demo.keys()[-1] == keys[-1] == demo.keys().last()
    assert demo.keys()[-3:-1] == keys[-3:-1]
    assert demo.keys()[::3] == keys[::3]
    assert demo.keys()[len(keys) : len(keys) + 5] == []
    assert demo.keys().head(2) == keys[:2] and demo.keys().tail(2) == keys[-2:]
    assert demo.keys().first() == keys[0]
    with pytest.raises(IndexError):
        demo.keys()[len(keys)]
    with pytest.raises(IndexError):
        demo.keys()[-len(keys) - 1]
    assert [v.path_parts for v in demo.values()[1:3]] == [[k] for k in keys[1:3]]
    key, value = demo.items()[-1]
    assert key == keys[-1] and value.path_parts == [keys[-1]]
    assert [k for k, _ in demo.items()] == keys
    assert all(key in demo for key in keys)
    assert "not-a-key" not in demo


def test_nested_lookups_agree(demo, demo_tree):
    expected = list(demo_tree["nested"]["images"])
    for node in (demo["nested"]["images"], demo["nested/images"], demo["nested", "images"]):
        assert node.path_parts == ["nested", "images"] and list(node) == expected
    assert demo["nested", "images/tiny_image"].path_parts == ["nested", "images", "tiny_image"]
    assert demo["nested/images"].parent.path_parts == ["nested"]
    assert demo.parent is None


@pytest.mark.parametrize(
    "key", ["not-a-key", "nested/not-a-key", ("nested", "not-a-key"), "flat_array/below"]
)
def test_missing_keys_raise_key_error(demo, key):
    with pytest.raises(KeyError):
        demo[key]
    assert key not in demo


def test_metadata_and_specs_come_from_the_source(demo, demo_tree):
    for path in ["scalars", "nested", "tables/long_table", "structured_data/xarray_dataset"]:
        node, source = demo[path], source_of(demo_tree, path)
        assert dict(node.metadata) == dict(source.metadata())
        assert [s.name for s in node.specs] == [s.name for s in source.specs]
        assert node.structure_family == source.structure_family
    with pytest.raises(TypeError):
        demo["scalars"].metadata["numbers"] = "changed"
    metadata = demo["scalars"].metadata
    with pytest.raises(TypeError):
        metadata |= {"numbers": "changed"}
    copy = demo["scalars"].metadata_copy()[0]
    copy["numbers"] = "changed"  # a plain dict, detached
    assert (
        demo["scalars"].metadata["numbers"] == source_of(demo_tree, "scalars").metadata()["numbers"]
    )


def test_listing_pages_through_large_containers():
    # More children than one page (100) of /search.
    keys = [f"n{i:03d}" for i in range(250)]
    tree = MapAdapter({k: ArrayAdapter.from_array(numpy.array([i])) for i, k in enumerate(keys)})
    with Context.from_app(build_app(tree)) as context:
        client = from_context(context)
        assert len(client) == 250 and list(client) == keys
        assert client.keys()[95:105] == keys[95:105]
        assert client.keys()[-1] == keys[-1]
        assert client.values()[150].read().tolist() == [150]
        assert client.keys()[240:] == keys[240:]


# --- reading arrays ---

ARRAYS = [
    "scalars/pi",
    "scalars/e_arr",
    "scalars/fsc",
    "scalars/fortytwo",
    "nested/images/tiny_image",
    "nested/images/small_image",
    "nested/images/medium_image",
    "nested/cubes/tiny_cube",
    "structured_data/pets",
    "flat_array",
    "low_entropy",
    "high_entropy",
]


@pytest.mark.parametrize("path", ARRAYS)
def test_array_reads_equal_the_source(demo, demo_tree, path):
    node, source = demo[path], source_of(demo_tree, path)
    expected = source.read()
    structure = source.structure()
    assert node.shape == expected.shape and node.dtype == expected.dtype
    assert node.chunks == tuple(structure.chunks) and node.dims == structure.dims
    assert node.ndim == expected.ndim and node.size == expected.size
    assert node.nbytes == expected.nbytes
    got = node.read()
    assert got.dtype == expected.dtype
    numpy.testing.assert_array_equal(got, expected)
    numpy.testing.assert_array_equal(numpy.asarray(node), expected)
    numpy.testing.assert_array_equal(node[...], expected)
    if expected.ndim:
        assert len(node) == expected.shape[0]
    else:
        with pytest.raises(TypeError):
            len(node)


SLICES = [
    5,
    -1,
    numpy.int64(7),
    (3, 4),
    (-2, -3),
    slice(10, 20),
    slice(None, None, 7),
    (slice(None, None, 7), 3),
    (Ellipsis, 2),
    (1, Ellipsis),
    (slice(-10, None), slice(5, 40, 13)),
    (slice(20, 10),),  # empty
    (slice(3, 4), slice(0, 0)),  # empty
]


@pytest.mark.parametrize("key", SLICES, ids=repr)
@pytest.mark.parametrize("path", ["nested/images/tiny_image", "nested/cubes/tiny_cube"])
def test_array_slicing_equals_numpy(demo, demo_tree, path, key):
    expected = source_of(demo_tree, path).read()[key]
    got = demo[path][key]
    assert got.shape == expected.shape and got.dtype == expected.dtype
    numpy.testing.assert_array_equal(got, expected)


def test_unsupported_indices_raise_index_error(demo):
    node = demo["nested/images/tiny_image"]
    for key in [(1, 2, 3), 50, (0, -51), [1, 2]]:
        with pytest.raises(IndexError):
            node[key]


def test_reads_are_one_request_up_to_the_limit_then_chunk_aligned_pieces(
    demo, demo_tree, monkeypatch
):
    node = demo["nested/images/medium_image"]  # 8 MB, chunks 250 x 100
    source = source_of(demo_tree, "nested/images/medium_image").read()
    with record_history() as history:
        whole = node.read()
    [request] = history.requests
    assert "/array/full/nested/images/medium_image" in str(request.url)
    numpy.testing.assert_array_equal(whole, source)

    # Above the limit: several /array/full requests, cut on chunk boundaries.
    monkeypatch.setattr(ArrayClient, "RESPONSE_BYTESIZE_LIMIT", source.nbytes // 5)
    key = (slice(3, 997), slice(1, None))  # not aligned with the chunks
    with record_history() as history:
        large = node[key]
    assert all("/array/full/nested/images/medium_image" in url for url in urls(history))
    assert len(history.requests) == node.fetch_count(key) > 1
    numpy.testing.assert_array_equal(large, source[key])


def test_large_strided_read_of_big_image(demo, demo_tree):
    # 16 MB out of the 0.8 GB demo image, with a step.
    key = (slice(5, 405, 2), slice(3, None))
    expected = source_of(demo_tree, "nested/images/big_image").read(NDSlice(*key))
    numpy.testing.assert_array_equal(demo["nested/images/big_image"][key], expected)


@pytest.fixture(scope="module")
def dtype_arrays():
    """Arrays of each kind of data type, each above 4 MiB (read in pieces when the limit is
    lowered)."""
    rng = numpy.random.default_rng(11)
    arrays = {
        "big_endian": rng.random(600_000).astype(">f8"),
        "bool": rng.random(4_500_000) > 0.5,
        "complex": (rng.random(300_000) + 1j * rng.random(300_000)).astype("complex128"),
        "float16": rng.random(2_300_000).astype("float16"),
        "uint8": rng.integers(0, 255, 4_500_000, dtype="uint8"),
        "int32_2d": rng.integers(-(2**31), 2**31 - 1, (1_100, 1_000), dtype="int32"),
        "datetime": numpy.arange(600_000).astype("datetime64[ns]"),
        "timedelta": numpy.arange(600_000).astype("timedelta64[s]"),
    }
    chunks = {k: tuple(max(1, s // 3) for s in v.shape) for k, v in arrays.items()}
    tree = MapAdapter({k: ArrayAdapter.from_array(v, chunks=chunks[k]) for k, v in arrays.items()})
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield arrays, from_uri(live.url)


@pytest.mark.parametrize(
    "name",
    ["big_endian", "bool", "complex", "float16", "uint8", "int32_2d", "datetime", "timedelta"],
)
def test_large_reads_of_every_data_type(dtype_arrays, name, monkeypatch):
    arrays, client = dtype_arrays
    expected, node = arrays[name], client[name]
    assert expected.nbytes > 4 * 2**20 and node.dtype == expected.dtype
    monkeypatch.setattr(ArrayClient, "RESPONSE_BYTESIZE_LIMIT", 2**20)
    for key in [..., slice(1_000, 400_000, 3), slice(None, None, -7)]:
        got = node[key]
        assert got.dtype == expected.dtype  # big or small, through zarr or not
        numpy.testing.assert_array_equal(got, expected[key])


def test_large_reads_show_progress(demo_tree, demo_context, monkeypatch, capsys):
    import tiled.client.array

    monkeypatch.setattr(tiled.client.array, "PROGRESS_THRESHOLD", 4 * 2**20)
    node = from_context(demo_context)["nested/images/medium_image"]
    expected = source_of(demo_tree, "nested/images/medium_image").read()
    monkeypatch.setattr(node.context, "show_progress", False)
    node.read()
    assert "100%" not in capsys.readouterr().err
    monkeypatch.setattr(node.context, "show_progress", True)
    node.read()
    assert "100%" not in capsys.readouterr().err  # no terminal watching: no bar
    monkeypatch.setattr(tiled.client.array, "is_interactive", lambda: True)
    numpy.testing.assert_array_equal(node.read(), expected)
    assert "100%" in capsys.readouterr().err


def test_read_block(demo, demo_tree):
    node = demo["nested/images/medium_image"]
    source = source_of(demo_tree, "nested/images/medium_image")
    numpy.testing.assert_array_equal(node.read_block((1, 2)), source.read_block((1, 2)))
    numpy.testing.assert_array_equal(
        node.read_block((3, 9), slice=(slice(10, 20), 5)), source.read_block((3, 9))[10:20, 5]
    )
    pets = demo["structured_data/pets"]
    numpy.testing.assert_array_equal(
        pets.read_block((0,)), source_of(demo_tree, "structured_data/pets").read()
    )


def test_dask_clients_are_lazy_and_equal(demo, demo_tree):
    client = from_context(demo.context, "dask")
    node = client["nested/images/medium_image"]
    lazy = node.read()
    assert isinstance(lazy, dask.array.Array)
    assert lazy.chunks == node.chunks
    expected = source_of(demo_tree, "nested/images/medium_image").read()
    numpy.testing.assert_array_equal(lazy[100:300, ::7].compute(), expected[100:300, ::7])
    numpy.testing.assert_array_equal(node.compute(), expected)
    table = client["tables/long_table"].read()
    assert isinstance(table, dask.dataframe.DataFrame) and table.npartitions == 5
    source = source_of(demo_tree, "tables/long_table").read()
    pandas.testing.assert_frame_equal(table.compute(), source)
    pandas.testing.assert_frame_equal(
        client["tables/long_table"].read("B").compute(), source[["B"]]
    )


def test_structure_clients_by_family_or_spec(demo, demo_tree):
    from tiled.client.array import ArrayClient
    from tiled.client.constructors import NUMPY_CLIENTS

    class Variable(ArrayClient):
        """A client for the arrays carrying one spec."""

    client = from_context(demo.context, {**NUMPY_CLIENTS, "xarray_data_var": Variable})
    variable = client["structured_data/xarray_dataset/temperature"]
    assert type(variable) is Variable
    assert type(client["structured_data/xarray_dataset"]["lon"]) is ArrayClient  # a coord
    assert type(client.values()[-1]) is ArrayClient
    expected = source_of(demo_tree, "structured_data/xarray_dataset/temperature").read()
    numpy.testing.assert_array_equal(variable.read(), expected)
    with pytest.raises(ValueError):
        from_context(demo.context, "no-such-dispatch")


# --- reading tables ---


@pytest.mark.parametrize("path", ["tables/short_table", "tables/long_table", "tables/wide_table"])
def test_tables_read_as_the_source(demo, demo_tree, path):
    node, source = demo[path], source_of(demo_tree, path)
    expected = source.read()
    assert node.columns == list(expected.columns) == list(node)
    assert node.npartitions == source.structure().npartitions
    pandas.testing.assert_frame_equal(node.read(), expected)
    some = list(expected.columns[::2])
    pandas.testing.assert_frame_equal(node.read(columns=some), expected[some])
    pandas.testing.assert_frame_equal(node.read(some[0]), expected[[some[0]]])
    column = node[some[0]]
    numpy.testing.assert_array_equal(column.read(), expected[some[0]].to_numpy())
    for partition in range(node.npartitions):
        pandas.testing.assert_frame_equal(
            node.read_partition(partition), source.read_partition(partition)
        )
    with pytest.raises(KeyError):
        node["not-a-column"]
    with pytest.raises(TypeError):
        len(node)


def test_reading_many_columns_sends_them_in_a_body():
    # 3,000 column names make a URL longer than httpx allows (64 kB): POST them, as upstream.
    columns = {f"a_rather_long_column_name_{i:04d}": numpy.arange(3) + i for i in range(3000)}
    frame = pandas.DataFrame(columns)
    tree = MapAdapter({"t": DataFrameAdapter.from_pandas(frame, npartitions=2)})
    with Context.from_app(build_app(tree)) as context:
        node = from_context(context)["t"]
        wanted = list(columns)[::-1]
        with record_history() as history:
            got = node.read(columns=wanted)
        assert [r.method for r in history.requests] == ["POST", "POST"]
        pandas.testing.assert_frame_equal(got, frame[wanted])
        with record_history() as history:
            few = node.read_partition(1, columns=wanted[:2])
        assert [r.method for r in history.requests] == ["GET"]
        pandas.testing.assert_frame_equal(few, tree["t"].read_partition(1, wanted[:2]))


# --- reading sparse arrays ---


def test_sparse_reads_equal_the_source(demo, demo_tree):
    node = demo["nested/sparse_image"]
    source = source_of(demo_tree, "nested/sparse_image")
    dense = source.read().todense()
    got = node.read()
    assert isinstance(got, sparse.COO)
    assert node.shape == dense.shape and node.chunks == tuple(source.structure().chunks)
    numpy.testing.assert_array_equal(got.todense(), dense)
    numpy.testing.assert_array_equal(node.todense(), dense)
    for key in [(slice(2, 50, 3), slice(None)), (slice(None), slice(10, 20)), (5, slice(0, 30))]:
        numpy.testing.assert_array_equal(node[key].todense(), dense[key])
    numpy.testing.assert_array_equal(
        node.read_block((0, 0)).todense(), source.read_block((0, 0)).todense()
    )


# --- xarray datasets and zarr ---


def test_xarray_dataset_reads_as_the_source(demo, demo_tree):
    expected = dataset_of(source_of(demo_tree, "structured_data/xarray_dataset"))
    node = demo["structured_data/xarray_dataset"]
    for _ in range(3):  # zarr gathers a group's members concurrently: the order is ours
        got = node.read()
        xarray.testing.assert_identical(got, expected)
        assert list(got.data_vars) == list(expected.data_vars)
        assert list(got.coords) == list(expected.coords)
    xarray.testing.assert_identical(node.read(variables=["temperature"]), expected[["temperature"]])
    lazy = from_context(demo.context, "dask")["structured_data/xarray_dataset"].read()
    assert isinstance(lazy["temperature"].data, dask.array.Array)
    xarray.testing.assert_identical(lazy.load(), expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stores_open_with_zarr_and_xarray(demo, demo_tree, zarr_format):
    images = zarr.open_group(demo["nested/images"].zarr_store(zarr_format), mode="r")
    assert set(images.keys()) == set(demo_tree["nested"]["images"])
    medium = source_of(demo_tree, "nested/images/medium_image").read()
    array = zarr.open_array(demo["nested/images/medium_image"].zarr_store(zarr_format), mode="r")
    assert array.shape == medium.shape
    numpy.testing.assert_array_equal(array[:], medium)
    numpy.testing.assert_array_equal(images["medium_image"][10:20, ::3], medium[10:20, ::3])
    root = zarr.open_group(demo.context.zarr_store([], zarr_format), mode="r")
    assert "tiny_image" in root["nested"]["images"]

    store = demo["structured_data/xarray_dataset"].zarr_store(zarr_format)
    dataset = xarray.open_zarr(store, zarr_format=zarr_format, consolidated=None)
    expected = dataset_of(source_of(demo_tree, "structured_data/xarray_dataset"))
    xarray.testing.assert_identical(dataset.load(), expected)


def test_zarr_store_is_read_only(demo):
    store = demo["flat_array"].zarr_store()
    with pytest.raises(ValueError):
        store.with_read_only(False)
    with pytest.raises(ValueError):
        demo.context.zarr_store([], 4)


# --- queries, sorting, distinct on the demo tree (in memory) ---

DEMO_QUERIES = [
    (Eq("color", "red"), lambda m: m.get("color") == "red"),
    (Eq("animal", "dog"), lambda m: m.get("animal") == "dog"),
    (NotEq("color", "red"), lambda m: "color" in m and m["color"] != "red"),
    (In("color", ["green", "blue"]), lambda m: m.get("color") in ("green", "blue")),
    (NotIn("color", ["green"]), lambda m: "color" in m and m["color"] != "green"),
    (KeyPresent("precision"), lambda m: "precision" in m),
    (KeyPresent("animal", False), lambda m: "animal" not in m),
    (Regex("color", "^gr"), lambda m: str(m.get("color", "")).startswith("gr")),
    (Comparison("ge", "precision", 5), lambda m: m.get("precision", -1) >= 5),
    (FullText("cat"), lambda m: "cat" in " ".join(map(str, m.values())).lower().split()),
]


@pytest.mark.parametrize("query, predicate", DEMO_QUERIES, ids=[repr(q) for q, _ in DEMO_QUERIES])
def test_demo_search_matches_the_source_metadata(demo, demo_tree, query, predicate):
    for path in ["", "tables", "nested", "structured_data"]:
        source = source_of(demo_tree, path)
        expected = [k for k, child in source.items() if predicate(dict(child.metadata()))]
        found = demo[path].search(query) if path else demo.search(query)
        assert list(found) == expected
        assert len(found) == len(expected)


def test_demo_search_by_family_spec_and_keys(demo, demo_tree):
    families = {k: v.structure_family for k, v in demo_tree["nested"].items()}
    assert list(demo["nested"].search(StructureFamilyQuery("container"))) == [
        k for k, f in families.items() if f == "container"
    ]
    specs = {k: [s.name for s in v.specs] for k, v in demo_tree["structured_data"].items()}
    assert list(demo["structured_data"].search(SpecQuery("xarray_dataset"))) == [
        k for k, names in specs.items() if "xarray_dataset" in names
    ]
    wanted = list(demo_tree)[1::2]
    assert list(demo.search(KeysFilter(wanted))) == wanted
    assert list(demo.search(KeyLookup(wanted[0]))) == wanted[:1]


def test_demo_search_chains_and_filters_lookups(demo, demo_tree):
    tables = demo["tables"]
    found = tables.search(Eq("animal", "dog")).search(Eq("color", "red"))
    expected = [
        k for k, v in demo_tree["tables"].items()
        if v.metadata().get("animal") == "dog" and v.metadata().get("color") == "red"
    ]  # fmt: skip
    assert list(found) == expected
    excluded = next(k for k in demo_tree["tables"] if k not in expected)
    with pytest.raises(KeyError):
        found[excluded]
    assert excluded not in found
    assert found[expected[0]].path_parts == ["tables", expected[0]]


@pytest.mark.parametrize("direction", [ASCENDING, DESCENDING])
def test_demo_sort(demo, demo_tree, direction):
    colors = {k: v.metadata()["color"] for k, v in demo_tree["tables"].items()}
    ordered = demo["tables"].sort(("color", direction))
    assert set(ordered) == set(colors)
    got = [colors[k] for k in ordered]
    assert got == sorted(colors.values(), reverse=direction == DESCENDING)


def test_demo_distinct(demo, demo_tree):
    children = list(demo_tree["tables"].values())
    answer = demo["tables"].distinct("color", "animal", structure_families=True, counts=True)
    for key in ["color", "animal"]:
        expected = collections.Counter(child.metadata()[key] for child in children)
        assert {d["value"]: d["count"] for d in answer["metadata"][key]} == expected
    families = collections.Counter(str(child.structure_family.value) for child in children)
    assert {d["value"]: d["count"] for d in answer["structure_families"]} == families


# --- queries, sorting, distinct on a catalog ---

CATALOG_NODES = {
    # key: (family, metadata, specs, access tags)
    "a": ("array", {"color": "red", "n": 1, "tags": ["x", "y"], "text": "Hello world",
                    "sample": {"temp": 300}}, ["s1"], ["public"]),
    "b": ("array", {"color": "blue", "n": 5, "tags": ["y"], "text": "goodbye moon"},
          ["s1", "s2"], None),
    "c": ("container", {"color": "red", "n": 10, "sample": {"temp": 250},
                        "text": "The Moon rises"}, [], ["beta"]),
    "d": ("table", {"color": "green", "n": 2.5, "tags": [], "text": "hello again"}, ["s2"],
          ["public", "beta"]),
    "e": ("container", {}, [], None),
}  # fmt: skip


def _words(metadata) -> set[str]:
    strings = []

    def walk(value):
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(metadata)
    return {word for text in strings for word in text.lower().split()}


def _has(key, test):
    def predicate(node):
        try:
            value = lookup(node[1], key)
        except KeyError:
            return False
        try:
            return bool(test(value))
        except TypeError:
            return False

    return predicate


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


CATALOG_QUERIES = [
    (Eq("color", "red"), _has("color", lambda v: v == "red")),
    (Eq("sample.temp", 300), _has("sample.temp", lambda v: v == 300)),
    (NotEq("color", "red"), _has("color", lambda v: v != "red")),
    (Comparison("gt", "n", 2), _has("n", lambda v: _number(v) and v > 2)),
    (Comparison("le", "n", 2.5), _has("n", lambda v: _number(v) and v <= 2.5)),
    (Comparison("lt", "sample.temp", 280), _has("sample.temp", lambda v: v < 280)),
    (Key("n") >= 5, _has("n", lambda v: _number(v) and v >= 5)),
    (Contains("tags", "y"), _has("tags", lambda v: isinstance(v, list) and "y" in v)),
    (In("color", ["red", "green"]), _has("color", lambda v: v in ("red", "green"))),
    (NotIn("color", ["red"]), _has("color", lambda v: v != "red")),
    (NotIn("color", []), lambda node: True),
    (KeyPresent("sample"), _has("sample", lambda v: True)),
    (KeyPresent("sample", False), lambda node: not _has("sample", lambda v: True)(node)),
    (Like("text", "hello%"), _has("text", lambda v: v.startswith("hello"))),
    (Like("text", "%o_n%"), _has("text", lambda v: "oon" in v)),
    (Regex("text", "^[Hh]ello"), _has("text", lambda v: v.lower().startswith("hello"))),
    (Regex("text", "MOON", case_sensitive=False), _has("text", lambda v: "moon" in v.lower())),
    (FullText("moon"), lambda node: "moon" in _words(node[1])),
    (SpecsQuery(["s1"]), lambda node: "s1" in node[2]),
    (SpecsQuery(["s1"], exclude=["s2"]), lambda node: "s1" in node[2] and "s2" not in node[2]),
    (SpecQuery("s2"), lambda node: "s2" in node[2]),
    (StructureFamilyQuery("container"), lambda node: node[0] == "container"),
    (StructureFamilyQuery("table"), lambda node: node[0] == "table"),
    (KeysFilter(["a", "c", "zz"]), None),  # by key: see the test
    (KeyLookup("b"), None),
    (AccessBlobFilter(None, ["public"]), lambda node: "public" in (node[3] or [])),
    (AccessTagsFilter(["beta"]), lambda node: "beta" in (node[3] or [])),
]


@pytest.fixture(scope="module")
def catalog_container(writable):
    container = writable.create_container("queries")
    for key, (family, metadata, specs, tags) in CATALOG_NODES.items():
        options = {"key": key, "metadata": metadata, "specs": specs, "access_tags": tags}
        if family == "array":
            container.write_array(numpy.arange(3), **options)
        elif family == "table":
            container.write_dataframe(pandas.DataFrame({"x": [1, 2]}), **options)
        else:
            container.create_container(**options)
    return container


@pytest.mark.parametrize(
    "query, predicate", CATALOG_QUERIES, ids=[repr(q) for q, _ in CATALOG_QUERIES]
)
def test_catalog_search_matches_the_source_metadata(catalog_container, query, predicate):
    if isinstance(query, KeysFilter):
        expected = sorted(set(query.keys) & set(CATALOG_NODES))
    elif isinstance(query, KeyLookup):
        expected = [query.key]
    else:
        expected = sorted(k for k, node in CATALOG_NODES.items() if predicate(node))
    found = catalog_container.search(query)
    assert sorted(found) == expected
    assert len(found) == len(expected)
    assert sorted(found.keys()[:]) == expected


def test_catalog_search_chains(catalog_container):
    found = catalog_container.search(Eq("color", "red")).search(KeyPresent("tags"))
    expected = [k for k, (_, m, _, _) in CATALOG_NODES.items()
                if m.get("color") == "red" and "tags" in m]  # fmt: skip
    assert sorted(found) == expected
    assert sorted(k for k, _ in found.items()) == expected


def test_catalog_sort(catalog_container):
    numbers = {k: m["n"] for k, (_, m, _, _) in CATALOG_NODES.items() if "n" in m}
    with_n = catalog_container.search(KeyPresent("n"))
    assert list(with_n.sort(("n", ASCENDING))) == sorted(numbers, key=numbers.get)
    assert list(with_n.sort(("n", DESCENDING))) == sorted(numbers, key=numbers.get)[::-1]
    pairs = {k: (m["color"], -m["n"]) for k, (_, m, _, _) in CATALOG_NODES.items() if "n" in m}
    by_two = with_n.sort(("color", ASCENDING), ("n", DESCENDING))
    assert list(by_two) == sorted(pairs, key=pairs.get)
    assert by_two.keys()[-1] == sorted(pairs, key=pairs.get)[-1]


def test_catalog_distinct(catalog_container):
    answer = catalog_container.distinct("color", structure_families=True, specs=True, counts=True)
    colors = collections.Counter(
        m["color"] for _, m, _, _ in CATALOG_NODES.values() if "color" in m
    )
    assert {d["value"]: d["count"] for d in answer["metadata"]["color"]} == colors
    families = collections.Counter(f for f, _, _, _ in CATALOG_NODES.values())
    assert {d["value"]: d["count"] for d in answer["structure_families"]} == families
    specs = collections.Counter(tuple(s) for _, _, s, _ in CATALOG_NODES.values())
    got = {tuple(s["name"] for s in d["value"]): d["count"] for d in answer["specs"]}
    assert got == specs
    narrowed = catalog_container.search(Eq("color", "red")).distinct("color", counts=True)
    assert narrowed["metadata"]["color"] == [{"value": "red", "count": colors["red"]}]


# --- writing ---


def test_create_containers_and_look_them_up(scratch):
    inner = scratch.create_container("outer", metadata={"level": 1}, specs=["s"])
    assert inner.metadata == {"level": 1} and [s.name for s in inner.specs] == ["s"]
    inner.create_container("inner", metadata={"level": 2})
    assert scratch["outer/inner"].metadata["level"] == 2
    assert scratch["outer", "inner"].path_parts == [*scratch.path_parts, "outer", "inner"]
    assert list(scratch) == ["outer"] and list(scratch["outer"]) == ["inner"]
    generated = scratch.create_container()  # the server names it
    assert generated.path_parts[-1] in scratch


def test_write_small_arrays(scratch):
    data = numpy.arange(24, dtype="int32").reshape(4, 6)
    node = scratch.write_array(data, key="small", metadata={"unit": "m"}, dims=["y", "x"])
    assert node.metadata == {"unit": "m"} and node.dims == ["y", "x"]
    assert node.dtype == data.dtype and node.shape == data.shape
    numpy.testing.assert_array_equal(scratch["small"].read(), data)
    values = [numpy.float64(2.5), numpy.array(["a", "bc", "def"]), [1, 2, 3], numpy.zeros((0, 3))]
    for value in values:
        expected = numpy.asarray(value)
        written = scratch.write_array(value)
        got = written.read()
        assert got.dtype == expected.dtype
        numpy.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("key", ["a b", "é-ü", "x#y", "q?r", "p%20q", "semi;colon", "plus+sign"])
def test_keys_that_need_quoting(scratch, key):
    data = numpy.arange(3)
    node = scratch.write_array(data, key=key)
    assert node.path_parts[-1] == key and list(scratch) == [key] and key in scratch
    numpy.testing.assert_array_equal(scratch[key].read(), data)
    numpy.testing.assert_array_equal(zarr.open_array(node.zarr_store(), mode="r")[:], data)
    assert list(zarr.open_group(scratch.zarr_store(2), mode="r").keys()) == [key]
    node.update_metadata({"quoted": True})
    assert scratch.search(Eq("quoted", True))[key].metadata["quoted"] is True


def test_write_array_larger_than_one_write_chunk(scratch):
    data = numpy.random.default_rng(7).random((5_000, 1_000))  # 40 MB: two 32 MiB blocks
    with record_history() as history:
        node = scratch.write_array(data, key="large")
    puts = [r for r in history.requests if r.method == "PUT"]
    assert len(node.chunks[0]) == len(puts) > 1
    assert all("/array/block/" in str(r.url) for r in puts)
    numpy.testing.assert_array_equal(node.read(), data)
    numpy.testing.assert_array_equal(node[4_000:4_500, ::9], data[4_000:4_500, ::9])


def test_write_dask_array_keeps_its_chunks(scratch):
    data = dask.array.random.default_rng(1).random((30, 20), chunks=(7, 11))
    node = scratch.write_array(data, key="lazy")
    assert node.chunks == data.chunks
    numpy.testing.assert_array_equal(node.read(), data.compute())
    for block in [(0, 0), (4, 1)]:
        numpy.testing.assert_array_equal(node.read_block(block), data.blocks[block].compute())


def test_array_write_and_write_block(scratch):
    node = scratch.write_array(dask.array.zeros((6, 4), chunks=(3, 2)), key="target")
    replacement = numpy.arange(24.0).reshape(6, 4)
    node.write(replacement)
    numpy.testing.assert_array_equal(node.read(), replacement)
    node.write_block(numpy.full((3, 2), -1.0), (1, 1))
    replacement[3:, 2:] = -1.0
    numpy.testing.assert_array_equal(node.read(), replacement)
    with pytest.raises(ValueError):
        node.write(numpy.zeros((2, 2)))
    with pytest.raises(ClientError) as error:
        node.write_block(numpy.zeros((2, 2)), (0, 0))  # the wrong size for the block
    assert error.value.status_code == 400 and "bytes" in str(error.value)


def test_write_dataframes(scratch):
    frame = pandas.DataFrame(
        {"A": numpy.arange(10), "B": numpy.linspace(0, 1, 10), "C": list("abcdefghij")},
        index=pandas.Index(numpy.arange(10) * 10, name="idx"),
    )
    node = scratch.write_dataframe(frame, key="frame", metadata={"kind": "table"})
    assert node.columns == list(frame.columns) and node.npartitions == 1
    pandas.testing.assert_frame_equal(node.read(), frame)
    pandas.testing.assert_frame_equal(node.read(["C"]), frame[["C"]])
    numpy.testing.assert_array_equal(node["A"].read(), frame["A"].to_numpy())
    from_dict = scratch.write_dataframe({"x": [1, 2, 3]})
    pandas.testing.assert_frame_equal(from_dict.read(), pandas.DataFrame({"x": [1, 2, 3]}))


def test_write_dask_dataframe_by_partition(scratch):
    frame = pandas.DataFrame({"A": numpy.arange(10), "B": numpy.arange(10) * 1.5})
    lazy = dask.dataframe.from_pandas(frame, npartitions=3)
    node = scratch.write_dataframe(lazy, key="partitioned")
    assert node.npartitions == lazy.npartitions == 3
    pandas.testing.assert_frame_equal(node.read(), frame)  # row numbers across partitions
    for i in range(3):
        numpy.testing.assert_array_equal(
            node.read_partition(i).to_numpy(), lazy.partitions[i].compute().to_numpy()
        )

    # Replace a partition, then append rows to it.
    node.write_partition(1, frame.iloc[:2] * 100)
    numpy.testing.assert_array_equal(
        node.read_partition(1).to_numpy(), (frame.iloc[:2] * 100).to_numpy()
    )
    with pytest.warns(DeprecationWarning, match="order of arguments"):
        node.append_partition(frame.iloc[:1], 1)  # the order upstream used before 0.2
    numpy.testing.assert_array_equal(
        node.read_partition(1).to_numpy(),
        pandas.concat([frame.iloc[:2] * 100, frame.iloc[:1]]).to_numpy(),
    )
    assert len(node.read()) == 4 + 3 + 3


def test_table_write_replaces_the_whole_table(scratch):
    node = scratch.write_dataframe(pandas.DataFrame({"x": [1, 2]}), key="t")
    node.write(pandas.DataFrame({"x": [5, 6, 7]}))
    pandas.testing.assert_frame_equal(node.read(), pandas.DataFrame({"x": [5, 6, 7]}))
    with pytest.raises(ClientError) as error:
        node.write(pandas.DataFrame({"y": ["wrong column"]}))
    assert 400 <= error.value.status_code < 500


def test_write_sparse(scratch):
    coords = numpy.array([[0, 3, 5, 9], [1, 1, 7, 0]])
    data = numpy.array([1.5, 2.5, 3.5, 4.5])
    node = scratch.write_sparse(coords, data, (10, 8), key="sparse", dims=["i", "j"])
    expected = sparse.COO(coords, data, shape=(10, 8)).todense()
    assert node.shape == (10, 8) and node.dims == ["i", "j"]
    numpy.testing.assert_array_equal(node.read().todense(), expected)
    numpy.testing.assert_array_equal(node[2:8, 1].todense(), expected[2:8, 1])
    numpy.testing.assert_array_equal(node.read_block((0, 0)).todense(), expected)
    node.write_block(coords[:, :1], data[:1] * 10, (0, 0))
    numpy.testing.assert_array_equal(
        node.read().todense(), sparse.COO(coords[:, :1], data[:1] * 10, shape=(10, 8)).todense()
    )


def test_new_with_a_data_source(scratch):
    from tiled.structures.array import ArrayStructure

    data = numpy.arange(6, dtype="uint16").reshape(2, 3)
    structure = ArrayStructure.from_array(data)
    source = {"structure_family": "array", "structure": structure.to_json(), "mimetype": None,
              "parameters": {}, "properties": {}, "assets": [], "management": "writable"}  # fmt: skip
    node = scratch.new("array", [source], key="low_level", metadata={"made": "by new"})
    assert node.shape == data.shape and node.dtype == data.dtype
    node.write(data)
    numpy.testing.assert_array_equal(node.read(), data)
    [found] = node.data_sources()
    assert found.management.value == "writable" and found.structure_family == "array"
    assert node.include_data_sources().item["attributes"]["data_sources"]


def test_write_xarray_dataset_round_trips(scratch, demo_tree):
    dataset = dataset_of(source_of(demo_tree, "structured_data/xarray_dataset"))
    dataset.attrs["title"] = "written"
    dataset["temperature"].attrs["units"] = "degC"
    node = write_xarray_dataset(scratch, dataset, key="dataset")
    assert sorted(node) == sorted([*dataset.data_vars, *dataset.coords])
    xarray.testing.assert_identical(node.read(), dataset)
    assert list(node.read().variables) == list(dataset.variables)
    lazy = from_context(scratch.context, "dask")[(*scratch.path_parts, "dataset")]
    xarray.testing.assert_identical(lazy.read().load(), dataset)


def test_update_replace_and_patch_metadata_with_revisions(scratch):
    node = scratch.write_array(
        [1, 2, 3], key="revised", metadata={"x": 1, "nested": {"p": 1, "q": 2}, "gone": 5}
    )
    original = node.metadata_copy()[0]
    assert len(node.metadata_revisions) == 0

    node.update_metadata({"y": 2, "nested": {"q": DELETE_KEY, "r": 3}, "gone": DELETE_KEY})
    assert node.metadata == {"x": 1, "nested": {"p": 1, "r": 3}, "y": 2}
    assert scratch["revised"].metadata == node.metadata  # on the server, not just here
    after_update = node.metadata_copy()[0]

    node.replace_metadata({"only": True}, specs=["replaced"])
    assert node.metadata == {"only": True} and [s.name for s in node.specs] == ["replaced"]

    node.patch_metadata(
        [{"op": "add", "path": "/added", "value": [1, 2]},
         {"op": "replace", "path": "/only", "value": False}]
    )  # fmt: skip
    assert node.metadata == {"only": False, "added": [1, 2]}
    node.patch_metadata({"added": None, "m": 1}, content_type="application/merge-patch+json")
    assert node.metadata == {"only": False, "m": 1}

    revisions = node.metadata_revisions
    assert len(revisions) == 4
    # As upstream: oldest first, each the server's item with its revision number.
    assert revisions[0]["attributes"]["metadata"] == original
    assert revisions[1]["attributes"]["metadata"] == after_update
    assert [r["revision_number"] for r in revisions[:]] == [1, 2, 3, 4]
    assert revisions[-1] == revisions[3]
    node.update_metadata({"no": "revision"}, drop_revision=True)
    assert len(revisions) == 4 and node.metadata["no"] == "revision"
    node.update_metadata(access_tags=["tag"], drop_revision=True)
    assert node.access_tags == ["tag"] and node.access_blob == {"tags": ["tag"]}
    revisions.delete_revision(1)
    assert [r["revision_number"] for r in revisions] == [2, 3, 4]
    with pytest.raises(ClientError) as error:
        revisions.delete_revision(1)
    assert error.value.status_code == 404
    with pytest.raises(IndexError):
        revisions[10]


def test_delete_and_delete_contents(scratch):
    array = scratch.write_array([1], key="array")
    with pytest.raises(ClientError) as error:
        array.delete()  # data the server manages is kept unless asked
    assert error.value.status_code == 409 and "external_only" in str(error.value)
    array.delete(external_only=False)
    assert "array" not in scratch

    parent = scratch.create_container("parent")
    parent.write_array([1], key="child")
    with pytest.raises(ClientError) as error:
        parent.delete(external_only=False)
    assert error.value.status_code == 409 and "recursive" in str(error.value)
    parent.delete(recursive=True, external_only=False)
    assert list(scratch) == []

    for i in range(4):
        scratch.write_array([i], key=f"n{i}")
    scratch.delete_contents("n0", external_only=False)
    scratch.delete_contents(["n1", "n2"], external_only=False)
    assert list(scratch) == ["n3"]
    scratch.delete_contents(external_only=False)
    assert len(scratch) == 0


def test_export_in_the_listed_formats(scratch, tmp_path):
    data = numpy.arange(12, dtype="float64").reshape(3, 4)
    array = scratch.write_array(data, key="exported")
    formats = array.formats
    assert {"application/octet-stream", "text/csv", "application/json"} <= set(formats)
    buffer = io.BytesIO()
    array.export(buffer, format="application/octet-stream")
    assert buffer.getvalue() == data.tobytes()
    array.export(tmp_path / "a.csv")  # the format from the suffix
    numpy.testing.assert_array_equal(numpy.loadtxt(tmp_path / "a.csv", delimiter=","), data)
    array.export(tmp_path / "a.txt", format="json")  # an extension the server aliases
    assert json.loads((tmp_path / "a.txt").read_text()) == data.tolist()
    array.export(tmp_path / "part.csv", slice=(slice(0, 2), 1))
    numpy.testing.assert_array_equal(
        numpy.loadtxt(tmp_path / "part.csv", delimiter=","), data[0:2, 1]
    )
    with pytest.raises(ValueError):
        array.export(tmp_path / "a.unknown-suffix")

    frame = pandas.DataFrame({"A": [1, 2, 3], "B": [0.5, 1.5, 2.5]})
    table = scratch.write_dataframe(frame, key="table")
    assert "text/csv" in table.formats
    table.export(tmp_path / "t.csv")
    pandas.testing.assert_frame_equal(pandas.read_csv(tmp_path / "t.csv"), frame)
    table.export(tmp_path / "b.csv", columns=["B"])
    pandas.testing.assert_frame_equal(pandas.read_csv(tmp_path / "b.csv"), frame[["B"]])
    buffer = io.BytesIO()
    table.export(buffer, format="application/vnd.apache.arrow.file")
    arrow = pyarrow.ipc.open_file(pyarrow.py_buffer(buffer.getvalue())).read_pandas()
    pandas.testing.assert_frame_equal(arrow, frame)

    scratch.update_metadata({"about": "exports"})
    buffer = io.BytesIO()
    scratch.export(buffer, format="json")
    exported = json.loads(buffer.getvalue())
    assert exported["metadata"] == dict(scratch.metadata)
    assert set(exported["contents"]) == set(scratch)
    buffer = io.BytesIO()
    scratch.export(buffer, ["table"], format="json")
    assert set(json.loads(buffer.getvalue())["contents"]) == {"table"}


# --- errors and authentication ---


def test_errors_carry_the_servers_detail(writable, scratch):
    with pytest.raises(ClientError) as error:
        writable.context.get_json("metadata/not/here")
    assert error.value.status_code == 404
    detail = error.value.response.json()["detail"]
    assert detail and detail in str(error.value)
    with pytest.raises(KeyError):
        writable["not/here"]
    scratch.write_array([1], key="taken")
    with pytest.raises(ClientError) as error:
        scratch.write_array([2], key="taken")
    assert error.value.status_code == 409
    assert error.value.response.json()["detail"] in str(error.value)
    numpy.testing.assert_array_equal(scratch["taken"].read(), [1])


def test_single_user_api_key(simple_server, scratch, monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    url = f"http://127.0.0.1:{simple_server.port}"
    with pytest.raises(RuntimeError, match="API key"):
        from_uri(url)
    with pytest.raises(AuthenticationRequired) as error:
        from_uri(url, api_key="wrong")
    assert error.value.status_code == 401
    assert error.value.response.json()["detail"] in str(error.value)
    expected = list(from_uri(simple_server.uri))
    for client in [
        from_uri(url, api_key=simple_server.api_key),
        from_uri(f"{url}?api_key={simple_server.api_key}"),
        from_context(Context.from_app(simple_server.app)),  # the app's own key
    ]:
        assert client.context.api_key == simple_server.api_key and list(client) == expected
    # Quoted: the first key may be a scratch container of a test of keys holding "?" or "#".
    first = quote(expected[0], safe="")
    node = from_uri(f"{url}/api/v1/metadata/{first}?api_key={simple_server.api_key}")
    assert node.path_parts == [expected[0]]
    assert "api_key" not in from_uri(simple_server.uri).context.api_uri
    monkeypatch.setenv("TILED_API_KEY", simple_server.api_key)
    assert list(from_uri(url)) == list(from_uri(simple_server.uri))

    client = from_uri(url)
    client.context.api_key = None  # credentials dropped after connecting: 401s
    with pytest.raises(AuthenticationRequired):
        list(client)


def test_anonymous_public_server(demo_server, monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    client = from_uri(demo_server.url)
    assert client.context.api_key is None
    assert not client.context.authentication_required
    assert "nested" in client


USERS = {"alice": "secret1", "bob": "secret2"}


@pytest.fixture(scope="module")
def multi_user_server(tmp_path_factory):
    authentication = Authentication(
        providers=[{
            "provider": "toy", "authenticator": "tiled.authenticators:DictionaryAuthenticator",
            "args": {"users_to_passwords": USERS},
        }],
        secret_keys=["0123456789abcdef0123456789abcdef"],
        tiled_admins=[{"provider": "toy", "id": "alice"}],
    )  # fmt: skip
    database = tmp_path_factory.mktemp("authn") / "authn.db"
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(
        tree, authentication,
        server_settings={"database": {"uri": f"sqlite:///{database}", "init_if_not_exists": True}},
    )  # fmt: skip
    with serve(app) as live:
        yield live


def test_multi_user_api_keys_and_scopes(multi_user_server, monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    url = multi_user_server.url
    # A user logs in (the OAuth2 password grant) and makes a key for the client.
    tokens = httpx.post(
        f"{url}/api/v1/auth/provider/toy/token", data={"username": "bob", "password": "secret2"}
    ).json()
    context = Context(url)
    assert context.authentication_required and context.authentication_providers
    context.authenticate(username="bob", password=USERS["bob"], remember_me=False)
    full = context.create_api_key(note="full")
    client = from_uri(url, api_key=full["secret"])
    numpy.testing.assert_array_equal(client["x"].read(), numpy.arange(10))
    assert client.context.whoami()["uuid"].replace("-", "") == tokens["principal"]
    assert client.context.which_api_key()["note"] == "full"

    limited = client.context.create_api_key(scopes=["read:metadata"], note="metadata only")
    assert limited["scopes"] == ["read:metadata"]
    reader = from_uri(url, api_key=limited["secret"])
    assert reader["x"].shape == (10,)
    with pytest.raises(AuthenticationRequired) as error:  # 401, as upstream answers
        reader["x"].read()
    assert error.value.status_code == 401
    assert "read:data" in str(error.value)
    assert error.value.response.json()["detail"] in str(error.value)

    client.context.revoke_api_key(limited["first_eight"])
    with pytest.raises(AuthenticationRequired):
        reader["x"]
    with pytest.raises(AuthenticationRequired):
        from_uri(url, api_key=limited["secret"])


def test_login_and_logout_from_a_node(multi_user_server, monkeypatch, tmp_path):
    monkeypatch.setenv("TILED_CACHE_DIR", str(tmp_path))  # remembered sessions of this test
    context = Context(multi_user_server.url)
    context.authenticate(username="alice", password=USERS["alice"])
    node = from_context(context)["x"]
    node.logout()
    with pytest.raises(AuthenticationRequired):
        node.read()
    node.login("alice", password=USERS["alice"], remember_me=False)
    numpy.testing.assert_array_equal(node.read(), numpy.arange(10))
    assert node.context.whoami()["identities"][0]["id"] == "alice"


def test_authorization_given_in_headers_is_sent(multi_user_server):
    url = multi_user_server.url
    form = {"username": "bob", "password": USERS["bob"]}
    tokens = httpx.post(f"{url}/api/v1/auth/provider/toy/token", data=form).json()
    context = Context(url, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert context.whoami()["identities"][0]["id"] == "bob"


class Prompted(Exception):
    """The client asked for a username."""


def test_from_context_uses_a_session_not_remembered(multi_user_server, monkeypatch, tmp_path):
    from tiled.client import context as context_module

    def prompt():
        raise Prompted

    monkeypatch.setattr(context_module, "username_input", prompt)
    monkeypatch.setenv("TILED_CACHE_DIR", str(tmp_path))
    context = Context(multi_user_server.url)
    context.authenticate(username="bob", password=USERS["bob"], remember_me=False)
    numpy.testing.assert_array_equal(from_context(context)["x"].read(), numpy.arange(10))


class Flaky:
    """An ASGI app in front of another that answers 503 to the next ``failures`` metadata
    requests (a proxy whose server is restarting)."""

    def __init__(self, app, failures: int = 0):
        self.app, self.failures = app, failures

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.failures and "/metadata" in scope["path"]:
            self.failures -= 1
            headers = [(b"retry-after", b"0"), (b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": b"restarting"})
            return
        await self.app(scope, receive, send)


def test_retries_on_unavailable_servers_and_connection_errors(monkeypatch):
    monkeypatch.setenv("TILED_RETRY_ATTEMPTS", "3")
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})
    app = Flaky(build_app(tree, authentication={"allow_anonymous_access": True}))
    with serve(app) as live:
        client = from_uri(live.url)
        app.failures = 2
        with record_history() as history:
            numpy.testing.assert_array_equal(client["x"].read(), numpy.arange(10))
        assert [r.status_code for r in history.responses] == [503, 503, 200, 200]
        app.failures = 3
        with pytest.raises(ClientError) as error:
            client["x"]
        assert error.value.status_code == 503 and "restarting" in str(error.value)
        port = live.port
    with pytest.raises(httpx.ConnectError):
        from_uri(f"http://127.0.0.1:{port}")


# --- context, history, import weight, conveniences ---


def test_live_context_pickles(demo_server, demo_context):
    client = from_uri(demo_server.url)
    copy = pickle.loads(pickle.dumps(client.context))
    assert copy.api_uri == client.context.api_uri and copy.api_key == client.context.api_key
    assert list(from_context(copy)) == list(client)
    numpy.testing.assert_array_equal(
        from_context(copy)["flat_array"].read(), client["flat_array"].read()
    )
    # A dask graph over the zarr chunks travels too (to distributed workers, say).
    lazy = from_uri(demo_server.url, "dask")["nested/images/medium_image"].read()[::3, 100:]
    numpy.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy)).compute(), lazy.compute())
    keyed = Context(demo_server.url, api_key="some-key")
    assert pickle.loads(pickle.dumps(keyed)).api_key == "some-key"
    with pytest.raises(TypeError):
        pickle.dumps(demo_context)  # an in-process app stays in its process


def test_record_history_records_requests_and_responses(demo):
    with record_history() as history:
        list(demo["nested"])
        with pytest.raises(KeyError):
            demo["nested/not-a-key"]
    assert all(isinstance(r, httpx.Request) for r in history.requests)
    assert [r.method for r in history.requests] == ["GET"] * len(history.responses)
    assert any("/metadata/nested/not-a-key" in url for url in urls(history))
    assert 404 in [r.status_code for r in history.responses]
    with record_history() as later:
        pass
    assert later.requests == []


@pytest.mark.parametrize(
    "statement",
    [
        "import tiled.client",
        "from tiled.client import from_uri, Context, record_history, ASCENDING",
    ],
)
def test_importing_the_client_loads_no_server_or_numpy(statement):
    heavy = ("tiled.server", "tiled.catalog", "fastapi", "numpy", "pandas")
    code = (
        f"import sys; {statement}; "
        f"print(' '.join(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_tree_prints_the_hierarchy(demo, demo_tree):
    from tiled.client import tree

    out = io.StringIO()
    tree(demo["nested"], max_lines=None, file=out)
    names = [line.split("── ")[-1] for line in out.getvalue().splitlines()]
    expected = []
    for key, child in demo_tree["nested"].items():
        expected.append(key)
        if child.structure_family == "container":
            expected.extend(child)
    assert names == expected
    out = io.StringIO()
    tree(demo, max_lines=3, file=out)
    assert len(out.getvalue().splitlines()) == 4 and out.getvalue().rstrip().endswith("...")


def test_simple_starts_a_writable_server(tmp_path):
    from tiled.client import simple

    client = simple(tmp_path, quiet=True)
    try:
        node = client.write_array(numpy.arange(5), key="x")
        numpy.testing.assert_array_equal(client["x"].read(), numpy.arange(5))
        assert node.context.api_key == client.server.api_key
        assert (tmp_path / "catalog.db").exists()
    finally:
        client.server.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(client.context.api_uri, timeout=2)
    with SimpleTiledServer(tmp_path) as again:  # the same directory: the same catalog
        numpy.testing.assert_array_equal(from_uri(again.uri)["x"].read(), numpy.arange(5))
    assert (tmp_path / "catalog.db").exists()  # a given directory is kept
    temporary = SimpleTiledServer()
    temporary.close()
    assert not temporary.directory.exists()  # a temporary one is removed


def test_show_logs_prints_requests(demo, capsys):
    from tiled.client import hide_logs, show_logs

    show_logs()
    try:
        demo["scalars"]
    finally:
        hide_logs()
    demo["nested"]
    err = capsys.readouterr().err
    assert "/metadata/scalars" in err and "/metadata/nested" not in err


# --- details found while writing the tutorials ---


def test_formats_and_export_names_follow_specs_then_family(demo, demo_tree, tmp_path):
    dataset = demo["structured_data"]["xarray_dataset"]
    about = dataset.context.server_info
    assert dataset.formats == list(
        dict.fromkeys([*about["formats"]["xarray_dataset"], *about["formats"]["container"]])
    )
    dataset.export(tmp_path / "dataset.csv")  # "csv" is a name the spec's table gives
    exported = pandas.read_csv(tmp_path / "dataset.csv")
    assert len(exported) == demo_tree["structured_data"]["xarray_dataset"]["time"].read().size * 4
    with pytest.raises(ValueError, match="Unknown format 'nope'"):
        dataset.export(tmp_path / "dataset.nope")


def test_from_uri_refuses_unknown_arguments_and_warns_on_retired_ones(demo_server):
    with pytest.raises(TypeError, match="api_kye"):
        from_uri(demo_server.url, api_kye="secret")
    with pytest.warns(UserWarning, match="username"):  # as upstream warns
        from_uri(demo_server.url, username="alice")


def test_whoami_on_a_server_without_logins_is_none(demo):
    with pytest.warns(UserWarning, match="Authentication providers were not configured"):
        assert demo.context.whoami() is None


def test_a_simple_server_removes_its_temporary_directory(tmp_path):
    server = SimpleTiledServer()
    directory = server.directory
    from_uri(server.uri).write_array(numpy.arange(3), key="a")
    assert (directory / "catalog.db").exists()
    server.close()
    assert not directory.exists()
    server.close()  # closing twice is harmless


@pytest.mark.parametrize(
    "index",
    [slice(None), slice(2, 5), slice(3, None), slice(-3, None), slice(None, -2), slice(-3, None, -1),
     slice(-2, -6, -1), slice(None, None, -1), slice(1, 7, 2), slice(6, 1, -2), slice(5, 2),
     slice(100, None), 0, 3, -1, -5],
)  # fmt: skip
def test_listing_views_slice_like_lists(demo, index):
    keys = list(demo)
    assert demo.keys()[index] == keys[index]
    values = demo.values()[index]
    expected = keys[index]
    if isinstance(index, slice):
        assert [v.path_parts[-1] for v in values] == expected
        assert [k for k, _ in demo.items()[index]] == expected
    else:
        assert values.path_parts[-1] == expected


def test_metadata_with_numpy_values_dates_and_bytes_is_sent_as_json(scratch):
    import datetime

    node = scratch.write_array(
        numpy.arange(3),
        metadata={"n": numpy.int64(3), "v": numpy.arange(2), "when": datetime.date(2026, 1, 2),
                  "raw": b"\x00\x01"},
    )  # fmt: skip
    assert node.metadata == {
        "n": 3, "v": [0, 1], "when": "2026-01-02",
        "raw": "data:application/octet-stream;base64,AAE=",
    }  # fmt: skip
    for bad in (1, 1.2, True, [1, 2], (1, 2), {1}):
        with pytest.raises(ValueError, match="must be a dict"):
            node.update_metadata(metadata=bad)

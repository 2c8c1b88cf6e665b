"""MapAdapter (search, sort, views, distinct, cache hints) and DatasetAdapter."""

from datetime import UTC, datetime, timedelta

import numpy
import pytest
import xarray

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter, SortingItem
from tiled.adapters.xarray import DatasetAdapter
from tiled.errors import NoSuchEntry, UnsupportedQuery
from tiled.queries import (
    AccessBlobFilter,
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
from tiled.structures.container import ContainerStructure
from tiled.structures.core import Spec, StructureFamily


def _array(metadata, specs=None):
    return ArrayAdapter.from_array(numpy.arange(3), metadata=metadata, specs=specs)


@pytest.fixture
def tree():
    mapping = {
        "a": _array(
            {
                "color": "red",
                "n": 3,
                "tags": ["x", "y"],
                "sample": {"name": "Iron oxide", "temperature": 300},
            },
            specs=["spectrum", "calibrated"],
        ),
        "b": _array(
            {
                "color": "blue",
                "n": 1,
                "tags": ["y"],
                "sample": {"name": "copper", "temperature": 10},
            },
            specs=["spectrum"],
        ),
        "c": MapAdapter({}, metadata={"color": "red", "n": 2, "sample": {"name": "iron"}}),
        "d": _array({"note": "Nothing here", "sample": "not a dict"}),
    }
    return MapAdapter(mapping, metadata={"title": "root"}, specs=["catalog"])


def keys(tree):
    return list(tree)


# --- mapping protocol and views ---


def test_mapping_protocol(tree):
    assert len(tree) == 4
    assert keys(tree) == ["a", "b", "c", "d"]
    assert "c" in tree and "z" not in tree
    assert tree["c"].structure_family is StructureFamily.container
    with pytest.raises(KeyError):
        tree["z"]
    with pytest.raises(NoSuchEntry, match="'z'"):
        tree["z"]
    assert tree.get("z") is None


def test_structure_metadata_specs(tree):
    assert tree.structure() == ContainerStructure(("a", "b", "c", "d"))
    assert tree.structure().count == 4
    assert tree.metadata() == {"title": "root"}
    assert tree.specs == [Spec("catalog")]
    assert tree.sorting == [SortingItem(key="_", direction=1)]
    assert tree.sorting[0].to_json() == {"key": "_", "direction": 1}


def test_views_are_sliceable(tree):
    assert tree.keys()[1:3] == ["b", "c"]
    assert tree.keys()[-1] == "d"
    assert tree.keys()[::2] == ["a", "c"]
    assert tree.keys()[::-1] == ["d", "c", "b", "a"]
    assert tree.keys()[10:] == []
    assert tree.items()[0] == ("a", tree["a"])
    assert tree.values()[1] is tree["b"]
    assert [k for k, _ in tree.items()[2:]] == ["c", "d"]
    assert len(tree.values()) == 4
    assert "b" in tree.keys() and "z" not in tree.keys()
    with pytest.raises(IndexError):
        tree.keys()[4]


def test_views_see_a_mapping_that_changes_later(tree):
    mapping = {"x": _array({})}
    live = MapAdapter(mapping)
    mapping["y"] = _array({})
    assert list(live.keys()) == ["x", "y"]
    assert len(live) == 2


def test_read_returns_sub_container(tree):
    assert tree.read() is tree
    sub = tree.read(fields=["c", "a"])
    assert keys(sub) == ["c", "a"]
    assert sub.metadata() == {"title": "root"}
    with pytest.raises(NoSuchEntry):
        tree.read(fields=["z"])


def test_cache_hints_and_lifecycle_attributes():
    plain = MapAdapter({})
    assert plain.metadata_stale_at is None and plain.entries_stale_at is None
    assert plain.must_revalidate is True
    assert plain.background_tasks == [] and plain.startup_tasks == []
    assert plain.shutdown_tasks == [] and plain.include_routers == []
    hinted = MapAdapter(
        {},
        metadata_stale_after=timedelta(seconds=60),
        entries_stale_after=timedelta(hours=1),
        must_revalidate=False,
    )
    # Counted from when they are asked for (as late as a loaded machine asks).
    before = datetime.now(UTC)
    metadata_stale_at, entries_stale_at = hinted.metadata_stale_at, hinted.entries_stale_at
    after = datetime.now(UTC)
    assert before + timedelta(seconds=60) <= metadata_stale_at <= after + timedelta(seconds=60)
    assert before + timedelta(hours=1) <= entries_stale_at <= after + timedelta(hours=1)
    assert hinted.must_revalidate is False


# --- search ---


@pytest.mark.parametrize(
    "query, expected",
    [
        # FullText: metadata is lower-cased, query words are not.
        (FullText("iron"), ["a", "c"]),
        (FullText("Iron"), []),
        (FullText("copper zinc"), ["b"]),
        (FullText("here"), ["d"]),
        (Regex("sample.name", "^iron"), ["c"]),
        (Regex("sample.name", "^iron", case_sensitive=False), ["a", "c"]),
        (Regex("n", "3"), []),  # only string values are matched
        (Eq("color", "red"), ["a", "c"]),
        (Eq("sample.temperature", 10), ["b"]),
        (Eq("tags", ["x", "y"]), ["a"]),
        (Eq("sample", {"name": "iron"}), ["c"]),
        (NotEq("color", "red"), ["b"]),  # d lacks the key
        (Comparison("lt", "n", 3), ["b", "c"]),
        (Comparison("le", "n", 3), ["a", "b", "c"]),
        (Comparison("gt", "sample.temperature", 10), ["a"]),
        (Comparison("ge", "sample.temperature", 10), ["a", "b"]),
        (Comparison("gt", "color", 1), []),  # incomparable values do not match
        (Contains("tags", "y"), ["a", "b"]),
        (Contains("tags", "x"), ["a"]),
        (Contains("color", "r"), []),  # strings are not containers here
        (In("color", ["blue", "green"]), ["b"]),
        (In("n", [1, 2]), ["b", "c"]),
        (NotIn("n", [1, 2]), ["a"]),
        (NotIn("n", []), ["a", "b", "c", "d"]),
        (KeyPresent("sample.temperature"), ["a", "b"]),
        (KeyPresent("sample.temperature", exists=False), ["c", "d"]),
        (KeyPresent("color"), ["a", "b", "c"]),
        (KeyPresent("sample.name.first"), []),
        (KeysFilter(["d", "a", "zz"]), ["a", "d"]),
        (KeyLookup("b"), ["b"]),
        (KeyLookup("zz"), []),
        (SpecsQuery(["spectrum"]), ["a", "b"]),
        (SpecsQuery(["spectrum"], exclude=["calibrated"]), ["b"]),
        (SpecsQuery([], exclude=["spectrum"]), ["c", "d"]),
        (SpecQuery("calibrated"), ["a"]),
        (StructureFamilyQuery("container"), ["c"]),
        (StructureFamilyQuery("array"), ["a", "b", "d"]),
        (Key("color") == "blue", ["b"]),
        (Key("n") >= 2, ["a", "c"]),
    ],
)
def test_search(tree, query, expected):
    result = tree.search(query)
    assert isinstance(result, MapAdapter) and result is not tree
    assert keys(result) == expected
    assert len(result) == len(expected)
    assert keys(tree) == ["a", "b", "c", "d"]  # the original is untouched


def test_search_keeps_metadata_specs_and_sorting(tree):
    result = tree.sort([("n", -1)]).search(Eq("color", "red"))
    assert result.metadata() == {"title": "root"}
    assert result.specs == [Spec("catalog")]
    assert result.sorting == [SortingItem("n", -1)]
    assert keys(result) == ["a", "c"]


def test_searches_chain_as_and(tree):
    result = tree.search(Eq("color", "red")).search(Comparison("lt", "n", 3))
    assert keys(result) == ["c"]


def test_key_lookup_result_need_not_revalidate(tree):
    assert tree.search(KeyLookup("a")).must_revalidate is False
    assert tree.search(Eq("color", "red")).must_revalidate is True


@pytest.mark.parametrize(
    "query, name",
    [(Like("color", "re%"), "like"), (AccessBlobFilter("u", ["t"]), "access_blob_filter")],
)
def test_unsupported_queries(tree, query, name):
    with pytest.raises(UnsupportedQuery, match=f"'{name}' is not supported"):
        tree.search(query)


def test_register_query_on_a_subclass_stays_on_the_subclass(tree):
    class Special(MapAdapter):
        pass

    Special.register_query(Like, lambda query, t: t.filter(lambda key, _: key == "a"))
    special = Special(dict(tree.items()))
    assert keys(special.search(Like("color", "x"))) == ["a"]
    assert keys(special.search(Eq("color", "blue"))) == ["b"]  # inherited from MapAdapter
    assert isinstance(special.search(Eq("color", "blue")), Special)
    with pytest.raises(UnsupportedQuery):
        tree.search(Like("color", "x"))


# --- sort ---


@pytest.mark.parametrize(
    "sorting, expected",
    [
        ([("n", 1)], ["b", "c", "a", "d"]),
        ([("n", -1)], ["a", "c", "b", "d"]),  # missing values last in either direction
        ([("sample.temperature", 1)], ["b", "a", "c", "d"]),
        ([("_", -1)], ["d", "c", "b", "a"]),
        ([("color", 1), ("_", -1)], ["b", "c", "a", "d"]),
        ([("color", -1), ("n", 1)], ["c", "a", "b", "d"]),
        ([("_", 1), ("n", 1)], ["a", "b", "c", "d"]),  # keys after "_" cannot break ties
        ([{"key": "n", "direction": 1}], ["b", "c", "a", "d"]),
        ([SortingItem("sample.name", -1)], ["c", "b", "a", "d"]),  # "I" sorts before "c"
    ],
)
def test_sort(tree, sorting, expected):
    result = tree.sort(sorting)
    assert keys(result) == expected
    assert list(result.keys()[1:3]) == expected[1:3]
    assert result.structure().keys == tuple(expected)
    assert keys(tree) == ["a", "b", "c", "d"]


def test_reversed_given_order_survives_repeated_searches(tree):
    reversed_tree = tree.sort([("_", -1)])
    once = reversed_tree.search(KeyPresent("color"))
    twice = once.search(KeyPresent("n"))
    assert keys(once) == ["c", "b", "a"]
    assert keys(twice) == ["c", "b", "a"]


def test_sort_by_values_of_mixed_types_puts_numbers_first():
    mixed = MapAdapter({k: _array({"v": v}) for k, v in [("s", "text"), ("i", 2), ("f", 1.5)]})
    assert keys(mixed.sort([("v", 1)])) == ["f", "i", "s"]


def test_sort_rejects_bad_direction(tree):
    with pytest.raises(ValueError, match="direction"):
        tree.sort([("n", 0)])


# --- distinct ---


def test_get_distinct_with_counts(tree):
    distinct = tree.get_distinct(
        metadata=["color", "sample.temperature", "tags"],
        structure_families=True,
        specs=True,
        counts=True,
    )
    assert distinct["metadata"] == {
        "color": [{"value": "red", "count": 2}, {"value": "blue", "count": 1}],
        "sample.temperature": [{"value": 300, "count": 1}, {"value": 10, "count": 1}],
        "tags": [{"value": ["x", "y"], "count": 1}, {"value": ["y"], "count": 1}],
    }
    assert distinct["structure_families"] == [
        {"value": "array", "count": 3},
        {"value": "container", "count": 1},
    ]
    # Unversioned specs by name, as upstream's MapAdapter reports them (its tests/test_distinct).
    spectrum, calibrated = "spectrum", "calibrated"
    assert distinct["specs"] == [
        {"value": [spectrum, calibrated], "count": 1},
        {"value": [spectrum], "count": 1},
        {"value": [], "count": 2},
    ]


def test_get_distinct_without_counts_and_unrequested_parts(tree):
    distinct = tree.get_distinct(["color"], structure_families=False, specs=False, counts=False)
    assert distinct == {
        "metadata": {"color": [{"value": "red"}, {"value": "blue"}]},
        "structure_families": None,
        "specs": None,
    }
    filtered = tree.search(Eq("color", "red"))
    assert filtered.get_distinct([], True, False, True) == {
        "metadata": None,
        "structure_families": [{"value": "array", "count": 1}, {"value": "container", "count": 1}],
        "specs": None,
    }


# --- zarr group hooks ---


async def test_zarr_member_keys_follow_sort_order(tree):
    assert await tree.zarr_member_keys() == ["a", "b", "c", "d"]
    assert await tree.zarr_member_keys(offset=1, limit=2) == ["b", "c"]
    assert await tree.sort([("n", 1)]).zarr_member_keys(limit=3) == ["b", "c", "a"]
    assert await tree.zarr_member("c") is tree["c"]
    with pytest.raises(NoSuchEntry):
        await tree.zarr_member("zz")


async def test_zarr_group_attributes_are_the_metadata(tree):
    meta = await tree.to_zarr_meta()
    assert dict(meta.attributes) == {"title": "root"}


# --- DatasetAdapter ---


@pytest.fixture
def dataset():
    return xarray.Dataset(
        {
            "temperature": (("time", "x"), numpy.ones((4, 3)), {"units": "K", "_FillValue": -1.0}),
            "pressure": (("time",), numpy.arange(4.0), {"units": "Pa"}),
        },
        coords={"time": ("time", numpy.arange(4), {"axis": "T"}), "x": [10, 20, 30]},
        attrs={"title": "weather"},
    )


def test_dataset_adapter_structure(dataset):
    adapter = DatasetAdapter.from_dataset(dataset)
    assert list(adapter) == ["temperature", "pressure", "time", "x"]
    assert adapter.specs == [Spec("xarray_dataset")]
    assert adapter.metadata() == {"attrs": {"title": "weather"}}
    assert adapter.structure_family is StructureFamily.container
    assert adapter.inlined_contents_enabled(depth=3) is True

    temperature = adapter["temperature"]
    assert isinstance(temperature, ArrayAdapter)
    assert temperature.dims == ("time", "x")
    assert temperature.structure().shape == (4, 3)
    assert temperature.specs == [Spec("xarray_data_var")]
    assert temperature.metadata() == {"attrs": {"units": "K", "_FillValue": -1.0}}
    numpy.testing.assert_array_equal(temperature.read(), numpy.ones((4, 3)))

    x = adapter["x"]
    assert x.specs == [Spec("xarray_coord")]
    assert x.dims == ("x",)
    assert x.metadata() == {"attrs": {}}
    numpy.testing.assert_array_equal(x.read(), [10, 20, 30])
    assert adapter["time"].metadata() == {"attrs": {"axis": "T"}}


def test_dataset_adapter_appends_spec_and_keeps_dask_chunks(dataset):
    adapter = DatasetAdapter.from_dataset(dataset.chunk({"time": 2}), specs=["forecast"])
    assert adapter.specs == [Spec("forecast"), Spec("xarray_dataset")]
    assert adapter["temperature"].structure().chunks == ((2, 2), (3,))
    again = DatasetAdapter.from_dataset(dataset, specs=["xarray_dataset"])
    assert again.specs == [Spec("xarray_dataset")]


def test_dataset_adapter_refuses_a_dataset_directly(dataset):
    with pytest.raises(TypeError, match="from_dataset"):
        DatasetAdapter(dataset)


def test_dataset_adapter_search_keeps_its_class(dataset):
    adapter = DatasetAdapter.from_dataset(dataset)
    coords = adapter.search(SpecQuery("xarray_coord"))
    assert isinstance(coords, DatasetAdapter)
    assert list(coords) == ["time", "x"]
    assert list(adapter.search(Eq("attrs.units", "Pa"))) == ["pressure"]


async def test_dataset_adapter_as_zarr_group(dataset):
    adapter = DatasetAdapter.from_dataset(dataset)
    assert await adapter.zarr_member_keys() == ["temperature", "pressure", "time", "x"]
    assert await adapter.zarr_member_keys(offset=2) == ["time", "x"]
    group = await adapter.to_zarr_meta()
    # Coordinates are declared the CF way, so xarray.open_zarr opens them as coordinates.
    assert dict(group.attributes) == {"title": "weather", "coordinates": "time x"}
    array = await (await adapter.zarr_member("temperature")).to_zarr_meta()
    assert array.dimension_names == ("time", "x")
    assert dict(array.attributes) == {"units": "K", "_FillValue": -1.0}

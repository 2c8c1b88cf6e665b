"""Every registered encoder, decoded with the library a user would use, plus negotiation."""

from __future__ import annotations

import io
import json

import h5py
import httpx
import numpy
import pandas
import pyarrow
import pyarrow.parquet
import pytest
import sparse
import tifffile
import xarray
import zarr
import zarr.storage
from PIL import Image

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.sparse import COOAdapter
from tiled.adapters.table import TableAdapter
from tiled.adapters.xarray import DatasetAdapter
from tiled.errors import UnsupportedMediaType
from tiled.serialization import (
    EncodeOptions,
    SerializationRegistry,
    default_serialization_registry,
)
from tiled.zarr_format.model import ZarrOptions

registry = default_serialization_registry
rng = numpy.random.default_rng(11)
SMALL_CHUNKS = EncodeOptions(zarr_options=ZarrOptions(chunk_budget_bytes=256))


def _keys(node) -> list[str]:
    return [spec.name for spec in node.specs] + [str(node.structure_family)]


async def encode(node, media_type, *, key=None, options=None) -> bytes:
    """What a data route would send: negotiate the key, encode, join a streamed body."""
    if key is None:
        key, media_type = registry.negotiate(_keys(node), media_type, None)
    result = await registry.encode(
        key,
        media_type,
        node=node,
        read=node.read,
        metadata=node.metadata(),
        options=options or EncodeOptions(),
    )
    if isinstance(result, bytes):
        return result
    return b"".join([part async for part in result])


def _frame() -> pandas.DataFrame:
    return pandas.DataFrame(
        {
            "x": numpy.arange(10, dtype="int64"),
            "y": numpy.random.default_rng(3).random(10),  # the same every call
            "name": [f"item-{i}" for i in range(10)],
        }
    )


def _coo() -> sparse.COO:
    dense = numpy.zeros((6, 5))
    dense[0, 1], dense[3, 4], dense[5, 0] = 1.5, -2.0, 7.0
    return sparse.COO.from_numpy(dense)


# --- arrays ---


@pytest.mark.parametrize(
    "data",
    [
        rng.random((4, 5)),
        numpy.arange(12, dtype=">i4").reshape(3, 4),
        numpy.array(["alpha", "β", ""]),
        numpy.array(3.5),
    ],
    ids=["float64", "big-endian", "unicode", "scalar"],
)
async def test_array_octet_stream(data):
    payload = await encode(ArrayAdapter.from_array(data), "application/octet-stream")
    decoded = numpy.frombuffer(payload, dtype=data.dtype).reshape(data.shape)
    numpy.testing.assert_array_equal(decoded, data)


async def test_array_json_values_and_non_finite_floats():
    data = numpy.array([[0.5, numpy.nan], [numpy.inf, -numpy.inf]])
    decoded = json.loads(await encode(ArrayAdapter.from_array(data), "json"))
    assert decoded == [[0.5, None], [None, None]]


async def test_array_json_long_doubles_are_doubles():
    """numpy's tolist keeps long doubles as numpy scalars; JSON gets doubles (was a 500)."""
    data = numpy.array([0.5, 1.25], dtype=numpy.longdouble)
    assert json.loads(await encode(ArrayAdapter.from_array(data), "json")) == [0.5, 1.25]
    complex_data = numpy.array([1 + 2j], dtype=numpy.clongdouble)
    assert json.loads(await encode(ArrayAdapter.from_array(complex_data), "json")) == [[1.0, 2.0]]


async def test_array_json_scalar_is_bare_value():
    assert json.loads(await encode(ArrayAdapter.from_array(numpy.array(3.14159)), "json")) == (
        3.14159
    )
    assert json.loads(await encode(ArrayAdapter.from_array(numpy.array("1/137")), "json")) == (
        "1/137"
    )


async def test_array_json_datetimes_are_iso_strings():
    data = numpy.array(["2014-09-06", "NaT", "2014-09-07T12:00:00.5"], dtype="M8[ns]")
    decoded = json.loads(await encode(ArrayAdapter.from_array(data), "json"))
    assert decoded == ["2014-09-06T00:00:00.000", None, "2014-09-07T12:00:00.500"]
    days = numpy.arange("2014-09-06", "2014-09-08", dtype="M8[D]").astype("M8[ns]")
    assert json.loads(await encode(ArrayAdapter.from_array(days), "json")) == [
        "2014-09-06T00:00:00",
        "2014-09-07T00:00:00",
    ]


async def test_array_json_structured_complex_and_timedelta():
    structured = numpy.array(
        [("Rex", 9, 81.0), ("Fido", 3, 27.0)],
        dtype=[("name", "<U10"), ("age", "<i4"), ("weight", "<f4")],
    )
    decoded = json.loads(await encode(ArrayAdapter.from_array(structured), "json"))
    assert decoded == [["Rex", 9, 81.0], ["Fido", 3, 27.0]]
    complex_data = numpy.array([1 + 2j, 3 - 4j])
    assert json.loads(await encode(ArrayAdapter.from_array(complex_data), "json")) == [
        [1.0, 2.0],
        [3.0, -4.0],
    ]
    deltas = numpy.array([1500, 60000], dtype="m8[ms]")
    assert json.loads(await encode(ArrayAdapter.from_array(deltas), "json")) == [1.5, 60.0]


@pytest.mark.parametrize("media_type", ["text/csv", "text/x-comma-separated-values", "txt"])
async def test_array_csv(media_type):
    data = rng.random((5, 3))
    payload = await encode(ArrayAdapter.from_array(data), media_type)
    decoded = numpy.loadtxt(io.StringIO(payload.decode()), delimiter=",")
    numpy.testing.assert_array_equal(decoded, data)


async def test_array_csv_one_dimensional_ints():
    data = numpy.arange(7)
    payload = await encode(ArrayAdapter.from_array(data), "csv")
    numpy.testing.assert_array_equal(numpy.loadtxt(io.StringIO(payload.decode()), dtype=int), data)


async def test_array_png_grayscale_is_scaled_to_8_bits():
    data = numpy.linspace(0, 1000, 20 * 30).reshape(20, 30)
    image = Image.open(io.BytesIO(await encode(ArrayAdapter.from_array(data), "png")))
    pixels = numpy.asarray(image)
    assert image.mode == "L" and pixels.shape == (20, 30)
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255
    assert numpy.all(numpy.diff(pixels.ravel().astype(int)) >= 0)  # order is kept


async def test_array_png_rgb():
    data = rng.random((8, 9, 3))
    image = Image.open(io.BytesIO(await encode(ArrayAdapter.from_array(data), "image/png")))
    assert image.mode == "RGB" and image.size == (9, 8)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 5, 6), (10,)])
async def test_array_png_of_unsupported_shape_is_406(shape):
    with pytest.raises(UnsupportedMediaType):
        await encode(ArrayAdapter.from_array(numpy.zeros(shape)), "png")


@pytest.mark.parametrize(
    "data",
    [
        rng.random((6, 7)),
        numpy.arange(60, dtype="uint16").reshape(3, 4, 5),
        rng.random((2, 3, 4, 5)).astype("float32"),
    ],
    ids=["2d", "3d", "4d"],
)
async def test_array_tiff_holds_raw_values(data):
    payload = await encode(ArrayAdapter.from_array(data), "tiff")
    numpy.testing.assert_array_equal(tifffile.imread(io.BytesIO(payload)), data)


async def test_array_tiff_of_1d_is_406():
    with pytest.raises(UnsupportedMediaType):
        await encode(ArrayAdapter.from_array(numpy.arange(5)), "image/tiff")


async def test_array_csv_of_3d_is_406():
    with pytest.raises(UnsupportedMediaType):
        await encode(ArrayAdapter.from_array(numpy.zeros((2, 2, 2))), "text/csv")


@pytest.mark.parametrize(
    "data",
    [
        rng.random((3, 4)),
        numpy.array(["alpha", "β", ""]),
        numpy.array(["2020-01-01", "NaT"], dtype="M8[ns]"),
    ],
    ids=["float", "unicode", "datetime"],
)
async def test_array_hdf5(data):
    node = ArrayAdapter.from_array(data, metadata={"units": "mm", "scale": [1, 2], "x": None})
    with h5py.File(io.BytesIO(await encode(node, "h5")), "r") as file:
        dataset = file["data"]
        values = dataset.asstr()[()] if data.dtype.kind == "U" else dataset[()]
        numpy.testing.assert_array_equal(values, data)
        assert dataset.attrs["units"] == "mm"
        numpy.testing.assert_array_equal(dataset.attrs["scale"], [1, 2])
        assert "x" not in dataset.attrs  # None has no HDF5 form


# --- sparse ---


async def test_sparse_as_arrow_and_parquet():
    coo = _coo()
    node = COOAdapter.from_coo(coo)
    arrow = pyarrow.ipc.open_file(io.BytesIO(await encode(node, "arrow"))).read_all()
    parquet = pyarrow.parquet.read_table(io.BytesIO(await encode(node, "parquet")))
    for table in (arrow, parquet):
        assert table.column_names == ["dim0", "dim1", "data"]
        rebuilt = sparse.COO(
            [table["dim0"].to_numpy(), table["dim1"].to_numpy()],
            table["data"].to_numpy(),
            shape=coo.shape,
        )
        numpy.testing.assert_array_equal(rebuilt.todense(), coo.todense())


async def test_sparse_as_csv_and_json():
    coo = _coo()
    node = COOAdapter.from_coo(coo)
    frame = pandas.read_csv(io.BytesIO(await encode(node, "csv")))
    numpy.testing.assert_array_equal(frame["data"], coo.data)
    decoded = json.loads(await encode(node, "json"))
    assert decoded == {
        "dim0": coo.coords[0].tolist(),
        "dim1": coo.coords[1].tolist(),
        "data": coo.data.tolist(),
    }


async def test_sparse_default_is_arrow():
    assert registry.negotiate(["sparse"], None, None) == (
        "sparse",
        "application/vnd.apache.arrow.file",
    )


# --- tables ---


async def test_table_arrow_keeps_values_and_index():
    labels = [f"row-{i}" for i in range(10)]  # not a range, so it is stored as a column
    frame = _frame().set_index(pandas.Index(labels, name="index"))
    node = TableAdapter.from_pandas(frame, npartitions=3)
    table = pyarrow.ipc.open_file(io.BytesIO(await encode(node, None))).read_all()
    decoded = table.to_pandas()
    pandas.testing.assert_frame_equal(decoded, frame, check_dtype=False)
    assert "index" in table.column_names


async def test_table_parquet():
    frame = _frame()
    node = TableAdapter.from_pandas(frame, npartitions=2)
    decoded = pyarrow.parquet.read_table(io.BytesIO(await encode(node, "parquet"))).to_pandas()
    pandas.testing.assert_frame_equal(decoded, frame, check_dtype=False)


async def test_table_csv_has_header_and_no_index():
    frame = _frame()
    payload = await encode(TableAdapter.from_pandas(frame), "text/csv")
    assert payload.decode().splitlines()[0] == "x,y,name"
    pandas.testing.assert_frame_equal(
        pandas.read_csv(io.BytesIO(payload)), frame, check_dtype=False
    )


async def test_table_json_columns_without_index():
    frame = _frame()
    frame.loc[3, "y"] = numpy.nan
    decoded = json.loads(await encode(TableAdapter.from_pandas(frame), "json"))
    assert list(decoded) == ["x", "y", "name"]
    assert decoded["x"] == list(range(10)) and decoded["name"][2] == "item-2"
    assert decoded["y"][3] is None and decoded["y"][4] == frame["y"][4]


async def test_table_hdf5_columns_and_text():
    frame = _frame()
    node = TableAdapter.from_pandas(frame, metadata={"color": "red"})
    with h5py.File(io.BytesIO(await encode(node, "hdf5")), "r") as file:
        assert sorted(file) == ["name", "x", "y"]
        numpy.testing.assert_array_equal(file["x"][()], frame["x"])
        numpy.testing.assert_array_equal(file["y"][()], frame["y"])
        assert list(file["name"].asstr()[()]) == list(frame["name"])
        assert file.attrs["color"] == "red"


# --- containers ---


def _tree() -> MapAdapter:
    inner = MapAdapter(
        {
            "image": ArrayAdapter.from_array(numpy.arange(20.0).reshape(4, 5), metadata={"k": 1}),
            "table": TableAdapter.from_pandas(_frame(), npartitions=2),
        },
        metadata={"level": "inner"},
    )
    return MapAdapter(
        {
            "inner": inner,
            "ints": ArrayAdapter.from_array(numpy.arange(30, dtype="int16")),
            "sparse": COOAdapter.from_coo(_coo()),
        },
        metadata={"level": "root"},
    )


async def test_container_hdf5_walks_the_tree():
    with h5py.File(io.BytesIO(await encode(_tree(), None)), "r") as file:
        assert file.attrs["level"] == "root"
        assert file["inner"].attrs["level"] == "inner"
        numpy.testing.assert_array_equal(file["inner/image"][()], numpy.arange(20.0).reshape(4, 5))
        assert file["inner/image"].attrs["k"] == 1
        numpy.testing.assert_array_equal(file["inner/table/x"][()], numpy.arange(10))
        assert list(file["inner/table/name"].asstr()[()])[:2] == ["item-0", "item-1"]
        numpy.testing.assert_array_equal(file["ints"][()], numpy.arange(30))
        numpy.testing.assert_array_equal(file["sparse"][()], _coo().todense())


async def test_container_hdf5_refuses_metadata_hdf5_cannot_hold():
    # Upstream refuses it too: an export that drops metadata silently looks faithful.
    tree = MapAdapter({}, metadata={"level": "root", "nested": {"not": "representable"}})
    with pytest.raises(UnsupportedMediaType, match="does not fit into HDF5"):
        await encode(tree, None)


async def test_container_json_is_metadata_only():
    decoded = json.loads(await encode(_tree(), "json"))
    assert decoded["metadata"]["level"] == "root"
    assert decoded["contents"]["inner"]["metadata"] == {"level": "inner"}
    assert decoded["contents"]["inner"]["contents"]["image"] == {"metadata": {"k": 1}}
    assert set(decoded["contents"]) == {"inner", "ints", "sparse"}


def _nested(depth: int) -> MapAdapter:
    node = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(3))})
    for _ in range(depth):
        node = MapAdapter({"g": node})
    return node


DEEP = 1100  # deeper than Python's recursion limit


async def test_container_hdf5_of_a_tree_deeper_than_the_recursion_limit():
    with h5py.File(io.BytesIO(await encode(_nested(DEEP), None)), "r") as file:
        assert file["/".join(["g"] * DEEP) + "/x"][()].tolist() == [0, 1, 2]


async def test_zarr_zip_of_a_tree_deeper_than_the_recursion_limit(tmp_path):
    group = _open_zip(await encode(_nested(DEEP), "application/x-zarr"), tmp_path)
    assert group["/".join(["g"] * DEEP) + "/x"][:].tolist() == [0, 1, 2]


async def test_container_json_too_deep_for_one_document_is_406():
    assert json.loads(await encode(_nested(100), "json"))["contents"]["g"]["contents"]
    with pytest.raises(UnsupportedMediaType, match="nested too deeply"):
        await encode(_nested(DEEP), "json")


def test_deep_tree_exports_over_http():
    from tiled.server.app import build_app

    from .live_server import serve

    app = build_app(
        MapAdapter({"deep": _nested(DEEP)}), authentication={"allow_anonymous_access": True}
    )
    with serve(app) as live:
        url = f"{live.url}/api/v1/container/full/deep"
        for format in ["application/x-hdf5", "application/x-zarr"]:
            response = httpx.get(url, params={"format": format}, timeout=60)
            assert response.status_code == 200, response.text
        response = httpx.get(url, params={"format": "application/json"}, timeout=60)
        assert response.status_code == 406 and "nested too deeply" in response.json()["detail"]


# --- xarray datasets ---


def _dataset() -> xarray.Dataset:
    return xarray.Dataset(
        {
            "temperature": ("time", numpy.random.default_rng(5).random(5)),
            "pressure": ("time", numpy.arange(5.0)),
        },
        coords={"time": numpy.arange(5) * 10},
        attrs={"title": "weather"},
    )


async def test_xarray_dataset_as_arrow_frame():
    node = DatasetAdapter.from_dataset(_dataset())
    assert registry.negotiate(_keys(node), "arrow", None)[0] == "xarray_dataset"
    table = pyarrow.ipc.open_file(io.BytesIO(await encode(node, "arrow"))).read_all()
    expected = _dataset().to_dataframe()
    pandas.testing.assert_frame_equal(table.to_pandas(), expected, check_like=True)


async def test_xarray_dataset_as_csv_and_json_include_coordinates():
    node = DatasetAdapter.from_dataset(_dataset())
    frame = pandas.read_csv(io.BytesIO(await encode(node, "csv")))
    assert set(frame.columns) == {"time", "temperature", "pressure"}
    numpy.testing.assert_array_equal(frame["time"], numpy.arange(5) * 10)
    decoded = json.loads(await encode(node, "json"))
    assert decoded["pressure"] == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_xarray_dataset_hdf5_uses_the_container_encoder():
    node = DatasetAdapter.from_dataset(_dataset())
    assert registry.negotiate(_keys(node), "h5", None) == ("container", "application/x-hdf5")
    with h5py.File(io.BytesIO(await encode(node, "h5")), "r") as file:
        numpy.testing.assert_array_equal(file["pressure"][()], numpy.arange(5.0))


# --- zipped zarr ---


def _open_zip(payload: bytes, tmp_path) -> zarr.Group | zarr.Array:
    path = tmp_path / "download.zarr.zip"
    path.write_bytes(payload)
    return zarr.open(zarr.storage.ZipStore(path, mode="r"), mode="r")


async def test_zarr_zip_of_array(zarr_format, tmp_path):
    data = rng.random((23, 17))
    options = EncodeOptions(zarr_options=SMALL_CHUNKS.zarr_options, zarr_format=zarr_format)
    payload = await encode(ArrayAdapter.from_array(data), "zarr", options=options)
    array = _open_zip(payload, tmp_path)
    assert array.metadata.zarr_format == zarr_format
    assert array.nchunks > 1
    numpy.testing.assert_array_equal(array[:], data)


async def test_zarr_zip_of_nested_container(zarr_format, tmp_path):
    options = EncodeOptions(zarr_options=SMALL_CHUNKS.zarr_options, zarr_format=zarr_format)
    group = _open_zip(await encode(_tree(), "application/x-zarr", options=options), tmp_path)
    assert group.attrs["level"] == "root"
    numpy.testing.assert_array_equal(group["inner/image"][:], numpy.arange(20.0).reshape(4, 5))
    numpy.testing.assert_array_equal(group["ints"][:], numpy.arange(30, dtype="int16"))
    numpy.testing.assert_array_equal(group["sparse"][:], _coo().todense())
    numpy.testing.assert_array_equal(group["inner/table/x"][:], numpy.arange(10))
    numpy.testing.assert_array_equal(group["inner/table/y"][:], _frame()["y"])
    assert list(group["inner/table/name"][:]) == [f"item-{i}" for i in range(10)]


async def test_zarr_zip_of_table_and_sparse(zarr_format, tmp_path):
    options = EncodeOptions(zarr_format=zarr_format)
    frame = _frame()
    table = _open_zip(
        await encode(TableAdapter.from_pandas(frame), "zarr", options=options), tmp_path
    )
    numpy.testing.assert_array_equal(table["y"][:], frame["y"])
    coo_path = tmp_path / "coo"
    coo_path.mkdir()
    coo = _open_zip(await encode(COOAdapter.from_coo(_coo()), "zarr", options=options), coo_path)
    numpy.testing.assert_array_equal(coo[:], _coo().todense())


async def test_zarr_zip_streams_member_by_member():
    node = ArrayAdapter.from_array(rng.random((40, 40)))
    result = await registry.encode(
        "array", "application/x-zarr", node=node, read=node.read, metadata={}, options=SMALL_CHUNKS
    )
    parts = [part async for part in result]
    assert len(parts) > 10  # one per document and chunk, then the central directory


async def test_zarr_zip_of_node_without_hooks_is_406():
    class NoZarr:
        structure_family = "array"
        specs = []

        def metadata(self):
            return {}

    with pytest.raises(UnsupportedMediaType):
        await registry.encode("array", "application/x-zarr", node=NoZarr(), read=list, metadata={})


# --- negotiation ---


@pytest.mark.parametrize(
    "keys, format, accept, expected",
    [
        (["array"], None, None, ("array", "application/octet-stream")),
        (["array"], "csv", None, ("array", "text/csv")),
        (["array"], "tif", None, ("array", "image/tiff")),
        (["array"], "foo,json", None, ("array", "application/json")),
        (["array"], "text/csv;charset=utf-8", None, ("array", "text/csv")),
        (["table"], "feather", None, ("table", "application/vnd.apache.arrow.file")),
        (["table"], "parquet", None, ("table", "application/x-parquet")),
        (["container"], "hdf5", None, ("container", "application/x-hdf5")),
        (["container"], "zarr", None, ("container", "application/x-zarr")),
        (["array"], None, "*/*", ("array", "application/octet-stream")),
        (["table"], None, "*/*;q=0.8", ("table", "application/vnd.apache.arrow.file")),
        (["container"], None, "", ("container", "application/x-hdf5")),
        (["array"], None, "image/*", ("array", "image/png")),
        (["array"], None, "text/html, image/tiff;q=0.9, */*;q=0.8", ("array", "image/tiff")),
        (["array"], None, "text/csv;q=0.5, application/json", ("array", "application/json")),
        (["array"], None, "application/json; charset=utf-8", ("array", "application/json")),
        (["array"], "json", "text/csv", ("array", "application/json")),  # format= wins
        (["xarray_dataset", "container"], "json", None, ("xarray_dataset", "application/json")),
        (["xarray_dataset", "container"], None, None, ("container", "application/x-hdf5")),
        (["dataframe", "table"], "csv", None, ("table", "text/csv")),
    ],
)
def test_negotiate(keys, format, accept, expected):
    assert registry.negotiate(keys, format, accept) == expected


@pytest.mark.parametrize(
    "keys, format, accept",
    [
        (["array"], None, "application/x-bogus"),
        (["array"], "xlsx", None),
        (["container"], None, "image/png"),
        (["table"], None, "text/csv;q=0"),
    ],
)
def test_negotiate_unsupported_is_406(keys, format, accept):
    with pytest.raises(UnsupportedMediaType) as info:
        registry.negotiate(keys, format, accept)
    message = str(info.value)
    assert message.startswith("None of the media types requested by the client are supported.")
    assert "Supported: [" in message and "Requested: [" in message


def test_spec_encoders_take_precedence():
    custom = SerializationRegistry()
    custom.register("array", "application/json", lambda data, metadata: b"family")
    custom.register("special", "application/json", lambda data, metadata: b"spec")
    assert custom.negotiate(["special", "array"], "json", None) == ("special", "application/json")
    assert custom.negotiate(["other", "array"], "json", None) == ("array", "application/json")


async def test_custom_registry_data_and_node_encoders():
    custom = SerializationRegistry()
    custom.register("array", "text/x-sum", lambda data, metadata: str(data.sum()).encode())

    async def describe(node, options):
        return f"{node!r}:{options.zarr_format}".encode()

    custom.register("array", "text/x-node", describe, kind="node")
    node = ArrayAdapter.from_array(numpy.arange(4))
    common = {"node": node, "read": node.read, "metadata": {}}
    assert await custom.encode("array", "text/x-sum", **common) == b"6"
    assert (await custom.encode("array", "text/x-node", **common)).endswith(b":3")
    with pytest.raises(ValueError):
        custom.register("array", "text/x-bad", describe, kind="stream")


def test_formats_and_aliases_for_the_about_document():
    formats = registry.formats()
    assert formats["array"][0] == "application/octet-stream"
    assert "application/x-zarr" in formats["container"]
    assert set(formats) >= {"array", "sparse", "table", "container", "xarray_dataset"}
    aliases = registry.aliases()
    assert "csv" in aliases["array"]["text/csv"]
    assert aliases["table"]["application/x-parquet"] == ["parquet"]
    assert {"h5", "hdf5"} <= set(aliases["container"]["application/x-hdf5"])


async def test_zarr_zip_of_xarray_dataset_opens_with_xarray(zarr_format, tmp_path):
    node = DatasetAdapter.from_dataset(_dataset())
    assert registry.negotiate(_keys(node), "zarr", None) == ("container", "application/x-zarr")
    path = tmp_path / "dataset.zarr.zip"
    path.write_bytes(await encode(node, "zarr", options=EncodeOptions(zarr_format=zarr_format)))
    store = zarr.storage.ZipStore(path, mode="r")
    opened = xarray.open_zarr(store, zarr_format=zarr_format, consolidated=False)
    xarray.testing.assert_identical(opened.load(), _dataset())


async def test_zarr_zip_skips_members_without_zarr_hooks(tmp_path):
    class Opaque:
        structure_family = "container"
        specs = []

        def metadata(self):
            return {}

    tree = MapAdapter({"opaque": Opaque(), "ints": ArrayAdapter.from_array(numpy.arange(3))})
    group = _open_zip(await encode(tree, "zarr"), tmp_path)
    assert list(group.keys()) == ["ints"]
    with h5py.File(io.BytesIO(await encode(tree, "h5")), "r") as file:
        assert sorted(file) == ["ints", "opaque"]  # an empty group: its contents are unknown


@pytest.mark.parametrize(
    "data",
    [
        numpy.array(2.5),
        numpy.array(["a", "bb", ""]),
        numpy.zeros((0, 3)),
        numpy.arange(3, dtype=">i8"),
    ],
    ids=["scalar", "text", "empty", "big-endian"],
)
async def test_zarr_zip_of_edge_case_arrays(data, zarr_format, tmp_path):
    payload = await encode(
        ArrayAdapter.from_array(data), "zarr", options=EncodeOptions(zarr_format=zarr_format)
    )
    numpy.testing.assert_array_equal(_open_zip(payload, tmp_path)[...], data)


async def test_array_json_zero_dimensional_datetime():
    data = numpy.array("2020-01-01T00:00:01", dtype="M8[ns]")
    assert json.loads(await encode(ArrayAdapter.from_array(data), "json")) == "2020-01-01T00:00:01"

"""Names and behaviour of upstream Tiled's data layer: adapters.utils.force_reshape, byte
strings, array reads in pieces (any step), table and dataset reads, export formats (CSV
parameters, JSON sequences, Excel, XDI), HDF5 metadata refusal, generate_files."""

from __future__ import annotations

import io
import json
import string

import numpy
import pandas
import pytest
import xarray

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.table import DataFrameAdapter
from tiled.adapters.utils import (
    DataNotReadyError,
    IncompatibleShapeError,
    ShapeMismatchError,
    force_reshape,
    split_chunks,
)
from tiled.adapters.xarray import DatasetAdapter
from tiled.client import Context, from_context, record_history
from tiled.client.array import ArrayClient, chunks_repr
from tiled.client.utils import ClientError
from tiled.serialization import default_serialization_registry
from tiled.serialization.array import as_buffer
from tiled.serialization.table import deserialize_arrow, encode_arrow
from tiled.serialization.xarray import serialize_json
from tiled.server.app import build_app
from tiled.structures.array import ArrayStructure, StructDtype
from tiled.structures.core import Spec

CUBE = numpy.arange(6 * 40 * 50, dtype="int32").reshape((6, 40, 50))
CHARS = (numpy.arange(10) * 1j).astype("c")  # numpy's one-byte characters, "|S1"
TABLE = pandas.DataFrame({"x": numpy.arange(6.0), "name": list("abcdef")})
WIDE = xarray.Dataset(
    {f"v{i}": ("t", numpy.arange(4) * i) for i in range(8)}, coords={"t": numpy.arange(4) * 10}
)


def _tree() -> MapAdapter:
    return MapAdapter(
        {
            "cube": ArrayAdapter.from_array(CUBE, chunks=(1, 40, 25)),
            "chars": ArrayAdapter.from_array(CHARS),
            "strings": ArrayAdapter.from_array(numpy.array([b"ab", b"cd"], dtype="S2")),
            "table": DataFrameAdapter.from_pandas(TABLE, npartitions=2),
            "wide": DatasetAdapter.from_dataset(WIDE),
            "xdi": DataFrameAdapter.from_pandas(
                TABLE[["x"]],
                npartitions=1,
                metadata={
                    "xdi_version": "1.0",
                    "fields": {"GSE": {"EXTRA": "x"}, "Element": {"symbol": "Cu"}},
                    "comments": "plain line\n# hashed line",
                },
                specs=[Spec("xdi")],
            ),
            "ahead": ArrayAdapter(
                numpy.ones((3, 2)), ArrayStructure.from_array(numpy.ones((5, 2)))
            ),
            "wrong": ArrayAdapter(
                numpy.ones((4, 3)), ArrayStructure.from_array(numpy.ones((4, 5)))
            ),
            "behind": ArrayAdapter(
                numpy.arange(8).reshape((4, 2)), ArrayStructure.from_array(numpy.ones((2, 2)))
            ),
            "nested_metadata": MapAdapter({}, metadata={"a": {"b": 1}}),
        }
    )


@pytest.fixture(scope="module")
def client():
    with Context.from_app(build_app(_tree())) as context:
        yield from_context(context)


# --- adapters.utils ---


def test_force_reshape_cases():
    data = numpy.arange(12).reshape((4, 3))
    assert force_reshape(data, (4, 3)) is data
    numpy.testing.assert_array_equal(force_reshape(data, (2, 3)), data[:2])  # file ahead
    assert force_reshape(data, (3, 4)).shape == (3, 4)  # same size: reshaped
    with pytest.raises(DataNotReadyError):
        force_reshape(data, (6, 3))  # structure ahead
    with pytest.raises(IncompatibleShapeError):
        force_reshape(data, (4, 5))
    assert issubclass(DataNotReadyError, ShapeMismatchError)
    assert issubclass(ShapeMismatchError, ValueError)
    assert split_chunks(10, 4) == (4, 4, 2) and split_chunks(8, 4) == (4, 4)


def test_shape_mismatches_are_503_and_422_with_a_detail(client):
    url = client.context.api_uri + "array/full/"
    http = client.context.http_client
    ahead = http.get(url + "ahead")
    assert ahead.status_code == 503 and "retry" in ahead.json()["detail"]
    assert ahead.headers["Retry-After"]
    wrong = http.get(url + "wrong")
    assert wrong.status_code == 422 and "cannot be served" in wrong.json()["detail"]
    numpy.testing.assert_array_equal(client["behind"].read(), [[0, 1], [2, 3]])


# --- dtypes and structures ---


def test_one_byte_characters_are_bytes_strings(client):
    node = client["chars"]
    assert node.dtype == numpy.dtype("S1") == CHARS.dtype
    numpy.testing.assert_array_equal(node.read(), CHARS)
    numpy.testing.assert_array_equal(node[::-3], CHARS[::-3])
    numpy.testing.assert_array_equal(client["strings"][::-1], [b"cd", b"ab"])


def test_struct_dtype_max_depth():
    flat = numpy.dtype([("a", "u1"), ("b", "f2")])
    nested = numpy.dtype([("a", [("b", "i4"), ("c", [("d", "f4")])]), ("e", "f8")])
    assert StructDtype.from_numpy_dtype(flat).max_depth() == 1
    assert StructDtype.from_numpy_dtype(nested).max_depth() == 3


@pytest.mark.parametrize("dtype", ["int16", ">f8", "datetime64[ms]", "U3", "S2", "c"])
def test_as_buffer_is_the_raw_bytes(dtype):
    array = numpy.zeros((3, 2), dtype=dtype)[:, ::-1]  # not contiguous
    output = as_buffer("application/octet-stream", array, {})
    assert bytes(output) == numpy.ascontiguousarray(array).tobytes()


# --- array reads ---


@pytest.mark.parametrize(
    "key",
    [
        numpy.s_[::-1],
        numpy.s_[4:0:-2, ::-1, 3],
        numpy.s_[..., ::-7],
        numpy.s_[-1, 5:1:-1],
        numpy.s_[2:2],
    ],
)
def test_any_step_reads_in_one_request(client, key):
    node = client["cube"]
    with record_history() as history:
        got = node[key]
    numpy.testing.assert_array_equal(got, CUBE[key])
    assert len(history.requests) == (1 if CUBE[key].size else 0)
    assert all("/array/full/" in str(r.url) for r in history.requests)


@pytest.mark.parametrize(
    "key", [None, numpy.s_[::-1], numpy.s_[1:6:2, ::-3], numpy.s_[:, 7:33, ::-1]]
)
def test_reads_above_the_limit_come_in_chunk_aligned_pieces(client, monkeypatch, key):
    node = client["cube"]
    # A piece holds at most one 40 x 25 chunk.
    monkeypatch.setattr(ArrayClient, "RESPONSE_BYTESIZE_LIMIT", 40 * 25 * 4)
    expected = CUBE if key is None else CUBE[key]
    with record_history() as history:
        got = node.read(key)
    numpy.testing.assert_array_equal(got, expected)
    assert got.flags.writeable
    assert len(history.requests) == node.fetch_count(key) > 1
    if key is None:
        assert len(history.requests) == 12  # one per chunk
        assert all("slice=" in str(r.url) for r in history.requests)


def test_whole_reads_send_no_slice(client):
    node = client["cube"]
    with record_history() as history:
        for key in [None, (), ..., numpy.s_[:], numpy.s_[:, ..., :]]:
            node.read(key)
    assert all("slice" not in r.url.params for r in history.requests)
    assert all(r.url.params["expected_shape"] == "6,40,50" for r in history.requests)


@pytest.mark.parametrize("key", [6, -7, (0, 0, 50), [0, 1], numpy.array([1, 2])])
def test_indices_outside_or_fancy_are_index_errors(client, key):
    with pytest.raises(IndexError):
        client["cube"][key]


def test_array_repr_abbreviates_chunks(client):
    assert repr(client["cube"]) == (
        "<ArrayClient shape=(6, 40, 50) chunks=((1, 1, ..., 1), (40,), (25, 25)) dtype=int32>"
    )
    assert chunks_repr([(2, 2, 2, 2, 2, 1), (1, 2, 3, 4, 5, 6), (3,)]) == (
        "((2, 2, ..., 2, 1), variable, (3,))"
    )


# --- tables and datasets ---


def test_deserialize_arrow_reads_what_the_server_sends(client):
    assert deserialize_arrow(encode_arrow(TABLE, {})).equals(TABLE)
    response = client.context.http_client.get(
        client.context.api_uri + "table/full/table",
        headers={"Accept": "application/vnd.apache.arrow.file"},
    )
    pandas.testing.assert_frame_equal(deserialize_arrow(response.content), TABLE)


def test_table_size_limit_counts_the_index():
    tiny = DataFrameAdapter.from_pandas(pandas.DataFrame({"a": numpy.ones(50)}), npartitions=2)
    app = build_app(MapAdapter({"t": tiny}), server_settings={"response_bytesize_limit": 200})
    with Context.from_app(app) as context:
        with pytest.raises(ClientError) as caught:
            from_context(context)["t"].read()
    assert caught.value.response.status_code == 400


def test_field_parameter_is_deprecated(client):
    with pytest.warns(DeprecationWarning, match="'field'"):
        client.context.http_client.get(
            client.context.api_uri + "table/partition/table",
            params={"partition": 0, "field": "x"},
        )


def test_wide_dataset_is_read_in_two_requests(client):
    node = client["wide"]
    node.read()
    with record_history() as history:
        got = node.read()
    xarray.testing.assert_identical(got, WIDE)
    assert len(history.requests) == 2
    assert all("/container/full/wide" in str(r.url) for r in history.requests)
    with record_history() as history:
        xarray.testing.assert_identical(node.read(optimize_wide_table=False), WIDE)
    assert len(history.requests) > 2


def test_wide_dataset_falls_back_to_post_for_long_urls(client, monkeypatch):
    from tiled.client.base import BaseClient

    monkeypatch.setattr(BaseClient, "URL_CHARACTER_LIMIT", 10)
    with record_history() as history:
        xarray.testing.assert_identical(client["wide"].read(), WIDE)
    assert {r.method for r in history.requests if "/container/full/" in str(r.url)} == {"POST"}


async def test_serialize_json_leaves_the_index_out():
    node = DatasetAdapter.from_dataset(WIDE)
    result = json.loads(await serialize_json("application/json", node, None, None))
    assert list(result) == [f"v{i}" for i in range(8)]
    assert result["v2"] == [0, 2, 4, 6]


# --- export formats ---


def _export(node, **kwargs) -> bytes:
    buffer = io.BytesIO()
    node.export(buffer, **kwargs)
    return buffer.getvalue()


def test_csv_header_parameter(client):
    present = _export(client["table"], format="text/csv;header=present").decode()
    absent = _export(client["table"], format="text/csv;header=absent").decode()
    assert present.splitlines()[0] == "x,name"
    assert absent.splitlines() == present.splitlines()[1:]
    assert _export(client["table"], format="csv").decode() == present


def test_json_seq_records(client):
    payload = _export(client["table"], format="application/json-seq")
    records = payload.split(b"\x1e")
    assert records[0] == b"" and len(records) == 7
    assert all(r.endswith(b"\n") for r in records[1:])
    assert json.loads(records[2]) == {"x": 1.0, "name": "b"}


def test_excel_export(client):
    content = _export(client["table"], format="xlsx")
    # Excel keeps no integer/float distinction: 1.0 reads back as 1.
    read_back = pandas.read_excel(io.BytesIO(content))
    pandas.testing.assert_frame_equal(read_back, TABLE, check_dtype=False)


def test_registry_dispatch_has_upstreams_signature():
    frame = pandas.DataFrame({"b": [b"abc", b"\xff\xfe"]})
    to_json = default_serialization_registry.dispatch("table", "application/json")
    assert json.loads(to_json("application/json", frame, {})) == {"b": ["abc", "ÿþ"]}
    to_csv = default_serialization_registry.dispatch("table", "text/csv")
    assert to_csv("text/csv;header=absent", frame[["b"]].iloc[:0], {}) == b""
    with pytest.raises(ValueError):
        default_serialization_registry.dispatch("table", "image/png")


def test_xdi_for_xdi_tables_only(client):
    text = _export(client["xdi"], format="xdi").decode()
    lines = text.splitlines()
    assert lines[0] == "# XDI/1.0"
    assert lines.index("# Element.symbol: Cu") < lines.index("# GSE.EXTRA: x")
    assert "# plain line" in lines and "# hashed line" in lines
    assert lines[lines.index("# x") + 1 :] == [str(v) for v in TABLE["x"]]
    with pytest.raises(ClientError) as caught:
        _export(client["table"], format="application/x-xdi")
    assert caught.value.response.status_code == 406


def test_hdf5_export_refuses_metadata_it_cannot_hold(client):
    with pytest.raises(ClientError, match="does not fit into HDF5") as caught:
        _export(client["nested_metadata"], format="application/x-hdf5")
    assert caught.value.response.status_code == 406


def test_hdf5_export_of_a_dataset_writes_its_attrs():
    import h5py

    dataset = WIDE.assign_attrs(title="wide")
    dataset["v1"].attrs["units"] = "m"
    with Context.from_app(build_app(MapAdapter({"d": DatasetAdapter.from_dataset(dataset)}))) as c:
        content = _export(from_context(c)["d"], format="application/x-hdf5")
    with h5py.File(io.BytesIO(content), "r") as file:
        assert file.attrs["title"] == "wide"
        assert file["v1"].attrs["units"] == "m"
        numpy.testing.assert_array_equal(file["v3"][()], WIDE["v3"].values)


def test_generate_files(tmp_path):
    from tiled.examples.generate_files import TIFF_PATHS, df1, df2, generate_files

    generate_files(tmp_path)
    for parts in TIFF_PATHS:
        assert tmp_path.joinpath(*parts).is_file()
    sheets = pandas.read_excel(tmp_path / "tables.xlsx", sheet_name=None)
    pandas.testing.assert_frame_equal(sheets["Sheet 2"], df2)
    assert (tmp_path / "another_table.csv").read_text().splitlines()[0] == ",A,B"
    assert len(df1) == 3


def test_string_letters_round_trip(client):
    # S and U arrays of every ASCII letter read back exactly, reversed too.
    letters = numpy.array([c * 3 for c in string.ascii_letters], dtype="S3")
    app = build_app(MapAdapter({"s": ArrayAdapter.from_array(letters)}))
    with Context.from_app(app) as context:
        node = from_context(context)["s"]
        numpy.testing.assert_array_equal(node[::-1], letters[::-1])

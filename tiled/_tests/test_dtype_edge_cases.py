"""Data types at the edges: byte order, types zarr cannot store or describe, absurd CSV widths.

Real servers on loopback, real clients (the Python client, httpx, zarr-python over HTTP).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import numpy
import pytest
import zarr

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.files import uri_from_path
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.npy import NPYAdapter
from tiled.catalog import in_memory
from tiled.client import from_uri
from tiled.client.utils import ClientError
from tiled.server.app import build_app

from .live_server import serve

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
OCTET = {**HEADERS, "Accept": "application/octet-stream"}


@pytest.fixture
def catalog_server(tmp_path):
    storage = tmp_path / "data"
    storage.mkdir()
    app = build_app(
        in_memory(writable_storage=storage), authentication={"single_user_api_key": KEY}
    )
    with serve(app) as live:
        yield live, from_uri(live.url, api_key=KEY), storage


def _zarr_read(url: str, zarr_format: int) -> numpy.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr-python's "no v3 specification yet" warnings
        array = zarr.open_array(
            url, mode="r", zarr_format=zarr_format, storage_options={"headers": HEADERS}
        )
        return array[...]


def test_big_endian_array_written_to_the_catalog_reads_back(catalog_server):
    live, client, _ = catalog_server
    expected = numpy.arange(5, dtype=">i4")
    node = client.write_array(expected, key="big")
    got = node.read()
    assert got.dtype == expected.dtype
    numpy.testing.assert_array_equal(got, expected)
    for route in ["array/full/big", "array/block/big?block=0"]:
        response = httpx.get(f"{live.url}/api/v1/{route}", headers=OCTET)
        assert response.status_code == 200
        # The bytes are in the order the structure declares (big-endian).
        assert response.content == expected.tobytes()
    for zarr_format in (2, 3):
        got = _zarr_read(f"{live.url}/zarr/v{zarr_format}/big", zarr_format)
        numpy.testing.assert_array_equal(got, expected)


def test_big_endian_in_memory_array_is_sent_as_declared():
    expected = numpy.arange(6, dtype=">f8").reshape(2, 3)
    tree = MapAdapter({"big": ArrayAdapter.from_array(expected)})
    with serve(build_app(tree, authentication={"single_user_api_key": KEY})) as live:
        response = httpx.get(f"{live.url}/api/v1/array/full/big", headers=OCTET)
        assert response.content == expected.tobytes()
        numpy.testing.assert_array_equal(from_uri(live.url, api_key=KEY)["big"].read(), expected)
        for zarr_format in (2, 3):
            got = _zarr_read(f"{live.url}/zarr/v{zarr_format}/big", zarr_format)
            numpy.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "dtype",
    [
        numpy.longdouble,
        "complex256",
        [("a", "<i4", (2,))],  # zarr-python would store the sub-array field as raw bytes
        [("a", "<i4"), ("b", ">f8")],  # v3 records have no byte order: read little-endian
    ],
    ids=["float128", "complex256", "sub-array-field", "big-endian-field"],
)
def test_data_types_zarr_cannot_store_are_refused_before_anything_is_made(catalog_server, dtype):
    live, client, storage = catalog_server
    data = numpy.zeros(2, dtype=dtype)
    with pytest.raises(ClientError) as caught:
        client.write_array(data, key="exotic")
    assert caught.value.response.status_code == 400
    assert str(data.dtype) in caught.value.response.json()["detail"]
    assert list(client) == [] and list(storage.iterdir()) == []


def test_little_endian_records_are_stored(catalog_server):
    live, client, _ = catalog_server
    expected = numpy.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])
    node = client.write_array(expected, key="records")
    numpy.testing.assert_array_equal(node.read(), expected)
    for zarr_format in (2, 3):
        got = _zarr_read(f"{live.url}/zarr/v{zarr_format}/records", zarr_format)
        numpy.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def npy_server(tmp_path_factory):
    directory: Path = tmp_path_factory.mktemp("npy")
    numpy.save(directory / "sub.npy", numpy.array([([1, 2],), ([3, 4],)], [("a", "<i4", (2,))]))
    numpy.save(directory / "ok.npy", numpy.arange(3))
    with open(directory / "huge.npy", "wb") as file:  # no rows, 10**18 columns
        header = {"descr": "<f8", "fortran_order": False, "shape": (0, 10**18)}
        numpy.lib.format.write_array_header_1_0(file, header)
    files = {
        key: NPYAdapter(uri_from_path(directory / f"{key}.npy")) for key in ["sub", "ok", "huge"]
    }
    tree = MapAdapter({"g": MapAdapter(files)})
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield live


def test_record_with_sub_array_field_has_no_zarr_v3_view(npy_server):
    url = npy_server.url
    response = httpx.get(f"{url}/zarr/v3/g/sub/zarr.json")
    assert response.status_code == 415
    assert "<i4" in response.json()["detail"]
    # Its parent and siblings stay readable; the v2 view and /api/v1 serve it.
    group = httpx.get(f"{url}/zarr/v3/g/zarr.json")
    assert group.status_code == 200
    assert set(group.json()["consolidated_metadata"]["metadata"]) == {"ok", "huge"}
    assert httpx.get(f"{url}/zarr/v3/g/ok/zarr.json").status_code == 200
    assert httpx.get(f"{url}/zarr/v2/g/sub/.zarray").status_code == 200
    got = from_uri(url)["g/sub"].read()
    assert got["a"].tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("route", ["array/full/g/huge", "array/block/g/huge?block=0,0"])
def test_csv_of_absurdly_many_columns_is_refused(npy_server, route):
    separator = "&" if "?" in route else "?"
    response = httpx.get(f"{npy_server.url}/api/v1/{route}{separator}format=text/csv")
    assert response.status_code == 406
    assert "columns" in response.json()["detail"]

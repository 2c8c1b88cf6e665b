"""Growing arrays: ``PATCH /api/v1/array/full/{path}`` with ``offset``, ``shape`` and ``extend``
(upstream's route), on SQLite and PostgreSQL, read back through /api/v1 and zarr-python."""

from __future__ import annotations

import httpx
import numpy
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, array_request, live_catalog  # noqa: F401 (fixtures)

FRAME = (4, 5)


def patch(client: httpx.Client, path: str, data: numpy.ndarray, offset, **params) -> httpx.Response:
    return client.patch(
        f"/api/v1/array/full/{path}",
        params={
            "offset": ",".join(map(str, offset)),
            "shape": ",".join(map(str, data.shape)),
            **params,
        },
        content=data.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )


def read(client: httpx.Client, path: str) -> numpy.ndarray:
    structure = client.get(f"/api/v1/metadata/{path}").json()["data"]["attributes"]["structure"]
    content = client.get(f"/api/v1/array/full/{path}").content
    return numpy.frombuffer(content, dtype="<f8").reshape(structure["shape"])


def test_an_array_grows_frame_by_frame(live_catalog, storage):  # noqa: F811
    first = numpy.arange(1.0, 2 * 20 + 1).reshape(2, *FRAME)
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        created = client.post("/api/v1/metadata/", json=array_request("x", first, [[2], [4], [5]]))
        assert created.status_code == 200, created.text
        assert client.put("/api/v1/array/full/x", content=first.tobytes()).status_code == 200
        first_chunk = next(p for p in storage.rglob("c/0/0/0") if p.is_file()).read_bytes()
        expected = [first]
        for n in range(2, 9):
            frame = numpy.full((1, *FRAME), float(n))
            response = patch(client, "x", frame, (n,), extend="true")
            assert response.status_code == 200, response.text
            structure = response.json()
            assert structure["shape"] == [n + 1, *FRAME]
            # The chunk grid stays regular: chunks of 2 frames, the last one possibly short.
            assert structure["chunks"][0] == [2] * ((n + 1) // 2) + [1] * ((n + 1) % 2)
            expected.append(frame)
            numpy.testing.assert_array_equal(read(client, "x"), numpy.concatenate(expected))
        whole = numpy.concatenate(expected)
        # A region inside the array is written in place without extend.
        inside = -numpy.ones((2, 2, 2))
        assert patch(client, "x", inside, (3, 1, 1)).status_code == 200
        whole[3:5, 1:3, 1:3] = inside
        numpy.testing.assert_array_equal(read(client, "x"), whole)
        # zarr clients see the new shape and the data, in both formats.
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        for zarr_format in (2, 3):
            array = zarr.open_array(fs.get_mapper(f"{server.url}/zarr/v{zarr_format}/x"), mode="r")
            assert array.shape == whole.shape
            numpy.testing.assert_array_equal(array[...], whole)
        # Chunks that the growth did not touch are the files written before, byte for byte.
        assert client.get("/zarr/v3/x/c/0/0/0").content == first_chunk
    server_context, _ = live_catalog()  # a new server on the same database and storage
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        numpy.testing.assert_array_equal(read(client, "x"), whole)


def test_growing_along_several_dimensions(live_catalog):  # noqa: F811
    data = numpy.arange(6.0).reshape(2, 3)
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.post(
            "/api/v1/metadata/", json=array_request("y", data, [[2], [3]])
        ).is_success
        assert client.put("/api/v1/array/full/y", content=data.tobytes()).status_code == 200
        corner = numpy.full((2, 2), 7.0)
        response = patch(client, "y", corner, (3, 4), extend="true")
        assert response.status_code == 200, response.text
        assert response.json()["shape"] == [5, 6]
        expected = numpy.zeros((5, 6))  # new elements are the stored fill value
        expected[:2, :3] = data
        expected[3:, 4:] = corner
        numpy.testing.assert_array_equal(read(client, "y"), expected)


# (params, body shape, status): each refused, and nothing stored changes.
REFUSED = [
    ({"offset": "3"}, (1, *FRAME), 409),  # outside the array without extend
    ({"offset": "1", "extend": "true", "persist": "false"}, (1, *FRAME), 400),
    ({"offset": "one"}, (1, *FRAME), 400),
    ({"offset": "-1"}, (1, *FRAME), 400),
    ({"offset": "0,0,0,0"}, (1, *FRAME), 400),
    ({"offset": "0"}, (1, 4), 400),  # wrong number of dimensions
    ({"offset": "0", "shape": "1,4,4"}, (1, *FRAME), 413),  # a body larger than the shape
    ({"offset": "0", "shape": "1,4,6"}, (1, *FRAME), 400),  # a body smaller than the shape
]


@pytest.mark.parametrize(("params", "shape", "status"), REFUSED)
def test_refused_patches_change_nothing(live_catalog, storage, params, shape, status):  # noqa: F811
    data = numpy.arange(3 * 20, dtype="float64").reshape(3, *FRAME)
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.post("/api/v1/metadata/", json=array_request("x", data, [[2, 1], [4], [5]]))
        assert client.put("/api/v1/array/full/x", content=data.tobytes()).status_code == 200

        def state():
            files = sorted((p.relative_to(storage), p.read_bytes()) for p in storage.rglob("*")
                           if p.is_file())  # fmt: skip
            metadata = client.get("/api/v1/metadata/x").json()["data"]["attributes"]
            return read(client, "x").tolist(), metadata["structure"], files

        before = state()
        body = numpy.ones(shape)
        query = {"shape": ",".join(map(str, shape)), **params}
        response = client.patch(
            "/api/v1/array/full/x", params=query, content=body.tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert response.status_code == status, response.text
        assert response.json()["detail"]
        assert state() == before


def test_arrays_that_cannot_grow_say_so(live_catalog):  # noqa: F811
    """In-memory arrays take no patch (405); a table is not an array (4xx)."""
    from tiled.adapters.array import ArrayAdapter
    from tiled.adapters.mapping import MapAdapter
    from tiled.server.app import build_app

    from .live_server import serve

    tree = MapAdapter({"a": ArrayAdapter.from_array(numpy.zeros((2, 2)))})
    app = build_app(tree, authentication={"single_user_api_key": "secret"})
    with serve(app) as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        response = patch(client, "a", numpy.ones((1, 2)), (2,), extend="true")
        assert response.status_code == 405 and response.json()["detail"]


UPSTREAM_PATCH = r"""
import json, sys
import numpy
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
array = client.write_array(numpy.ones((3, 2, 2)), key="grown")
array.patch(numpy.zeros((1, 2, 2)), offset=(3,), extend=True)
array.patch(numpy.full((2, 2, 2), 5.0), offset=(4,), extend=True)
array.patch(numpy.full((1, 1, 1), 9.0), offset=(0, 1, 1))
try:
    array.patch(numpy.ones((1, 2, 2)), offset=(9,))
    refused = None
except Exception as err:
    refused = type(err).__name__
fresh = from_uri(sys.argv[1], api_key="secret")["grown"]
print(json.dumps({"shape": list(fresh.shape), "values": fresh.read().tolist(),
                  "refused": refused}))
"""


@pytest.mark.slow
def test_upstream_client_grows_an_array(upstream_tiled, live_catalog):  # noqa: F811
    """Upstream 0.2.20's client: ``ArrayClient.patch(..., extend=True)`` against this server."""
    import json

    from .isolated_python import run_isolated

    server_context, _ = live_catalog()
    with server_context as server:
        result = run_isolated(upstream_tiled, UPSTREAM_PATCH, server.url)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    expected = numpy.concatenate([numpy.ones((3, 2, 2)), numpy.zeros((1, 2, 2)),
                                  numpy.full((2, 2, 2), 5.0)])  # fmt: skip
    expected[0, 1, 1] = 9.0
    assert got["shape"] == [6, 2, 2]
    assert got["values"] == expected.tolist()
    assert got["refused"] is not None  # 409, raised as an error by upstream's client


def test_a_client_that_knows_fewer_frames_reads_those(tmp_path):
    """An array client that read the shape before the array grew reads the part it knows of,
    through both read paths (small bodies by httpx, large ones by aiohttp)."""
    from tiled.client import from_uri
    from tiled.server.simple import SimpleTiledServer

    server = SimpleTiledServer(directory=tmp_path)
    try:
        writer = from_uri(server.uri)
        for key, rows in (("small", 2), ("large", 200)):  # 16 kB and 1.6 MB
            data = numpy.arange(rows * 1000.0).reshape(rows, 1000)
            array = writer.write_array(data, key=key)
            reader = from_uri(server.uri)[key]
            assert reader.shape == (rows, 1000)
            array.patch(numpy.ones((3, 1000)), offset=(rows,), extend=True)
            numpy.testing.assert_array_equal(reader.read(), data)
            assert reader.refresh().shape == (rows + 3, 1000)
            numpy.testing.assert_array_equal(reader.read()[rows:], numpy.ones((3, 1000)))
    finally:
        server.close()

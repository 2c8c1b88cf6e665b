"""HTTP API v1 on the demo tree: shapes, media types decoded by real libraries, and bad input."""

from __future__ import annotations

import gzip
import io
import json

import httpx
import msgpack
import numpy
import pandas
import pytest

from tiled.server.app import build_app


@pytest.fixture(scope="module")
def app(demo_tree):
    return build_app(demo_tree, authentication={"allow_anonymous_access": True})


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tiled.test") as client:
        yield client


def node(tree, path):
    for part in filter(None, path.split("/")):
        tree = tree[part]
    return tree


async def test_about_document(client):
    about = (await client.get("/api/v1/")).json()
    assert about["api_version"] == 0
    assert set(about) == {
        "api_version",
        "library_version",
        "formats",
        "aliases",
        "queries",
        "authentication",
        "links",
        "meta",
    }
    assert "application/x-zarr" in about["formats"]["array"]
    assert "eq" in about["queries"] and about["authentication"]["required"] is False
    assert about["links"]["self"] == "http://tiled.test/api/v1"


async def test_metadata_resource_shape(client):
    body = (await client.get("/api/v1/metadata/nested/images/medium_image")).json()
    assert set(body) == {"data", "error", "links", "meta"}
    resource = body["data"]
    assert resource["id"] == "medium_image"
    attributes = resource["attributes"]
    assert set(attributes) == {
        "ancestors",
        "structure_family",
        "specs",
        "metadata",
        "structure",
        "sorting",
        "data_sources",
        "access_tags",
    }
    assert attributes["ancestors"] == ["nested", "images"]
    assert attributes["structure"]["chunks"] == [[250] * 4, [100] * 10]
    base = "http://tiled.test/api/v1"
    assert resource["links"] == {
        "self": f"{base}/metadata/nested/images/medium_image",
        "full": f"{base}/array/full/nested/images/medium_image",
        "block": f"{base}/array/block/nested/images/medium_image?block={{0}},{{1}}",
    }


async def test_container_table_and_inlined_resources(client):
    root = (await client.get("/api/v1/metadata/")).json()["data"]
    assert root["id"] == "" and root["attributes"]["structure"] == {"contents": None, "count": 8}
    assert root["attributes"]["sorting"] == [{"key": "_", "direction": 1}]
    table = (await client.get("/api/v1/metadata/tables/short_table")).json()["data"]
    assert table["attributes"]["structure"]["columns"] == ["A", "B", "C"]
    assert table["links"]["partition"].endswith(
        "/table/partition/tables/short_table?partition={index}"
    )
    column = (await client.get("/api/v1/metadata/tables/short_table/A")).json()["data"]
    assert column["attributes"]["structure_family"] == "array"
    assert column["attributes"]["ancestors"] == ["tables", "short_table"]
    dataset = (await client.get("/api/v1/metadata/structured_data/xarray_dataset")).json()["data"]
    contents = dataset["attributes"]["structure"]["contents"]
    assert list(contents) == ["temperature", "precipitation", "lon", "lat", "time"]
    assert contents["time"]["attributes"]["structure"]["dims"] == ["time"]


async def test_msgpack_when_asked(client):
    response = await client.get(
        "/api/v1/metadata/scalars", headers={"Accept": "application/x-msgpack"}
    )
    assert response.headers["content-type"] == "application/x-msgpack"
    assert msgpack.unpackb(response.content)["data"]["attributes"]["metadata"]["precision"] == 5


async def test_search_pagination_and_fields(client):
    page = (await client.get("/api/v1/search/", params={"page[limit]": 3})).json()
    assert [item["id"] for item in page["data"]] == ["scalars", "nested", "tables"]
    assert page["meta"]["count"] == 8
    assert page["links"]["next"] == "http://tiled.test/api/v1/search/?page[offset]=3&page[limit]=3"
    last = (
        await client.get("/api/v1/search/", params={"page[offset]": 6, "page[limit]": 3})
    ).json()
    assert [item["id"] for item in last["data"]] == ["high_entropy", "dynamic"] and last["links"][
        "next"
    ] is None
    keys_only = (await client.get("/api/v1/search/scalars", params={"fields": ""})).json()["data"]
    assert [k["id"] for k in keys_only] == ["pi", "e_arr", "fsc", "fortytwo"]
    assert keys_only[0]["attributes"]["metadata"] is None and set(keys_only[0]["links"]) == {"self"}
    count = (await client.get("/api/v1/search/", params={"fields": "count"})).json()
    assert count["data"] == [] and count["meta"]["count"] == 8


async def test_search_filters_and_sort(client):
    params = [
        ("filter[eq][condition][key]", "color"),
        ("filter[eq][condition][value]", '"red"'),
    ]
    found = (await client.get("/api/v1/search/tables", params=params)).json()
    assert [item["id"] for item in found["data"]] == ["short_table", "wide_table"]
    reverse = (await client.get("/api/v1/search/tables", params={"sort": "-color"})).json()
    assert [item["id"] for item in reverse["data"]][0] in ("short_table", "wide_table")
    lookup = await client.get(
        "/api/v1/search/tables", params={"filter[lookup][condition][key]": "long_table"}
    )
    assert [item["id"] for item in lookup.json()["data"]] == ["long_table"]
    selected = await client.get("/api/v1/search/tables", params={"select_metadata": "color"})
    assert selected.json()["data"][0]["attributes"]["metadata"] == {"selected": "red"}


async def test_distinct(client):
    body = (
        await client.get("/api/v1/distinct/tables", params={"metadata": "color", "counts": True})
    ).json()
    values = {item["value"]: item["count"] for item in body["metadata"]["color"]}
    assert values == {"red": 2, "green": 1}


ARRAY_PATHS = [
    "nested/images/tiny_image",
    "high_entropy",
    "scalars/pi",
    "structured_data/pets",
    "scalars/fsc",
]


@pytest.mark.parametrize("path", ARRAY_PATHS)
async def test_array_full_octet_stream(client, demo_tree, path):
    source = node(demo_tree, path).read()
    response = await client.get(f"/api/v1/array/full/{path}")
    assert response.headers["content-type"] == "application/octet-stream"
    decoded = numpy.frombuffer(response.content, dtype=source.dtype).reshape(source.shape)
    assert decoded.tobytes() == source.tobytes()


async def test_array_slices_and_blocks(client, demo_tree):
    source = node(demo_tree, "nested/images/medium_image").read()
    response = await client.get(
        "/api/v1/array/full/nested/images/medium_image",
        params={"slice": "10:20,::100", "expected_shape": "10,10"},
    )
    numpy.testing.assert_array_equal(
        numpy.frombuffer(response.content).reshape(10, 10), source[10:20, ::100]
    )
    block = await client.get(
        "/api/v1/array/block/nested/images/medium_image",
        params={"block": "1,2", "expected_shape": "250,100"},
    )
    numpy.testing.assert_array_equal(
        numpy.frombuffer(block.content).reshape(250, 100), source[250:500, 200:300]
    )
    big = await client.get(
        "/api/v1/array/block/nested/images/big_image", params={"block": "2,2", "slice": "0:2,0:3"}
    )
    expected = node(demo_tree, "nested/images/big_image").read(
        (slice(8192, 8194), slice(8192, 8195))
    )
    numpy.testing.assert_array_equal(numpy.frombuffer(big.content).reshape(2, 3), expected)


async def test_array_text_formats(client, demo_tree):
    source = node(demo_tree, "high_entropy").read()
    as_json = await client.get("/api/v1/array/full/high_entropy", params={"format": "json"})
    assert as_json.json() == source.tolist()
    as_csv = await client.get("/api/v1/array/full/high_entropy", headers={"Accept": "text/csv"})
    numpy.testing.assert_array_equal(
        numpy.loadtxt(io.StringIO(as_csv.text), delimiter=",", dtype=int), source
    )
    pi = await client.get("/api/v1/array/full/scalars/pi", params={"format": "application/json"})
    assert pi.json() == 3.14159
    pets = await client.get("/api/v1/array/full/structured_data/pets", params={"format": "json"})
    assert pets.json()[0][:2] == ["Rex", 9]
    time = await client.get(
        "/api/v1/array/full/structured_data/xarray_dataset/time", params={"format": "json"}
    )
    assert time.json()[0].startswith("2014-09-06T00:00:00")


async def test_array_image_and_hdf5_formats(client, demo_tree):
    import h5py
    import tifffile
    from PIL import Image

    source = node(demo_tree, "nested/images/tiny_image").read()
    png = await client.get("/api/v1/array/full/nested/images/tiny_image", params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (50, 50)
    tiff = await client.get(
        "/api/v1/array/full/nested/images/tiny_image", headers={"Accept": "image/tiff"}
    )
    numpy.testing.assert_array_equal(tifffile.imread(io.BytesIO(tiff.content)), source)
    h5 = await client.get("/api/v1/array/full/nested/images/tiny_image", params={"format": "h5"})
    with h5py.File(io.BytesIO(h5.content), "r") as file:
        numpy.testing.assert_array_equal(next(iter(file.values()))[()], source)


@pytest.mark.parametrize("zarr_format", [2, 3])
async def test_zarr_export_of_array_table_and_container(client, demo_tree, zarr_format, tmp_path):
    import zarr

    def opened(content: bytes, name: str):
        path = tmp_path / f"{name}-{zarr_format}.zip"
        path.write_bytes(content)
        return zarr.open(zarr.storage.ZipStore(path, mode="r"), mode="r")

    params = {"format": "zarr", "zarr_format": zarr_format}
    array = await client.get("/api/v1/array/full/nested/images/medium_image", params=params)
    assert array.headers["content-type"] == "application/x-zarr"
    numpy.testing.assert_array_equal(
        opened(array.content, "a")[...], node(demo_tree, "nested/images/medium_image").read()
    )
    table = await client.get("/api/v1/table/full/tables/short_table", params=params)
    group = opened(table.content, "t")
    numpy.testing.assert_array_equal(
        group["B"][...], node(demo_tree, "tables/short_table").read()["B"].to_numpy()
    )
    container = await client.get("/api/v1/container/full/structured_data", params=params)
    tree = opened(container.content, "c")
    numpy.testing.assert_array_equal(
        tree["xarray_dataset/temperature"][...],
        node(demo_tree, "structured_data/xarray_dataset/temperature").read(),
    )
    assert tree["pets"][...]["name"].tolist() == ["Rex", "Fido"]


async def test_table_formats(client, demo_tree):
    import pyarrow
    import pyarrow.parquet

    source = node(demo_tree, "tables/long_table").read_partition(2)
    arrow = await client.get("/api/v1/table/partition/tables/long_table", params={"partition": 2})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.file"
    frame = pyarrow.ipc.open_file(pyarrow.py_buffer(arrow.content)).read_pandas()
    pandas.testing.assert_frame_equal(frame, source)
    parquet = await client.get(
        "/api/v1/table/full/tables/short_table", params={"format": "parquet", "column": ["A", "C"]}
    )
    table = pyarrow.parquet.read_table(io.BytesIO(parquet.content)).to_pandas()
    assert list(table.columns[:2]) == ["A", "C"]
    csv = await client.get("/api/v1/table/full/tables/short_table", headers={"Accept": "text/csv"})
    pandas.testing.assert_frame_equal(
        pandas.read_csv(io.StringIO(csv.text)),
        node(demo_tree, "tables/short_table").read().reset_index(drop=True),
        check_dtype=False,
    )
    as_json = await client.get("/api/v1/table/full/tables/short_table", params={"format": "json"})
    assert as_json.json()["A"][:3] == [2, 5, 6]
    posted = await client.post(
        "/api/v1/table/partition/tables/short_table?partition=0&format=json", json=["B"]
    )
    assert list(posted.json()) == ["B"]


async def test_container_formats_and_node_full(client, demo_tree):
    import h5py

    h5 = await client.get("/api/v1/container/full/scalars")
    assert h5.headers["content-type"] == "application/x-hdf5"
    with h5py.File(io.BytesIO(h5.content), "r") as file:
        assert file["pi"][()] == 3.14159
    as_json = await client.get("/api/v1/container/full/nested/images", params={"format": "json"})
    assert set(as_json.json()["contents"]) == {
        "tiny_image",
        "small_image",
        "medium_image",
        "big_image",
    }
    legacy = await client.get("/api/v1/node/full/tables/short_table", params={"format": "json"})
    assert legacy.json()["B"][0] == 4


async def test_etag_and_not_modified(client):
    for url in ["/api/v1/metadata/scalars", "/api/v1/array/full/high_entropy"]:
        first = await client.get(url)
        etag = first.headers["etag"]
        again = await client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""


async def test_q_values_refuse_or_rank_media_types_and_encodings(client):
    refused = {"Accept": "application/x-msgpack;q=0, application/json"}
    response = await client.get("/api/v1/metadata/scalars", headers=refused)
    assert response.headers["content-type"] == "application/json"
    ranked = {"Accept": "application/json;q=0.1, application/x-msgpack;q=0.9"}
    response = await client.get("/api/v1/metadata/scalars", headers=ranked)
    assert response.headers["content-type"] == "application/x-msgpack"
    for accept_encoding, expected in [("gzip;q=0", None), ("zstd;q=0, gzip", "gzip")]:
        headers = {"Accept-Encoding": accept_encoding}
        response = await client.get("/api/v1/array/full/low_entropy", headers=headers)
        assert response.headers.get("content-encoding") == expected, accept_encoding


async def test_compression_by_accept_encoding(client, demo_tree):
    response = await client.get(
        "/api/v1/array/full/low_entropy", headers={"Accept-Encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert len(response.content) == 100 * 100 * 4  # httpx decodes transparently
    raw = await client.get("/api/v1/array/full/low_entropy", headers={"Accept-Encoding": "zstd"})
    assert raw.headers["content-encoding"] == "zstd"
    stream = await client.send(
        client.build_request(
            "GET", "/api/v1/array/full/low_entropy", headers={"Accept-Encoding": "gzip"}
        ),
        stream=True,
    )
    compressed = b"".join([chunk async for chunk in stream.aiter_raw()])
    assert len(compressed) < 40000 and numpy.all(
        numpy.frombuffer(gzip.decompress(compressed), "<i4") == 1
    )


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_incompressible_bodies_are_sent_as_they_are(client, encoding):
    """Random floats do not compress: the body is sent uncompressed (the server finds that
    out from samples of it), whatever encodings the client accepts."""
    url = "/api/v1/array/full/nested/images/medium_image"
    response = await client.get(
        url, headers={"Accept-Encoding": encoding, "Accept": "application/octet-stream"}
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert len(response.content) == 1000 * 1000 * 8


def test_large_compressible_bodies_are_compressed():
    """A body larger than the sampled size is compressed when its samples compress."""
    from starlette.requests import Request

    from tiled.server.responses import compress

    request = Request({"type": "http", "headers": [(b"accept-encoding", b"gzip")], "method": "GET"})
    body = numpy.arange(2_000_000, dtype="<i8").tobytes()  # 16 MB, very regular
    compressed, encoding = compress(request, body, "application/octet-stream", 1000)
    assert encoding == "gzip" and gzip.decompress(compressed) == body
    noise = numpy.random.default_rng(0).random(2_000_000).tobytes()
    assert compress(request, noise, "application/octet-stream", 1000) == (noise, None)


async def test_response_size_limit(demo_tree):
    small = build_app(
        demo_tree,
        authentication={"allow_anonymous_access": True},
        server_settings={"response_bytesize_limit": 1000},
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=small), base_url="http://t"
    ) as client:
        response = await client.get("/api/v1/array/full/nested/images/tiny_image")
        assert (
            response.status_code == 400
            and "Response would exceed 1000" in response.json()["detail"]
        )
        assert (
            await client.get(
                "/api/v1/array/full/nested/images/tiny_image", params={"slice": "0:2,0:2"}
            )
        ).status_code == 200


BAD_REQUESTS = [
    ("/api/v1/metadata/does/not/exist", 404),
    ("/api/v1/array/full/tables/short_table", 404),
    ("/api/v1/table/full/high_entropy", 404),
    ("/api/v1/array/full/high_entropy?slice=1:2:0", 422),
    ("/api/v1/array/full/high_entropy?slice=abc", 422),
    ("/api/v1/array/full/high_entropy?slice=0,0,0", 422),
    ("/api/v1/array/full/high_entropy?slice=500", 422),
    ("/api/v1/array/block/high_entropy?block=0", 422),
    ("/api/v1/array/block/high_entropy?block=5,0", 422),
    ("/api/v1/array/block/high_entropy?block=x,y", 422),
    ("/api/v1/array/block/high_entropy", 422),
    ("/api/v1/array/full/high_entropy?expected_shape=3,3", 422),
    ("/api/v1/array/full/high_entropy?format=application/x-nonsense", 406),
    ("/api/v1/array/full/nested/cubes/tiny_cube?format=png", 406),
    ("/api/v1/array/full/nested/cubes/tiny_cube?format=csv", 406),
    ("/api/v1/array/full/high_entropy?format=zarr&zarr_format=4", 400),
    ("/api/v1/table/partition/tables/short_table?partition=7", 400),
    ("/api/v1/table/partition/tables/short_table?partition=x", 422),
    ("/api/v1/table/full/tables/short_table?column=nope", 400),
    ("/api/v1/table/full/tables/short_table?column=A&column=A", 400),
    ("/api/v1/search/?page[limit]=301", 422),
    ("/api/v1/search/?page[offset]=-1", 422),
    ("/api/v1/search/?fields=bogus", 400),
    ("/api/v1/search/?sort=a,a", 400),
    ("/api/v1/search/?filter[eq][condition][key]=color&filter[eq][condition][value]=notjson", 400),
    (
        "/api/v1/search/?filter[comparison][condition][operator]=zz&filter[comparison][condition][key]=a&filter[comparison][condition][value]=1",
        400,
    ),
    ("/api/v1/search/?select_metadata=[[", 400),
    # Expressions that compile but fail on the metadata, or nest past Python's recursion.
    ("/api/v1/metadata/?select_metadata=length(color)", 400),
    ("/api/v1/search/?select_metadata=nofunc(@)", 400),
    ("/api/v1/metadata/scalars?select_metadata=merge(@,`1`)", 400),
    ("/api/v1/metadata/?select_metadata=" + "(" * 3000 + "a" + ")" * 3000, 400),
    ("/api/v1/metadata/?max_depth=%C2%B2", 400),  # "²" is a digit to str.isdigit, not int()
    ("/api/v1/array/full/high_entropy?slice=" + "9" * 5000, 422),
    (
        "/api/v1/search/?filter[eq][condition][key]=a&filter[eq][condition][value]=" + "9" * 5000,
        400,
    ),
    (
        "/api/v1/search/?filter[eq][condition][key]=a&filter[eq][condition][value]=" + "[" * 3000,
        400,
    ),
    ("/api/v1/search/high_entropy", 404),
    ("/api/v1/container/full/scalars?field=nope", 400),
]


@pytest.mark.parametrize(("url", "status"), BAD_REQUESTS)
async def test_bad_input_gets_a_clear_4xx(client, url, status):
    response = await client.get(url)
    assert response.status_code == status, response.text
    assert "detail" in response.json()


async def test_live_server_and_openapi(demo_server):
    async with httpx.AsyncClient(base_url=demo_server.url) as client:
        assert (await client.get("/docs")).status_code == 200
        assert "/api/v1/metadata/{path}" in (await client.get("/openapi.json")).json()["paths"]
        response = await client.get("/api/v1/array/full/flat_array", params={"slice": "0:3"})
        numpy.testing.assert_allclose(
            numpy.frombuffer(response.content), [0.686338, 0.687618, 0.466602], atol=1e-6
        )
        assert json.loads((await client.get("/healthz")).content) == {"status": "ready"}


async def test_sliced_zarr_export_and_filename(client, demo_tree, tmp_path):
    import zarr

    response = await client.get(
        "/api/v1/array/full/nested/images/medium_image",
        params={"format": "zarr", "slice": "0:10,5:8", "filename": "part.zarr.zip"},
    )
    assert response.headers["content-disposition"] == 'attachment; filename="part.zarr.zip"'
    path = tmp_path / "part.zip"
    path.write_bytes(response.content)
    array = zarr.open(zarr.storage.ZipStore(path, mode="r"), mode="r")
    expected = node(demo_tree, "nested/images/medium_image").read()[0:10, 5:8]
    numpy.testing.assert_array_equal(array[...], expected)
    block = await client.get(
        "/api/v1/array/block/nested/images/medium_image", params={"format": "zarr", "block": "1,1"}
    )
    path.write_bytes(block.content)
    assert zarr.open(zarr.storage.ZipStore(path, mode="r"), mode="r").shape == (250, 100)


async def test_response_size_limit_applies_to_tables(demo_tree):
    small = build_app(
        demo_tree,
        authentication={"allow_anonymous_access": True},
        server_settings={"response_bytesize_limit": 10_000},
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=small), base_url="http://t"
    ) as client:
        response = await client.get("/api/v1/table/full/tables/long_table")
        assert (
            response.status_code == 400
            and "Response would exceed 10000" in response.json()["detail"]
        )
        assert (await client.get("/api/v1/table/full/tables/short_table")).status_code == 200


async def test_writes_to_an_in_memory_tree_are_405_not_500(demo_tree):
    keyed = build_app(demo_tree, authentication={"single_user_api_key": "secret"})
    headers = {"Authorization": "Apikey secret"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=keyed), base_url="http://t", headers=headers
    ) as client:
        created = await client.post(
            "/api/v1/metadata/", json={"structure_family": "container", "data_sources": []}
        )
        assert created.status_code == 405 and "creating nodes" in created.json()["detail"]
        written = await client.put("/api/v1/array/full/high_entropy", content=b"\0" * 80000)
        assert written.status_code == 405
        assert (await client.delete("/api/v1/metadata/high_entropy")).status_code == 405
        assert (await client.get("/api/v1/revisions/high_entropy")).status_code == 405
        bad = await client.post("/api/v1/metadata/", json={"structure_family": "nonsense"})
        assert bad.status_code == 422
        anonymous = await client.post("/api/v1/metadata/", json={}, headers={"Authorization": ""})
        assert anonymous.status_code in (400, 401)


async def test_whole_subtree_exports_respect_the_size_limit(client):
    for fmt in ("h5", "zarr"):
        response = await client.get("/api/v1/container/full/", params={"format": fmt})
        assert response.status_code == 400 and "Response would exceed" in response.json()["detail"]
    assert (
        await client.get("/api/v1/container/full/scalars", params={"format": "h5"})
    ).status_code == 200


def test_links_of_keys_that_need_percent_encoding_lead_to_their_nodes():
    # "?" and "#" would end a link's path; "%" would be read as an escape.
    from tiled.adapters.array import ArrayAdapter
    from tiled.adapters.mapping import MapAdapter

    keys = ["q?x", "h#1", "50%", "sp ace", "é", "a:b@c"]
    tree = MapAdapter(
        {"c": MapAdapter({key: ArrayAdapter.from_array(numpy.arange(3)) for key in keys})}
    )
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    import asyncio

    async def follow() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            page = (await client.get("/api/v1/search/c")).json()
            assert [item["id"] for item in page["data"]] == keys
            for item in page["data"]:
                for name in ("self", "full"):
                    followed = await client.get(item["links"][name])
                    assert followed.status_code == 200, (item["id"], name, followed.text)
            assert "q%3Fx" in page["data"][0]["links"]["self"]

    asyncio.run(follow())


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("a.json", 'attachment; filename="a.json"'),
        ("€.json", "attachment; filename=\"_.json\"; filename*=UTF-8''%E2%82%AC.json"),
        ("a\r\nX: 1", 'attachment; filename="aX: 1"'),
        ('a"b; x=y', "attachment; filename=\"a_b; x=y\"; filename*=UTF-8''a%22b%3B%20x%3Dy"),
    ],
)
async def test_filenames_are_sent_safely(client, filename, disposition):
    # Before: a name outside Latin-1 was a 500, a line break dropped the connection, and a
    # quote added parameters.
    response = await client.get(
        "/api/v1/array/full/low_entropy", params={"format": "json", "filename": filename}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == disposition


@pytest.mark.parametrize("step", ["9223372036854775808", "-99999999999999999999"])
async def test_sparse_slices_with_steps_past_64_bits_select_one_row(client, demo_tree, step):
    # A step that long selects one position; it overflowed numpy's int64 (500).
    response = await client.get(
        "/api/v1/array/full/nested/sparse_image",
        params={"slice": f"::{step}", "format": "application/json"},
    )
    assert response.status_code == 200, response.text
    row = node(demo_tree, "nested/sparse_image").read().todense()[:: int(step)][0]
    answered = response.json()
    assert set(answered["dim0"]) == {0}
    assert answered["data"] == row[answered["dim1"]].tolist()


async def test_a_table_arrow_cannot_type_is_406_in_arrow_formats_and_served_in_others():
    # A spreadsheet column may mix numbers and text: pyarrow refuses it (was a 500, and the
    # connection dropped).
    from tiled.adapters.mapping import MapAdapter
    from tiled.adapters.table import DataFrameAdapter

    frame = pandas.DataFrame({"x": [1, "s", None], "y": [1.0, 2.0, 3.0]})
    app = build_app(
        MapAdapter({"t": DataFrameAdapter.from_pandas(frame)}),
        authentication={"allow_anonymous_access": True},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for media_type in ("application/vnd.apache.arrow.file", "application/x-parquet"):
            for route in ("/api/v1/table/full/t", "/api/v1/table/partition/t?partition=0"):
                refused = await client.get(route, headers={"Accept": media_type})
                assert refused.status_code == 406, (route, media_type, refused.text)
                assert "JSON or CSV" in refused.json()["detail"]
        served = await client.get("/api/v1/table/full/t", params={"format": "json"})
        assert served.status_code == 200 and served.json()["x"] == [1, "s", None]

"""The /zarr/v2 and /zarr/v3 routes through a live uvicorn server, read by real zarr clients."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import dask.array
import fsspec
import httpx
import numpy
import pandas
import pytest
import sparse
import xarray
import zarr

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.sparse import COOAdapter
from tiled.adapters.table import DataFrameAdapter
from tiled.adapters.xarray import DatasetAdapter
from tiled.errors import DataNotReadyError, DataUnavailable, StorageUnavailable
from tiled.server.app import build_app

from .live_server import serve
from .test_zarr_hooks import _array_cases

rng = numpy.random.default_rng(3)
SPARSE = rng.random((40, 30))
SPARSE[SPARSE < 0.85] = 0
TABLE = pandas.DataFrame(
    {
        "x": rng.random(50),
        "n": numpy.arange(50, dtype="int64"),
        "label": [f"item {i} é" for i in range(50)],
        "when": pandas.date_range("2021-01-01", periods=50, freq="D", unit="ns"),
    }
)
DATASET = xarray.Dataset(
    {
        "temperature": (
            ["x", "y", "time"],
            15 + 8 * rng.normal(size=(2, 2, 3)),
            {"units": "degC", "long_name": "T"},
        ),
        "precipitation": (
            ["x", "y", "time"],
            numpy.where(rng.random((2, 2, 3)) > 0.5, numpy.nan, 1.5),
            {"units": "mm"},
        ),
    },
    coords={
        "lon": (["x", "y"], [[-99.83, -99.32], [-99.79, -99.23]], {"units": "degrees_east"}),
        "lat": (["x", "y"], [[42.25, 42.21], [42.63, 42.59]], {"units": "degrees_north"}),
        "time": pandas.date_range("2014-09-06", periods=3, unit="ns"),
        "day": (
            "time",
            numpy.array([0.5, 1.5, 2.5]),
            {"units": "days since 2014-09-06", "calendar": "proleptic_gregorian"},
        ),
    },
    attrs={"title": "weather", "history": "made for a test"},
)
ARRAYS = _array_cases()
CHUNKED = rng.random((45, 33))


def _tree() -> MapAdapter:
    arrays = {name: ArrayAdapter.from_array(data) for name, data in ARRAYS.items()}
    return MapAdapter(
        {
            "arrays": MapAdapter(arrays, metadata={"kind": "arrays", "nan": float("nan")}),
            "chunked": ArrayAdapter.from_array(CHUNKED, chunks=(10, 11)),
            "sparse": COOAdapter.from_coo(sparse.COO(SPARSE)),
            "table": DataFrameAdapter.from_pandas(TABLE, npartitions=3, metadata={"color": "red"}),
            "dataset": DatasetAdapter.from_dataset(DATASET),
            "grp": MapAdapter(
                {
                    "0": MapAdapter({"leaf": ArrayAdapter.from_array(numpy.arange(4))}),
                    "1.2": ArrayAdapter.from_array(numpy.arange(6)),
                    "c": ArrayAdapter.from_array(numpy.arange(3)),
                    "with space": ArrayAdapter.from_array(numpy.ones(2)),
                }
            ),
        },
        metadata={"root": True},
    )


class CountingApp:
    """Counts requests reaching the app, to measure how chatty a client is."""

    def __init__(self, app):
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def counted():
    app = CountingApp(build_app(_tree(), authentication={"allow_anonymous_access": True}))
    with serve(app) as server:
        yield server, app


@pytest.fixture(scope="module")
def server(counted):
    return counted[0]


def url_of(server, zarr_format: int, path: str = "") -> str:
    return f"{server.url}/zarr/v{zarr_format}/{path}"


def open_root(server, zarr_format: int, how: str):
    url = url_of(server, zarr_format)
    if how == "mapper":
        return zarr.open_group(fsspec.get_mapper(url), mode="r", zarr_format=zarr_format)
    if how == "fsspec-store":
        store = zarr.storage.FsspecStore.from_url(url, read_only=True)
        return zarr.open_group(store, mode="r", zarr_format=zarr_format)
    from obstore.store import HTTPStore

    store = zarr.storage.ObjectStore(
        HTTPStore.from_url(url, client_options={"allow_http": True}), read_only=True
    )
    return zarr.open_group(store, mode="r", zarr_format=zarr_format)


def assert_values(actual, expected) -> None:
    from .zarr_conformance import assert_same_values

    assert_same_values(numpy.asarray(actual), numpy.asarray(expected))


@pytest.mark.parametrize("how", ["mapper", "fsspec-store", "obstore"])
def test_every_array_dtype_reads_back(server, zarr_format, how):
    root = open_root(server, zarr_format, how)
    for name, data in ARRAYS.items():
        array = root[f"arrays/{name}"]
        assert array.shape == data.shape, name
        assert_values(array[...], data)


def test_listing_and_walking(server, zarr_format):
    root = zarr.open(fsspec.get_mapper(url_of(server, zarr_format)), mode="r")
    assert list(root.keys()) == ["arrays", "chunked", "sparse", "table", "dataset", "grp"]
    assert list(root["table"].keys()) == ["x", "n", "label", "when"]
    members = dict(root.members(max_depth=None))
    assert "grp/0/leaf" in members and "dataset/temperature" in members
    assert "chunked" in str(root.tree())


def test_edge_chunks_sparse_and_table(server, zarr_format):
    root = zarr.open(fsspec.get_mapper(url_of(server, zarr_format)), mode="r")
    chunked = root["chunked"]
    assert chunked.chunks == (10, 11)
    assert_values(chunked[...], CHUNKED)
    assert_values(chunked[40:, 30:], CHUNKED[40:, 30:])
    assert root["sparse"].fill_value == 0
    assert_values(root["sparse"][...], SPARSE)
    for column in TABLE.columns:
        assert_values(root[f"table/{column}"][...], TABLE[column].to_numpy())
    assert root["table/label"].dtype.kind in "OT"  # variable-length strings


def test_attributes_are_the_same_in_both_formats(server):
    attrs = {}
    for zarr_format in (2, 3):
        root = zarr.open(fsspec.get_mapper(url_of(server, zarr_format)), mode="r")
        attrs[zarr_format] = (
            dict(root.attrs),
            dict(root["table"].attrs),
            dict(root["arrays"].attrs),
        )
    assert attrs[2] == attrs[3]
    assert attrs[2][0] == {"root": True} and attrs[2][2]["nan"] is None  # NaN, as JSON has it


@pytest.mark.parametrize("consolidated", [False, True])
def test_xarray_open_zarr_gives_the_source_dataset(server, zarr_format, consolidated):
    opened = xarray.open_zarr(
        url_of(server, zarr_format, "dataset"), consolidated=consolidated, zarr_format=zarr_format
    )
    opened = opened.load()
    expected = xarray.decode_cf(DATASET)
    xarray.testing.assert_identical(opened.drop_encoding(), expected)
    assert set(opened.coords) == {"lon", "lat", "time", "day"}
    assert opened["temperature"].attrs["units"] == "degC"
    assert (
        numpy.isnan(opened["precipitation"].values).sum()
        == numpy.isnan(DATASET["precipitation"].values).sum()
    )


def test_dask_from_zarr_big_image(demo_server, demo_tree, zarr_format):
    url = f"{demo_server.url}/zarr/v{zarr_format}/nested/images/big_image"
    big = dask.array.from_zarr(url)
    assert big.shape == (10000, 10000)
    source = demo_tree["nested"]["images"]["big_image"]
    region = (slice(4000, 4200), slice(9900, 10000))
    numpy.testing.assert_array_equal(big[region].compute(), source.read(region))
    assert float(big[:3, :3].sum().compute()) == pytest.approx(
        float(source.read((slice(0, 3), slice(0, 3))).sum())
    )


def test_consolidated_metadata_opens_the_tree_in_one_request(counted, zarr_format):
    server, app = counted
    app.paths.clear()
    root = zarr.open_consolidated(
        fsspec.get_mapper(url_of(server, zarr_format)), mode="r", zarr_format=zarr_format
    )
    members = dict(root.members(max_depth=None))
    assert len(members) > 35 and members["arrays/5d"].shape == (3, 4, 2, 5, 3)
    metadata_requests = [p for p in app.paths if not re.search(r"/(c/)?\d+(\.\d+)*$", p)]
    # v3: the root zarr.json alone. v2: zarr-python asks for the root's .zgroup and .zattrs
    # alongside .zmetadata; nothing is requested per node in either format.
    expected = {
        3: ["/zarr/v3/zarr.json"],
        2: ["/zarr/v2/.zgroup", "/zarr/v2/.zattrs", "/zarr/v2/.zmetadata"],
    }
    assert sorted(metadata_requests) == sorted(expected[zarr_format])


def test_consolidated_metadata_is_bounded(zarr_format):
    settings = {"zarr_consolidated_max_nodes": 5}
    app = build_app(
        _tree(), authentication={"allow_anonymous_access": True}, server_settings=settings
    )
    with serve(app) as bounded:
        client = httpx.Client(base_url=url_of(bounded, zarr_format))
        if zarr_format == 2:
            assert client.get(".zmetadata").status_code == 404
            assert client.get("grp/0/.zmetadata").status_code == 200
        else:
            assert "consolidated_metadata" not in client.get("zarr.json").json()
            assert "consolidated_metadata" in client.get("grp/0/zarr.json").json()
        root = zarr.open_group(
            fsspec.get_mapper(url_of(bounded, zarr_format)), mode="r", zarr_format=zarr_format
        )
        assert len(list(root.keys())) == 6  # listing still works


def test_members_named_like_chunk_keys_are_members(server, zarr_format):
    root = zarr.open(fsspec.get_mapper(url_of(server, zarr_format)), mode="r")
    grp = root["grp"]
    assert sorted(grp.keys()) == ["0", "1.2", "c", "with space"]
    assert list(grp["0"].keys()) == ["leaf"]
    assert_values(grp["0/leaf"][...], numpy.arange(4))
    assert_values(grp["1.2"][...], numpy.arange(6))
    assert_values(grp["c"][...], numpy.arange(3))
    assert_values(grp["with space"][...], numpy.ones(2))


def _bad_keys(zarr_format: int) -> list[str]:
    if zarr_format == 2:
        return [
            "nope", "arrays/nope/.zarray", "chunked/9.0", "chunked/0.9", "chunked/0", "chunked/0.0.0",
            "chunked/-1.0", "chunked/0.x", "chunked/.zgroup", "arrays/.zarray", "zarr.json", "chunked/zarr.json",
            "arrays/scalar-float/1", "chunked/0.0/extra",
        ]  # fmt: skip
    return [
        "nope", "arrays/nope/zarr.json", "chunked/c/9/0", "chunked/c/0/9", "chunked/c/0", "chunked/c/0/0/0",
        "chunked/c/-1/0", "chunked/c/x/0", "chunked/c", ".zgroup", "chunked/.zarray", "arrays/scalar-float/c/0",
        "chunked/c/0/0/extra",
    ]  # fmt: skip


def test_missing_and_malformed_keys_are_404(server, zarr_format):
    with httpx.Client(base_url=url_of(server, zarr_format)) as client:
        for key in _bad_keys(zarr_format):
            response = client.get(key)
            assert response.status_code == 404, (key, response.status_code, response.text)
            assert "detail" in response.json()


def test_an_arrays_own_path_answers_its_metadata_document(server, zarr_format):
    document = ".zarray" if zarr_format == 2 else "zarr.json"
    with httpx.Client(base_url=url_of(server, zarr_format)) as client:
        for path in ["chunked", "table/x", "sparse", "grp/1.2"]:
            expected = client.get(f"{path}/{document}")
            for own in (path, f"{path}/"):
                answer = client.get(own)
                assert answer.status_code == 200, own
                assert answer.headers["content-type"] == "application/json"
                assert answer.content == expected.content
                assert answer.headers["etag"] == expected.headers["etag"]
        assert client.get("chunked/nope").status_code == 404


def test_head_range_etag_and_not_modified(server, zarr_format):
    chunk = "chunked/0.0" if zarr_format == 2 else "chunked/c/0/0"
    document = ".zarray" if zarr_format == 2 else "zarr.json"
    with httpx.Client(base_url=url_of(server, zarr_format)) as client:
        full = client.get(chunk)
        assert (
            full.status_code == 200 and full.headers["content-type"] == "application/octet-stream"
        )
        head = client.head(chunk)
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(full.content)
        assert head.content == b""
        part = client.get(chunk, headers={"Range": "bytes=2-9"})
        assert part.status_code == 206 and part.content == full.content[2:10]
        assert part.headers["content-range"] == f"bytes 2-9/{len(full.content)}"
        suffix = client.get(chunk, headers={"Range": "bytes=-5"})
        assert suffix.status_code == 206 and suffix.content == full.content[-5:]
        assert (
            client.get(chunk, headers={"Range": f"bytes={len(full.content) + 5}-"}).status_code
            == 416
        )
        etag = full.headers["etag"]
        assert client.get(chunk, headers={"If-None-Match": etag}).status_code == 304
        doc = client.get(f"chunked/{document}")
        assert doc.headers["content-type"] == "application/json"
        assert (
            client.get(
                f"chunked/{document}", headers={"If-None-Match": doc.headers["etag"]}
            ).status_code
            == 304
        )
        assert client.head(f"chunked/{document}").headers["content-length"] == str(len(doc.content))


def test_group_listing_is_paged_and_bounded(server, zarr_format):
    with httpx.Client(base_url=url_of(server, zarr_format)) as client:
        everything = client.get("").json()
        assert everything[0] == url_of(server, zarr_format, "arrays")
        assert len(everything) == 6
        page = client.get("", params={"offset": 2, "limit": 2}).json()
        assert page == everything[2:4]
        assert client.get("grp").json()[-1].endswith("/grp/with%20space")
    small = build_app(
        _tree(),
        authentication={"allow_anonymous_access": True},
        server_settings={"zarr_listing_max": 3},
    )
    with serve(small) as bounded, httpx.Client(base_url=url_of(bounded, zarr_format)) as client:
        assert len(client.get("").json()) == 3


def test_codec_cache_control_and_cors_settings(zarr_format):
    settings = {
        "zarr": {"codec": "zstd", "chunk_budget_bytes": 800},
        "zarr_cache_control": "public, max-age=60",
        "allow_origins": ["https://viewer.example"],
    }
    app = build_app(
        _tree(), authentication={"allow_anonymous_access": True}, server_settings=settings
    )
    with serve(app) as configured:
        root = zarr.open(fsspec.get_mapper(url_of(configured, zarr_format)), mode="r")
        chunked = root["chunked"]
        assert numpy.prod(chunked.chunks) * 8 <= 800
        assert_values(chunked[...], CHUNKED)
        compressor = chunked.compressors[0]
        assert "zstd" in type(compressor).__name__.lower()
        with httpx.Client(base_url=url_of(configured, zarr_format)) as client:
            document = ".zarray" if zarr_format == 2 else "zarr.json"
            response = client.get(
                f"chunked/{document}", headers={"Origin": "https://viewer.example"}
            )
            assert response.headers["cache-control"] == "public, max-age=60"
            assert response.headers["access-control-allow-origin"] == "https://viewer.example"
            preflight = client.options(
                f"chunked/{document}",
                headers={
                    "Origin": "https://viewer.example",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert preflight.status_code == 200


def test_demo_tree_as_the_proposal_shows_it(demo_server, zarr_format):
    root = zarr.open(fsspec.get_mapper(f"{demo_server.url}/zarr/v{zarr_format}/"), mode="r")
    assert list(root.keys()) == [
        "scalars", "nested", "tables", "structured_data", "flat_array", "low_entropy", "high_entropy", "dynamic",
    ]  # fmt: skip
    tree = str(root.tree())
    for line in [
        "big_image (10000, 10000) float64",
        "tiny_hypercube (50, 50, 50, 50, 50) float64",
        "e_arr (1,) <U7",
        "fortytwo () int64",
        "A (100000,) float64",
        "time (3,) datetime64[ns]",
        "Z (10,) float64",
    ]:
        assert line in tree, line
    assert root["scalars/fsc"][()] == "1/137"


def test_zarr_router_names_no_structure_family():
    package = Path(__file__).parents[1]
    sources = [package / "server" / "zarr", package / "zarr_format"]  # router and encodings
    # "array" and "group" are zarr's node types; Tiled's families must not appear.
    pattern = re.compile(
        r"StructureFamily|structure_family|\bfamily\b|\b(container|sparse|table|awkward)\b"
    )
    offenders = {
        f"{source.name}/{path.name}": pattern.findall(path.read_text())
        for source in sources
        for path in source.glob("*.py")
        if pattern.search(path.read_text())
    }
    assert offenders == {}


def test_every_chunk_request_reads_only_its_region(zarr_format):
    reads = []

    class Spy(ArrayAdapter):
        def read(self, slice=()):
            reads.append(tuple((s.start, s.stop) for s in slice))
            return super().read(slice)

    data = numpy.arange(45 * 33, dtype="f8").reshape(45, 33)
    spy = Spy(data, ArrayAdapter.from_array(data, chunks=(10, 11)).structure())
    app = build_app(MapAdapter({"spy": spy}), authentication={"allow_anonymous_access": True})
    with serve(app) as live:
        array = zarr.open(fsspec.get_mapper(url_of(live, zarr_format, "spy")), mode="r")
        assert_values(array[...], data)
    expected = {
        ((i * 10, min(i * 10 + 10, 45)), (j * 11, min(j * 11 + 11, 33)))
        for i, j in itertools.product(range(5), range(3))
    }
    assert set(reads) == expected and len(reads) == len(expected)


def test_proposal_snippet_with_an_api_key(zarr_format):
    from fsspec.implementations.http import HTTPFileSystem

    app = build_app(_tree(), authentication={"single_user_api_key": "secret"})
    with serve(app) as secured:
        url = url_of(secured, zarr_format)
        headers = {"Authorization": "Apikey secret", "Content-Type": "application/json"}
        fs = HTTPFileSystem(client_kwargs={"headers": headers})
        root = zarr.open(fs.get_mapper(url), mode="r")
        assert list(root.keys())[:2] == ["arrays", "chunked"]
        assert_values(root["chunked"][...], CHUNKED)
        for path in [
            "",
            ".zgroup" if zarr_format == 2 else "zarr.json",
            "chunked/0.0" if zarr_format == 2 else "chunked/c/0/0",
        ]:
            assert httpx.get(url + path).status_code == 401
            assert (
                httpx.get(url + path, headers={"Authorization": "Apikey wrong"}).status_code == 401
            )
        with pytest.raises(Exception):  # noqa: B017 - zarr/fsspec wrap the 401 differently per format
            zarr.open_group(fsspec.get_mapper(url), mode="r", zarr_format=zarr_format)["chunked"][
                ...
            ]


def test_conditional_and_range_edge_cases(server, zarr_format):
    chunk = "chunked/0.0" if zarr_format == 2 else "chunked/c/0/0"
    with httpx.Client(base_url=url_of(server, zarr_format)) as client:
        full = client.get(chunk)
        etag = full.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        for header in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
            assert client.get(chunk, headers={"If-None-Match": header}).status_code == 304, header
        assert client.get(chunk, headers={"If-None-Match": '"other"'}).status_code == 200
        multi = client.get(chunk, headers={"Range": "bytes=0-1,5-6"})
        assert multi.status_code == 200 and multi.content == full.content  # multipart: ignored
        # If-Match (RFC 9110 13.1.1): strong comparison, 412 for other versions.
        for header in [etag, f'"other", {etag}', "*"]:
            assert client.get(chunk, headers={"If-Match": header}).status_code == 200, header
        for header in ['"other"', f"W/{etag}"]:
            refused = client.get(chunk, headers={"If-Match": header})
            assert refused.status_code == 412 and refused.content == b"", header
        # If-Range: the part only of the version the client holds, else the whole body.
        ranged = {"Range": "bytes=2-9"}
        part = client.get(chunk, headers={**ranged, "If-Range": etag})
        assert part.status_code == 206 and part.content == full.content[2:10]
        for stale in ['"an older version"', f"W/{etag}", "Sun, 06 Dec 2026 10:00:00 GMT", "*"]:
            whole = client.get(chunk, headers={**ranged, "If-Range": stale})
            assert whole.status_code == 200 and whole.content == full.content, stale
        for params in [{"offset": "x"}, {"limit": "-1"}]:
            response = client.get("", params=params)
            assert response.status_code == 400 and "non-negative" in response.json()["detail"]


class _NotReadyArray(ArrayAdapter):
    """An array whose structure is ahead of its data, as while an experiment writes it."""

    async def to_zarr_meta(self, options=None):
        raise DataNotReadyError("frames 5-9 are announced but not written yet")


class _FaultyArray(ArrayAdapter):
    """An adapter with a bug: its zarr metadata raise what no data error explains."""

    async def to_zarr_meta(self, options=None):
        raise RuntimeError("a bug in a custom adapter")


class _UnlistableGroup(MapAdapter):
    """A group that describes itself but cannot list its members."""

    async def zarr_member_keys(self, offset=0, limit=None):
        raise DataUnavailable("the index of this group is corrupt")


class _FailingStorage(ArrayAdapter):
    async def to_zarr_meta(self, options=None):
        raise StorageUnavailable("the object store does not answer")


def _with_bad_members(bad: dict) -> MapAdapter:
    good = ArrayAdapter.from_array(numpy.arange(6))
    return MapAdapter({"good": good, **bad, "grp": MapAdapter({"also_good": good})})


def test_one_bad_member_does_not_make_its_ancestors_unreadable(zarr_format):
    data = numpy.arange(3)
    tree = _with_bad_members(
        {
            "not_ready": _NotReadyArray.from_array(data),
            "faulty": _FaultyArray.from_array(data),
            "unlistable": _UnlistableGroup({"x": ArrayAdapter.from_array(data)}),
        }
    )
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    with serve(app) as live:
        client = httpx.Client(base_url=url_of(live, zarr_format))
        # A group below cannot be listed: the root is served without consolidation.
        if zarr_format == 3:
            response = client.get("zarr.json")
            assert response.status_code == 200, response.text
            assert "consolidated_metadata" not in response.json()
        else:
            assert client.get(".zmetadata").status_code == 404
            assert client.get(".zgroup").status_code == 200
        store = fsspec.get_mapper(url_of(live, zarr_format))
        root = zarr.open_group(store, mode="r", zarr_format=zarr_format)
        assert root["good"][...].tolist() == list(range(6))
        assert root["grp/also_good"][...].tolist() == list(range(6))
        assert client.get(f"not_ready/{'.zarray' if zarr_format == 2 else 'zarr.json'}").is_error


def test_bad_members_are_left_out_of_consolidated_metadata(zarr_format):
    data = numpy.arange(3)
    bad = {"not_ready": _NotReadyArray.from_array(data), "faulty": _FaultyArray.from_array(data)}
    app = build_app(_with_bad_members(bad), authentication={"allow_anonymous_access": True})
    with serve(app) as live:
        client = httpx.Client(base_url=url_of(live, zarr_format))
        if zarr_format == 2:
            documents = client.get(".zmetadata").json()["metadata"]
            assert {"good/.zarray", "grp/also_good/.zarray"} <= set(documents)
            assert not any(name.startswith(("not_ready", "faulty")) for name in documents)
        else:
            members = client.get("zarr.json").json()["consolidated_metadata"]["metadata"]
            assert sorted(members) == ["good", "grp", "grp/also_good"]
        store = fsspec.get_mapper(url_of(live, zarr_format))
        root = zarr.open_consolidated(store, mode="r", zarr_format=zarr_format)
        assert root["grp/also_good"][...].tolist() == list(range(6))


def test_a_failing_storage_below_fails_the_consolidated_metadata(zarr_format):
    tree = _with_bad_members({"in_bucket": _FailingStorage.from_array(numpy.arange(3))})
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    with serve(app) as live:
        consolidated = ".zmetadata" if zarr_format == 2 else "zarr.json"
        response = httpx.get(url_of(live, zarr_format, consolidated))
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers

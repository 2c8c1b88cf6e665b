"""The catalog's written data in a bucket: a real S3-compatible server (moto's standalone
server, on loopback), a real Tiled server, real clients (tiled.client, zarr-python, httpx).

Every check that matters compares with what the bucket holds, read with obstore: chunk bytes
served through /zarr are the stored objects' bytes, their ETags the objects', and a deleted
node leaves no object behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array
import dask.dataframe
import httpx
import numpy
import pandas
import pytest
import zarr

from tiled.catalog import from_uri
from tiled.client import from_uri as client_from_uri
from tiled.client.utils import ClientError
from tiled.server.app import build_app

from .live_server import serve
from .postgres import temporary_database
from .processes import free_port
from .store_front import Refusal, store_front

pytest.importorskip(
    "moto.server",
    reason="bucket storage is tested against moto's S3 server: pip install 'moto[server]'",
)

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
BUCKET = "tiled-test"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


class MotoServer:
    """moto's standalone S3 server in a subprocess on a loopback port (stop and start again
    on the same port: its contents are in memory, so a restart begins empty)."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        command = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        program = [command] if command else [sys.executable, "-m", "moto.server"]
        self.process = subprocess.Popen(
            [*program, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def create_bucket(self, name: str = BUCKET) -> None:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )  # fmt: skip
        client.create_bucket(Bucket=name)

    def storage(self, name: str = BUCKET, endpoint: str | None = None) -> dict:
        """The bucket as ``writable_storage`` names it (upstream's form), reached at
        ``endpoint`` if given (a front of this server)."""
        config = {
            **CREDENTIALS, "virtual_hosted_style_request": False,
            "client_options": {"allow_http": True, "timeout": "5s", "connect_timeout": "1s"},
        }  # fmt: skip
        return {"provider": "s3", "uri": f"{endpoint or self.endpoint}/{name}", "config": config}

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` of the bucket, read with obstore."""
        import obstore

        store = self.obstore()
        listed = [meta["path"] for batch in obstore.list(store, prefix=prefix) for meta in batch]
        return {path: bytes(obstore.get(store, path).bytes()) for path in listed}

    def obstore(self):
        from obstore.store import S3Store

        return S3Store(
            endpoint=self.endpoint, bucket=BUCKET, virtual_hosted_style_request=False,
            client_options={"allow_http": True}, **CREDENTIALS,
        )  # fmt: skip


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port()).start()
    try:
        server.create_bucket()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def serving(catalog, **settings) -> Iterator:
    app = build_app(
        catalog, authentication={"single_user_api_key": KEY}, server_settings=settings or None
    )
    with serve(app) as live:
        yield live


@pytest.fixture(scope="module")
def server(moto, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bucket")
    catalog = from_uri(
        f"sqlite:///{directory / 'catalog.db'}", init_if_not_exists=True,
        writable_storage=[moto.storage(), directory / "data"],
    )  # fmt: skip
    with serving(catalog) as live:
        live.directory = directory
        yield live


@pytest.fixture
def client(server):
    return client_from_uri(server.url, api_key=KEY)


@pytest.fixture
def name(request) -> str:
    return "n" + str(abs(hash(request.node.nodeid)))[:12]


def prefix_of(node) -> str:
    """The bucket prefix of a node's data (from its asset, ``{endpoint}/{bucket}/{prefix}``)."""
    asset = node.data_sources()[0].assets[0]
    path = asset.data_uri.split(f"/{BUCKET}/", 1)[1]
    return path.split("/")[0]


def fsspec_store(url: str, read_only: bool = False) -> zarr.storage.FsspecStore:
    return zarr.storage.FsspecStore.from_url(
        url, storage_options={"client_kwargs": {"headers": HEADERS}}, read_only=read_only
    )


# --- arrays through the native API ---------------------------------------------------------------


def test_array_roundtrip(client, moto, name):
    data = numpy.arange(120, dtype="f8").reshape(10, 12)
    node = client.write_array(dask.array.from_array(data, chunks=(4, 5)), key=name)
    asset = node.data_sources()[0].assets[0]
    assert asset.data_uri.startswith(f"{moto.endpoint}/{BUCKET}/") and asset.is_directory
    prefix = prefix_of(node)
    assert len(prefix) == 32 and "/" not in prefix  # one uuid prefix per node
    stored = moto.objects(f"{prefix}/")
    assert f"{prefix}/zarr.json" in stored and f"{prefix}/c/1/2" in stored

    numpy.testing.assert_array_equal(node.read(), data)
    numpy.testing.assert_array_equal(node.read_block((1, 2)), data[4:8, 10:12])
    numpy.testing.assert_array_equal(node[2:7, 3:9], data[2:7, 3:9])
    node.write(data * 2)
    numpy.testing.assert_array_equal(client[name].read(), data * 2)
    node.write_block(numpy.full((4, 5), -1.0), (0, 0))
    assert (client[name].read()[:4, :5] == -1).all()
    node.patch(numpy.ones((3, 12)), offset=(10,), extend=True)
    grown = client[name]
    assert grown.shape == (13, 12)
    numpy.testing.assert_array_equal(grown.read()[10:], numpy.ones((3, 12)))
    document = moto.objects(f"{prefix}/")[f"{prefix}/zarr.json"]
    assert json.loads(document)["shape"] == [13, 12]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_reads_pass_the_stored_objects_through(server, client, moto, name, zarr_format):
    data = numpy.arange(120, dtype="i4").reshape(10, 12)
    node = client.write_array(dask.array.from_array(data, chunks=(4, 5)), key=name)
    prefix = prefix_of(node)
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    array = zarr.open_array(fsspec_store(url, read_only=True), mode="r", zarr_format=zarr_format)
    numpy.testing.assert_array_equal(array[...], data)

    import obstore

    stored = obstore.get(moto.obstore(), f"{prefix}/c/1/2")
    key = "c/1/2" if zarr_format == 3 else "1.2"
    served = httpx.get(f"{url}/{key}", headers=HEADERS)
    assert served.status_code == 200
    assert served.content == bytes(stored.bytes())  # untouched
    assert served.headers["etag"] == stored.meta["e_tag"]
    again = httpx.get(f"{url}/{key}", headers={**HEADERS, "If-None-Match": served.headers["etag"]})
    assert again.status_code == 304


# --- arrays written through /zarr ----------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_writes_into_the_bucket(server, client, moto, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    group = zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    data = numpy.arange(96, dtype="f4").reshape(8, 12)
    array = group.create_array("a", shape=data.shape, chunks=(4, 5), dtype="f4")
    array[...] = data
    array.attrs["units"] = "m"
    array.resize((12, 12))
    array[8:, :] = 7

    back = zarr.open_group(fsspec_store(url, read_only=True), mode="r")
    expected = numpy.concatenate([data, numpy.full((4, 12), 7, "f4")])
    numpy.testing.assert_array_equal(back["a"][...], expected)
    assert dict(back["a"].attrs) == {"units": "m"}
    numpy.testing.assert_array_equal(client[name]["a"].read(), expected)

    prefix = prefix_of(client[name]["a"])
    key = "c/0/1" if zarr_format == 3 else "0.1"
    stored = moto.objects(f"{prefix}/")
    served = httpx.get(f"{url}/a/{key}", headers=HEADERS)
    assert served.content == stored[f"{prefix}/{key}"]  # the bytes zarr-python sent

    # Conditional chunk writes: a stale ETag is 412 and changes nothing.
    etag = served.headers["etag"]
    other = httpx.put(f"{url}/a/{key}", content=served.content, headers=HEADERS)
    assert other.status_code == 204, other.text
    stale = httpx.put(
        f"{url}/a/{key}", content=served.content, headers={**HEADERS, "If-Match": '"stale"'}
    )
    assert stale.status_code == 412 and "detail" in stale.json()
    fresh = httpx.put(
        f"{url}/a/{key}", content=served.content,
        headers={**HEADERS, "If-Match": other.headers["etag"] or etag},
    )  # fmt: skip
    assert fresh.status_code == 204
    created = httpx.put(
        f"{url}/a/{key}", content=served.content, headers={**HEADERS, "If-None-Match": "*"}
    )
    assert created.status_code == 412

    # A chunk deleted reads as the fill value; the object is gone.
    assert httpx.delete(f"{url}/a/{key}", headers=HEADERS).status_code == 204
    assert f"{prefix}/{key}" not in moto.objects(f"{prefix}/")
    assert (zarr.open_group(fsspec_store(url, read_only=True), mode="r")["a"][0:4, 5:10] == 0).all()

    # The document updated with If-Match: a stale one is refused.
    document = "zarr.json" if zarr_format == 3 else ".zarray"
    current = httpx.get(f"{url}/a/{document}", headers=HEADERS)
    body = json.loads(current.content)
    body["shape"] = [16, 12]
    refused = httpx.put(f"{url}/a/{document}", json=body, headers={**HEADERS, "If-Match": '"old"'})
    assert refused.status_code == 412
    grown = httpx.put(
        f"{url}/a/{document}", json=body, headers={**HEADERS, "If-Match": current.headers["etag"]}
    )
    assert grown.status_code == 204, grown.text
    assert client[name]["a"].shape == (16, 12)

    # PROPFIND lists the chunks stored in the bucket.
    listing = httpx.request("PROPFIND", f"{url}/a", headers=HEADERS)
    assert listing.status_code == 207
    first = "c/0/0" if zarr_format == 3 else "0.0"
    etag = moto.obstore().head(f"{prefix}/{first}")["e_tag"]
    assert f"/a/{first}</D:href>" in listing.text and etag in listing.text
    assert f"/a/{key}</D:href>" not in listing.text  # deleted above


# --- tables --------------------------------------------------------------------------------------


def test_table_partitions_roundtrip(client, moto, name):
    frame = pandas.DataFrame({"x": numpy.arange(10), "y": numpy.arange(10) * 0.5})
    node = client.write_dataframe(dask.dataframe.from_pandas(frame, npartitions=2), key=name)
    assets = node.data_sources()[0].assets
    prefix = prefix_of(node)
    assert [a.data_uri.rsplit("/", 2)[1:] for a in assets] == [
        [prefix, "partition-0.parquet"],
        [prefix, "partition-1.parquet"],
    ]
    assert set(moto.objects(f"{prefix}/")) == {
        f"{prefix}/partition-0.parquet",
        f"{prefix}/partition-1.parquet",
    }
    pandas.testing.assert_frame_equal(node.read(), frame)
    more = pandas.DataFrame({"x": [100, 101], "y": [1.5, 2.5]})
    node.append_partition(1, more)
    pandas.testing.assert_frame_equal(
        client[name].read_partition(1).reset_index(drop=True),
        pandas.concat([frame.iloc[5:], more]).reset_index(drop=True),
    )
    node.write_partition(0, frame.iloc[:2])
    assert len(client[name].read()) == 2 + 5 + 2


def test_a_table_stored_as_csv_in_a_bucket(client, moto, name):
    from tiled.structures.data_source import DataSource
    from tiled.structures.table import TableStructure

    frame = pandas.DataFrame({"x": numpy.arange(4), "y": ["a", "b", "c", "d"]})
    source = DataSource(
        structure_family="table", structure=TableStructure.from_pandas(frame), mimetype="text/csv"
    )
    node = client.new("table", [source], key=name)
    node.write(frame)
    node.append_partition(0, frame)
    assert set(moto.objects(f"{prefix_of(node)}/")) == {f"{prefix_of(node)}/partition-0.csv"}
    pandas.testing.assert_frame_equal(
        client[name].read(), pandas.concat([frame, frame]).reset_index(drop=True)
    )


# --- deletion ------------------------------------------------------------------------------------


def test_deleting_a_node_removes_its_objects(client, moto, name):
    array = client.write_array(numpy.ones((4, 4)), key=name)
    table = client.write_dataframe(pandas.DataFrame({"a": [1, 2]}), key=f"{name}t")
    prefixes = [prefix_of(array), prefix_of(table)]
    assert all(moto.objects(f"{p}/") for p in prefixes)
    client[name].delete(external_only=False)
    client[f"{name}t"].delete(external_only=False)
    assert not any(moto.objects(f"{p}/") for p in prefixes)


# --- what a bucket cannot hold -------------------------------------------------------------------


def test_sparse_arrays_need_a_directory(moto, tmp_path):
    catalog = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
        writable_storage=[moto.storage()],
    )  # fmt: skip
    with serving(catalog) as live:
        client = client_from_uri(live.url, api_key=KEY)
        client.write_array(numpy.arange(3), key="dense")  # arrays are fine
        with pytest.raises(ClientError) as refused:
            client.write_sparse(coords=[[0, 2]], data=[1.0, 2.0], shape=(4,), key="s")
        assert refused.value.response.status_code == 400
        assert "directory" in refused.value.response.json()["detail"]
        assert list(client) == ["dense"]


# --- the store failing ---------------------------------------------------------------------------


def test_unreachable_store_is_503_then_recovers(tmp_path):
    moto = MotoServer(free_port()).start()
    try:
        moto.create_bucket()
        catalog = from_uri(
            f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
            writable_storage=[moto.storage()], lookup_cache_ttl=0,
        )  # fmt: skip
        with serving(catalog) as live:
            client = client_from_uri(live.url, api_key=KEY)
            client.write_array(numpy.arange(10), key="a")
            moto.stop()
            for url in (f"{live.url}/api/v1/array/full/a", f"{live.url}/zarr/v3/a/c/0"):
                down = httpx.get(url, headers=HEADERS, timeout=60)
                assert down.status_code == 503, (url, down.text)
                assert int(down.headers["retry-after"]) > 0
                assert "object store" in down.json()["detail"]
            # What the catalog's rows answer needs no store.
            described = httpx.get(f"{live.url}/api/v1/metadata/a", headers=HEADERS)
            assert described.status_code == 200
            assert httpx.get(f"{live.url}/api/v1/search/", headers=HEADERS).status_code == 200
            written = httpx.post(
                f"{live.url}/api/v1/metadata/", headers=HEADERS, timeout=60,
                json={"structure_family": "array", "data_sources": [{
                    "structure_family": "array", "structure": {
                        "data_type": {"endianness": "little", "kind": "f", "itemsize": 8},
                        "chunks": [[3]], "shape": [3]}}]},
            )  # fmt: skip
            assert written.status_code == 503, written.text
            assert written.headers["retry-after"]

            moto.start()  # empty again: a new bucket, and the service is back
            moto.create_bucket()
            again = client.write_array(numpy.arange(5), key="b")
            numpy.testing.assert_array_equal(again.read(), numpy.arange(5))
            # The node whose objects were lost with the old server is a clear 4xx.
            lost = httpx.get(f"{live.url}/api/v1/array/full/a", headers=HEADERS)
            assert 400 <= lost.status_code < 500, lost.text
    finally:
        moto.stop()


# --- the store failing part-way through a write ------------------------------------------------


@pytest.fixture(scope="module")
def fronted(moto, tmp_path_factory):
    """A server whose bucket is reached through a front that refuses what a test names."""
    directory = tmp_path_factory.mktemp("fronted")
    with store_front(moto.endpoint) as (front, endpoint):
        catalog = from_uri(
            f"sqlite:///{directory / 'catalog.db'}", init_if_not_exists=True,
            writable_storage=[moto.storage(endpoint=endpoint)],
        )  # fmt: skip
        with serving(catalog) as live:
            live.front = front
            yield live


def staging_leftovers(moto, prefix: str) -> list[str]:
    return [path for path in moto.objects(f"{prefix}/") if "/.staging" in path]


def refused_write(fronted, name: str, refusal: Refusal) -> tuple:
    """A node of 8 zeros in 4 chunks, then a write of 0..7 to all of it while the store front
    refuses ``refusal``: the node, its prefix and the answer to the write."""
    client = client_from_uri(fronted.url, api_key=KEY)
    node = client.write_array(dask.array.zeros(8, chunks=2), key=name)
    prefix = prefix_of(node)
    with fronted.front.refusing(refusal.formatted(BUCKET=BUCKET, prefix=prefix)):
        answer = httpx.put(
            f"{fronted.url}/api/v1/array/full/{name}", headers=HEADERS,
            content=numpy.arange(8, dtype="f8").tobytes(),
        )  # fmt: skip
    return node, prefix, answer


def test_a_write_the_store_fails_while_sending_changes_nothing(fronted, moto, name):
    # The store refuses the last chunk of the four the write sends; the first three went.
    node, prefix, refused = refused_write(
        fronted, name, Refusal("PUT", r"^/{BUCKET}/{prefix}/.*c/3$")
    )
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] and "object store" in refused.json()["detail"]
    assert fronted.front.refused
    numpy.testing.assert_array_equal(node.read(), numpy.zeros(8))
    assert sorted(moto.objects(f"{prefix}/")) == [f"{prefix}/zarr.json"]  # nothing staged left

    node.write(numpy.arange(8.0))  # the store is well again
    numpy.testing.assert_array_equal(node.read(), numpy.arange(8.0))


def test_a_write_the_store_fails_while_copying_is_finished_by_the_next(fronted, moto, name):
    # All of the write is staged and committed; then the store refuses the copy to c/3.
    node, prefix, refused = refused_write(
        fronted, name, Refusal("PUT", r"^/{BUCKET}/{prefix}/c/3$", copies=True)
    )
    assert refused.status_code == 503, refused.text
    assert staging_leftovers(moto, prefix)  # the record of the committed write

    # The next writer of the node first finishes that write, then makes its own.
    node.write_block(numpy.array([100.0, 101.0]), (0,))
    expected = numpy.arange(8.0)
    expected[:2] = [100, 101]
    numpy.testing.assert_array_equal(node.read(), expected)
    assert staging_leftovers(moto, prefix) == []


def test_a_commit_whose_answer_is_lost_is_undone_and_leaves_the_node_writable(fronted, moto, name):
    # The commit record reaches the store, but the server is told the PUT failed: it removes
    # the record, then what the write staged.
    node, prefix, refused = refused_write(
        fronted, name, Refusal("PUT", r"\.commit$", forwarded=True)
    )
    assert refused.status_code == 503, refused.text
    assert staging_leftovers(moto, prefix) == []
    numpy.testing.assert_array_equal(node.read(), numpy.zeros(8))
    node.write_block(numpy.array([5.0, 6.0]), (3,))  # the node is as writable as before
    numpy.testing.assert_array_equal(node.read(), [0, 0, 0, 0, 0, 0, 5, 6])


def test_a_shrink_the_store_fails_while_removing_is_finished_by_the_next(fronted, moto, name):
    client = client_from_uri(fronted.url, api_key=KEY)
    node = client.write_array(dask.array.from_array(numpy.arange(1.0, 9.0), chunks=2), key=name)
    prefix = prefix_of(node)
    url = f"{fronted.url}/zarr/v3/{name}"
    document = httpx.get(f"{url}/zarr.json", headers=HEADERS).json()
    document["shape"] = [3]
    # zarr.json (shape 3) lands; removing c/2 and c/3 (a multi-object delete) is refused.
    with fronted.front.refusing(Refusal("POST", rf"^/{BUCKET}/?$")):
        refused = httpx.put(f"{url}/zarr.json", json=document, headers=HEADERS)
    assert refused.status_code == 503, refused.text
    assert "next write" in refused.json()["detail"]
    assert f"{prefix}/c/3" in moto.objects(f"{prefix}/")
    assert client[name].shape == (3,)  # the catalog records the shrink the store will finish

    document["shape"] = [8]  # growing, the next write, removes them first
    assert httpx.put(f"{url}/zarr.json", json=document, headers=HEADERS).status_code == 204
    expected = numpy.zeros(8)
    expected[:3] = [1, 2, 3]  # what lay beyond the shrunk shape is forgotten
    numpy.testing.assert_array_equal(client[name].read(), expected)
    assert staging_leftovers(moto, prefix) == []


# --- PostgreSQL catalog --------------------------------------------------------------------------


def test_postgresql_catalog_with_a_bucket(moto, tmp_path):
    with temporary_database() as database:
        catalog = from_uri(database, init_if_not_exists=True, writable_storage=[moto.storage()])
        with serving(catalog) as live:
            client = client_from_uri(live.url, api_key=KEY)
            data = numpy.linspace(0, 1, 50).reshape(5, 10)
            node = client.write_array(data, key="p")
            assert moto.objects(f"{prefix_of(node)}/")
            numpy.testing.assert_array_equal(client["p"].read(), data)
            url = f"{live.url}/zarr/v3/p"
            numpy.testing.assert_array_equal(
                zarr.open_array(fsspec_store(url), mode="r")[...], data
            )


# --- direct reads: chunk GETs redirected to the bucket ---------------------------------------


DIRECT_SECONDS = 60


@pytest.fixture(scope="module")
def direct(moto, tmp_path_factory):
    directory = tmp_path_factory.mktemp("direct")
    catalog = from_uri(
        f"sqlite:///{directory / 'catalog.db'}", init_if_not_exists=True,
        writable_storage=[moto.storage()],
    )  # fmt: skip
    with serving(catalog, zarr_direct_reads=DIRECT_SECONDS) as live:
        client = client_from_uri(live.url, api_key=KEY)
        live.data = numpy.arange(120, dtype="i4").reshape(10, 12)
        live.node = client.write_array(dask.array.from_array(live.data, chunks=(4, 5)), key="a")
        yield live


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_direct_reads_redirect_to_the_object(direct, moto, zarr_format):
    url = f"{direct.url}/zarr/v{zarr_format}/a"
    key = "c/1/2" if zarr_format == 3 else "1.2"
    answer = httpx.get(f"{url}/{key}", headers=HEADERS)
    assert answer.status_code == 307
    location = answer.headers["location"]
    assert location.startswith(f"{moto.endpoint}/{BUCKET}/{prefix_of(direct.node)}/c/1/2?")
    assert f"X-Amz-Expires={DIRECT_SECONDS}" in location and "X-Amz-Signature=" in location
    assert answer.headers["cache-control"] == "no-store"
    stored = moto.objects(f"{prefix_of(direct.node)}/")[f"{prefix_of(direct.node)}/c/1/2"]
    assert httpx.get(location).content == stored
    assert httpx.get(f"{url}/{key}", headers=HEADERS, follow_redirects=True).content == stored
    # Metadata documents are still the server's.
    document = "zarr.json" if zarr_format == 3 else ".zarray"
    assert httpx.get(f"{url}/{document}", headers=HEADERS).status_code == 200

    # zarr-python (through fsspec's HTTP filesystem) follows the redirects.
    array = zarr.open_array(fsspec_store(url, read_only=True), mode="r", zarr_format=zarr_format)
    numpy.testing.assert_array_equal(array[...], direct.data)


def test_fsspec_follows_direct_reads(direct, moto):
    import fsspec

    filesystem = fsspec.filesystem("http", headers=HEADERS)
    chunk = filesystem.cat(f"{direct.url}/zarr/v3/a/c/0/1")
    prefix = prefix_of(direct.node)
    assert chunk == moto.objects(f"{prefix}/")[f"{prefix}/c/0/1"]


def test_refused_reads_are_never_redirected(direct):
    url = f"{direct.url}/zarr/v3/a/c/0/0"
    assert httpx.get(url).status_code == 401  # no credentials
    assert httpx.get(url, headers={"Authorization": "Apikey wrong"}).status_code == 401
    assert httpx.get(f"{direct.url}/zarr/v3/nope/c/0/0", headers=HEADERS).status_code == 404
    off_grid = httpx.get(f"{direct.url}/zarr/v3/a/c/9/9", headers=HEADERS)
    assert off_grid.status_code == 404 and "location" not in off_grid.headers


def test_reads_the_policy_refuses_are_never_redirected(moto, tmp_path):
    from tiled.access.policies import TagBasedAccessPolicy

    catalog = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
        writable_storage=[moto.storage()],
    )  # fmt: skip
    with serving(catalog) as writer:
        client = client_from_uri(writer.url, api_key=KEY)
        for key, tag in [("open", "open"), ("listed", "listed"), ("closed", "closed")]:
            client.write_array(numpy.arange(4), key=key, access_tags=[tag])
    policy = TagBasedAccessPolicy(
        {
            "open": {"public": ["read:metadata", "read:data"]},
            "listed": {"public": ["read:metadata"]},
        }
    )
    app = build_app(
        catalog, authentication={"allow_anonymous_access": True}, access_policy=policy,
        server_settings={"zarr_direct_reads": DIRECT_SECONDS},
    )  # fmt: skip
    with serve(app) as reader:
        assert httpx.get(f"{reader.url}/zarr/v3/open/c/0").status_code == 307
        refused = httpx.get(f"{reader.url}/zarr/v3/listed/c/0")
        assert refused.status_code in (401, 403) and "location" not in refused.headers
        hidden = httpx.get(f"{reader.url}/zarr/v3/closed/c/0")
        assert hidden.status_code == 404 and "location" not in hidden.headers


# --- the node storage contract, for a directory and a bucket prefix alike --------------------


@pytest.fixture(params=["directory", "bucket"])
def node_storage(request, moto, tmp_path):
    import uuid

    from tiled.adapters.node_storage import BucketStorage, DirectoryStorage
    from tiled.storage import parse_storage

    if request.param == "directory":
        storage = DirectoryStorage(tmp_path / uuid.uuid4().hex)
    else:
        storage = BucketStorage(parse_storage(moto.storage()), uuid.uuid4().hex)
    storage.create()
    yield storage
    storage.destroy()


def test_node_storage_contract(node_storage):
    from tiled.adapters.conditions import WriteCondition
    from tiled.errors import PreconditionFailed

    assert node_storage.get("a") is None and node_storage.head("a") is None
    etag, created = node_storage.put("a", b"one")
    assert created and node_storage.get("a") == (b"one", etag)
    assert node_storage.head("a").etag == etag and node_storage.head("a").size == 3
    with pytest.raises(PreconditionFailed):
        node_storage.put("a", b"two", WriteCondition.from_headers('"other"', None).check)
    with pytest.raises(PreconditionFailed):
        node_storage.put("a", b"two", WriteCondition.from_headers(None, "*").check)
    assert node_storage.get("a").data == b"one"  # refused writes change nothing
    newer, created = node_storage.put("a", b"two", WriteCondition.from_headers(etag, None).check)
    assert not created and newer != etag and node_storage.get("a").data == b"two"

    with node_storage.staged() as transaction:
        transaction.write("c/0", b"x")
        transaction.write("c/1", b"y")
        transaction.remove("a")
    assert sorted(found.key for found in node_storage.list()) == ["c/0", "c/1"]
    with pytest.raises(RuntimeError), node_storage.staged() as transaction:
        transaction.write("c/2", b"z")
        raise RuntimeError("a failure while staging sends nothing")
    assert node_storage.get("c/2") is None

    with pytest.raises(PreconditionFailed):
        node_storage.remove("c/0", WriteCondition.from_headers('"other"', None).check)
    assert node_storage.remove("c/0") and not node_storage.remove("c/0")
    node_storage.destroy()
    assert list(node_storage.list()) == []


def test_a_document_changed_meanwhile_is_not_overwritten(moto):
    import uuid

    from tiled.adapters.node_storage import BucketStorage
    from tiled.adapters.zarr_writable import create_zarr_array
    from tiled.errors import Conflict
    from tiled.storage import parse_storage
    from tiled.structures.array import ArrayStructure

    storage = BucketStorage(parse_storage(moto.storage()), uuid.uuid4().hex)
    structure = ArrayStructure.from_array(numpy.zeros((4, 4)), chunks=((2, 2), (2, 2)))
    create_zarr_array(storage, structure)
    with pytest.raises(Conflict), storage.staged() as transaction:
        array = zarr.open_array(store=storage.zarr_store(transaction), mode="r+")
        array.resize((6, 4))  # reads zarr.json, stages the new one
        # Another process rewrites zarr.json before this transaction commits.
        other = storage.get("zarr.json").data.replace(b'"shape"', b'"shape" ')
        storage.put("zarr.json", other)
    assert storage.get("zarr.json").data == other  # not overwritten unseen
    storage.destroy()


def test_assets_in_a_bucket(server, client, moto, name):
    node = client.write_array(numpy.arange(6), key=name)
    asset = node.data_sources()[0].assets[0]
    prefix = prefix_of(node)
    raw = httpx.get(
        f"{server.url}/api/v1/asset/bytes/{name}", params={"id": asset.id}, headers=HEADERS
    )
    assert raw.status_code == 400 and "file://" in raw.json()["detail"]  # as upstream's
    deleted = httpx.delete(
        f"{server.url}/api/v1/asset/{name}",
        params={"id": asset.id, "external_only": "false"},
        headers=HEADERS,
    )
    assert deleted.json() == {"asset_deleted": True, "data_deleted": True}
    assert moto.objects(f"{prefix}/") == {}


# --- several server processes on one bucket -------------------------------------------------------


@contextlib.contextmanager
def two_servers(moto, tmp_path: Path, endpoint: str | None = None) -> Iterator[tuple[str, str]]:
    """Two ``tiled serve config`` processes of one SQLite catalog and one bucket (reached at
    ``endpoint`` if given): their URLs."""
    import yaml

    from .processes import TILED, server_process

    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "trees": [{"path": "/", "tree": "catalog", "args": {
                    "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
                    "writable_storage": [moto.storage(endpoint=endpoint)],
                    "init_if_not_exists": True}}],
                "authentication": {"single_user_api_key": KEY},
            }
        )
    )  # fmt: skip
    command = [*TILED, "serve", "config", str(config)]
    with server_process(command, tmp_path) as first, server_process(command, tmp_path) as second:
        yield first, second


@pytest.mark.slow
def test_writers_in_two_processes_lose_nothing(moto, tmp_path):
    """Appends and partial chunk writes read what they change; in a bucket, writers of two
    processes take turns (the catalog's cross-process lock), so none undoes another's."""
    with two_servers(moto, tmp_path) as (first, second):
        clients = [client_from_uri(url, api_key=KEY) for url in (first, second)]
        rows = pandas.DataFrame({"x": numpy.arange(5)})
        clients[0].write_dataframe(rows, key="t")
        clients[0].write_array(numpy.zeros(64), key="a")  # one chunk: patches rewrite it

        def append(number: int) -> None:
            client = clients[number % 2]
            client["t"].append_partition(0, pandas.DataFrame({"x": [100 + number]}))

        def patch(number: int) -> None:
            clients[number % 2]["a"].patch(numpy.array([float(number)]), offset=(number,))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(append, range(1, 49)))
            list(pool.map(patch, range(1, 49)))
        for client in clients:
            appended = sorted(client["t"].read_partition(0)["x"].tolist())
            assert appended == [*range(5), *range(101, 149)]
            assert client["a"].read()[1:49].tolist() == [float(n) for n in range(1, 49)]


@pytest.mark.slow
def test_chunk_writes_of_one_process_never_land_outside_a_shrink_of_another(moto, tmp_path):
    """A chunk PUT checks the array's grid, then stores the chunk; in a bucket both happen
    under the catalog's lock of the node, so a resize by another process is either before
    (the chunk is refused) or after (the resize removes it): once a shrink is answered, no
    chunk outside it is stored, whatever the other process keeps sending."""
    import threading

    with two_servers(moto, tmp_path) as (first, second):
        client = client_from_uri(first, api_key=KEY)
        node = client.write_array(dask.array.ones(8, chunks=2), key="a")
        prefix = prefix_of(node)
        chunk = moto.objects(f"{prefix}/")[f"{prefix}/c/3"]
        document = httpx.get(f"{second}/zarr/v3/a/zarr.json", headers=HEADERS).json()
        stop = threading.Event()
        answers: list[int] = []

        def keep_writing() -> None:
            with httpx.Client(headers=HEADERS, timeout=30) as http:
                while not stop.is_set():
                    answers.append(http.put(f"{first}/zarr/v3/a/c/3", content=chunk).status_code)

        writers = [threading.Thread(target=keep_writing) for _ in range(6)]
        for writer in writers:
            writer.start()
        try:
            outside = 0
            for _ in range(25):
                for shape in ([6], [8]):
                    document["shape"] = shape
                    resized = httpx.put(
                        f"{second}/zarr/v3/a/zarr.json", json=document, headers=HEADERS,
                        timeout=30,
                    )  # fmt: skip
                    assert resized.status_code == 204, resized.text
                    if shape == [6] and f"{prefix}/c/3" in moto.objects(f"{prefix}/"):
                        outside += 1
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        assert outside == 0, f"{outside} shrinks of 25 left a chunk outside the array"
        # Writes were refused while the array was shrunk, and landed while it was not.
        assert set(answers) <= {201, 204, 400} and {400} < set(answers), set(answers)


def write_chunks_until(stop, url: str, chunk: bytes, count: int = 4) -> None:
    """PUT ``chunk`` as one of the chunks 0 to ``count - 1`` of the 1-d array at ``url`` (any
    one: mostly new ones, when there are many) until ``stop``."""
    with httpx.Client(headers=HEADERS, timeout=30) as http:
        while not stop.is_set():
            http.put(f"{url}/c/{time.monotonic_ns() % count}", content=chunk)


@pytest.mark.slow
def test_a_node_deleted_while_another_process_writes_its_chunks_leaves_no_object(moto, tmp_path):
    """Deleting a node holds its lock in every process, as its writers do: a chunk write of
    another process lands before the node's objects are removed, or is refused after. (The
    store is made slow to take chunks, so that deletions fall between a write's check of the
    array and its PUT.)"""
    import threading

    with store_front(moto.endpoint) as (front, endpoint):
        slow_chunks = Refusal("PUT", r"/c/\d+$", copies=False, delay=0.1)
        with two_servers(moto, tmp_path, endpoint) as (first, second), front.refusing(slow_chunks):
            client = client_from_uri(first, api_key=KEY)
            prefixes = []
            for attempt in range(3):
                # Chunks written through /zarr are mostly new: created with If-None-Match: *,
                # which, unlike a replacement's If-Match, still succeeds once the node's
                # objects are gone.
                node = client.write_array(dask.array.zeros(400, chunks=2), key=f"a{attempt}")
                prefix = prefix_of(node)
                prefixes.append(prefix)
                node.write_block(numpy.ones(2), (0,))
                chunk = moto.objects(f"{prefix}/")[f"{prefix}/c/0"]
                url = f"{first}/zarr/v3/a{attempt}"
                assert httpx.delete(f"{url}/c/0", headers=HEADERS).status_code == 204
                stop = threading.Event()
                writers = [
                    threading.Thread(target=write_chunks_until, args=(stop, url, chunk, 200))
                    for _ in range(4)
                ]
                for writer in writers:
                    writer.start()
                try:
                    time.sleep(0.3)
                    deleted = httpx.delete(
                        f"{second}/api/v1/metadata/a{attempt}", headers=HEADERS,
                        params={"external_only": "false"}, timeout=30,
                    )  # fmt: skip
                    assert deleted.status_code == 200, deleted.text
                    time.sleep(0.3)  # writes that began before the delete have ended by now
                finally:
                    stop.set()
                    for writer in writers:
                        writer.join()
    left = {prefix: sorted(moto.objects(f"{prefix}/")) for prefix in prefixes}
    assert all(not objects for objects in left.values()), left

"""Data sources and raw assets: ``/asset/bytes`` (with Range), ``/asset/manifest``,
``DELETE /asset``, ``PUT /data_source``, ``expose_raw_assets``, and the client's
``raw_export`` / ``asset_manifest`` (this package's and upstream 0.2.20's)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy
import pandas
import pytest

from tiled.catalog import in_memory
from tiled.client import Context, from_context
from tiled.server.app import build_app
from tiled.structures.array import ArrayStructure
from tiled.structures.core import StructureFamily
from tiled.structures.data_source import Asset, DataSource, Management
from tiled.structures.table import TableStructure
from tiled.utils import path_from_uri


@pytest.fixture
def files(tmp_path) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    return directory


def _context(tmp_path, files=None, **server_settings):
    catalog = in_memory(
        writable_storage=str(tmp_path / "data"),
        readable_storage=[str(files)] if files is not None else None,
    )
    return Context.from_app(build_app(catalog, server_settings=server_settings or None))


def _md5(path: Path) -> bytes:
    return hashlib.md5(Path(path).read_bytes()).digest()


def test_raw_export_of_a_directory_asset_copies_every_file(tmp_path):
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_array(numpy.arange(100).reshape(10, 10), key="x")
        node = client["x"]
        sources = node.data_sources()
        (asset,) = sources[0].assets
        manifest = node.asset_manifest(sources)[asset.id]
        # Relative, POSIX, sorted: a client can place them under any destination.
        assert manifest == sorted(manifest) and "zarr.json" in manifest
        assert all(not p.startswith("/") for p in manifest)
        exported = node.raw_export(tmp_path / "out")
        original = path_from_uri(asset.data_uri)
        assert exported == [tmp_path / "out" / p for p in manifest]
        assert [_md5(p) for p in exported] == [_md5(original / p) for p in manifest]


def test_raw_export_of_several_file_assets_into_a_mapping(tmp_path):
    frame = pandas.DataFrame({"a": [1, 2], "b": [3.0, 4.0]})
    with _context(tmp_path) as context:
        client = from_context(context)
        structure = TableStructure.from_pandas(frame)
        structure = TableStructure(structure.arrow_schema, 2, structure.columns)
        table = client.new(
            "table", [DataSource(StructureFamily.table, structure=structure)], key="t"
        )
        table.write_partition(0, frame)
        table.write_partition(1, frame * 2)
        sources = table.data_sources()
        assets = sources[0].assets
        assert table.asset_manifest(sources) == {a.id: None for a in assets}
        mapping: dict = {}
        keys = table.raw_export(mapping)
        # Several assets: each under its id, named as the server names the file.
        assert keys == [f"{a.id}/{Path(path_from_uri(a.data_uri)).name}" for a in assets]
        for key, asset in zip(keys, assets, strict=True):
            assert mapping[key].read() == path_from_uri(asset.data_uri).read_bytes()
        # A file read back from the export is the partition that was written.
        assert pandas.read_parquet(io.BytesIO(mapping[keys[1]].getvalue()))["a"].tolist() == [2, 4]


def test_range_requests_and_their_refusals(tmp_path):
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_table(pandas.DataFrame({"A": [1, 2, 3]}), key="t")
        (asset,) = client["t"].data_sources()[0].assets
        whole = path_from_uri(asset.data_uri).read_bytes()
        http = context.http_client
        url = f"/api/v1/asset/bytes/t?id={asset.id}"
        full = http.get(url)
        assert full.status_code == 200 and full.content == whole
        assert full.headers["content-disposition"] == 'attachment; filename="partition-0.parquet"'
        part = http.get(url, headers={"Range": "bytes=2-5"})
        assert part.status_code == 206 and part.content == whole[2:6]
        assert part.headers["content-range"] == f"bytes 2-5/{len(whole)}"
        tail = http.get(url, headers={"Range": "bytes=-4"})
        assert tail.status_code == 206 and tail.content == whole[-4:] == b"PAR1"
        outside = http.get(url, headers={"Range": "bytes=1000000-2000000"})
        assert outside.status_code == 416 and outside.json()["detail"]
        assert outside.headers["content-range"] == f"bytes */{len(whole)}"
        for malformed in ("bytes=abc", "lines=0-1", "bytes=5-2"):
            response = http.get(url, headers={"Range": malformed})
            assert response.status_code == 400 and response.json()["detail"], malformed


def test_paths_outside_an_asset_and_missing_assets_are_4xx(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not to be served")
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_array([1, 2, 3], key="x")
        (asset,) = client["x"].data_sources()[0].assets
        directory = path_from_uri(asset.data_uri)
        (directory / "link").symlink_to(secret)
        http = context.http_client
        base = f"/api/v1/asset/bytes/x?id={asset.id}"
        cases = {
            "": 400,  # a directory asset needs relative_path
            "&relative_path=../../secret.txt": 400,
            f"&relative_path={secret}": 400,
            "&relative_path=link": 400,  # a link leading out of the directory
            "&relative_path=c": 400,  # a directory, not a file
            "&relative_path=nothing-here": 404,
        }
        for query, status in cases.items():
            response = http.get(base + query)
            assert response.status_code == status, (query, response.text)
            assert response.json()["detail"]
        assert http.get("/api/v1/asset/bytes/x?id=999").status_code == 404
        assert http.get("/api/v1/asset/manifest/x?id=999").status_code == 404
        assert http.get("/api/v1/asset/bytes/nope?id=1").status_code == 404
        assert http.get("/api/v1/asset/bytes/x?id=abc").status_code == 422


def test_expose_raw_assets_false_refuses_every_asset_route(tmp_path, monkeypatch):
    for how in ("setting", "environment"):
        if how == "environment":
            monkeypatch.setenv("TILED_EXPOSE_RAW_ASSETS", "false")
            settings = {}
        else:
            settings = {"expose_raw_assets": False}
        with _context(tmp_path / how, **settings) as context:
            client = from_context(context)
            client.write_array([1, 2, 3], key="x")
            http = context.http_client
            for method, url in [
                ("GET", "/api/v1/asset/bytes/x?id=1&relative_path=zarr.json"),
                ("GET", "/api/v1/asset/manifest/x?id=1"),
                ("DELETE", "/api/v1/asset/x?id=1&external_only=false"),
            ]:
                response = http.request(method, url)
                assert response.status_code == 403 and response.json()["detail"], url
            assert client["x"].read().tolist() == [1, 2, 3]  # data reads are unaffected


def test_expose_raw_assets_in_a_configuration(tmp_path):
    from tiled.config import construct_build_app_kwargs

    document = {"trees": [{"path": "/", "tree": "tiled.examples.generated_minimal:tree"}]}
    for value in (True, False):
        kwargs = construct_build_app_kwargs({**document, "expose_raw_assets": value})
        assert kwargs["server_settings"]["expose_raw_assets"] is value


def test_asset_reads_need_read_data(tmp_path):
    """The asset routes check access as data reads do: metadata-only access is not enough,
    and a node the reader may not see is not found."""
    from tiled.access.policies import SimpleAccessPolicy
    from tiled.catalog import from_uri

    catalog = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )  # fmt: skip
    with Context.from_app(build_app(catalog)) as context:
        from_context(context).write_array([1, 2, 3], key="x")
        from_context(context).write_array([4, 5], key="hidden")
    policy = SimpleAccessPolicy({}, public=["x"], scopes=["read:metadata"])
    authentication = {"single_user_api_key": "secret", "allow_anonymous_access": True}
    app = build_app(catalog, authentication=authentication, access_policy=policy)
    with Context.from_app(app, api_key=None) as context:
        http = context.http_client
        assert http.get("/api/v1/metadata/x").status_code == 200
        assert http.get("/api/v1/array/full/x").status_code in (401, 403)
        for url in ("/api/v1/asset/bytes/x?id=1&relative_path=zarr.json",
                    "/api/v1/asset/manifest/x?id=1"):  # fmt: skip
            response = http.get(url)
            assert response.status_code in (401, 403) and response.json()["detail"], url
        response = http.get("/api/v1/asset/manifest/hidden?id=2")
        assert response.status_code in (401, 404), response.text


def test_delete_asset_keeps_catalog_and_files_until_allowed(tmp_path):
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_array([1, 2, 3], key="x")
        (asset,) = client["x"].data_sources()[0].assets
        directory = path_from_uri(asset.data_uri)
        http = context.http_client
        refused = http.delete(f"/api/v1/asset/x?id={asset.id}")
        assert refused.status_code == 409 and "external_only" in refused.json()["detail"]
        assert directory.exists() and client["x"].read().tolist() == [1, 2, 3]
        done = http.delete(f"/api/v1/asset/x?id={asset.id}&external_only=false")
        assert done.json() == {"asset_deleted": True, "data_deleted": True}
        assert not directory.exists()
        assert client["x"].data_sources()[0].assets == []
        # The node stays, listed; its data are gone and say so (4xx, not a server error).
        assert "x" in client
        response = http.get("/api/v1/array/full/x")
        assert 400 <= response.status_code < 500 and response.json()["detail"]
        again = http.delete(f"/api/v1/asset/x?id={asset.id}&external_only=false")
        assert again.status_code == 404


def _npy_source(files: Path, count: int) -> DataSource:
    frames = [numpy.full((2, 3), n, dtype="int64") for n in range(count)]
    assets = []
    for n, frame in enumerate(frames):
        numpy.save(files / f"frame_{n}.npy", frame)
        assets.append(Asset(f"file://localhost{files}/frame_{n}.npy", False, "data_uris", num=n))
    structure = replace(
        ArrayStructure.from_array(numpy.stack(frames)), chunks=((1,) * count, (2,), (3,))
    )
    return DataSource(
        StructureFamily.array, structure=structure,
        mimetype="multipart/related;type=application/x-npy", assets=assets,
        management=Management.external,
    )  # fmt: skip


def test_put_data_source_grows_a_registered_sequence(tmp_path, files):
    pytest.importorskip("tiled.adapters.npy")
    with _context(tmp_path, files) as context:
        client = from_context(context)
        node = client.new("array", data_sources=[_npy_source(files, 2)], key="frames")
        assert node.read().shape == (2, 2, 3)
        (source,) = node.data_sources()
        grown = _npy_source(files, 3)  # writes the third frame's file
        grown.id = source.id
        body = {"data_source": grown.to_json()}
        url = "/api/v1/data_source/frames"
        http = context.http_client
        # The patch parameters go together, and must lie inside the new shape.
        for params in ({"patch_shape": "1,2,3"}, {"patch_offset": "2,0,0"},
                       {"patch_shape": "1,2,3", "patch_offset": "3,0,0"},
                       {"patch_shape": "x", "patch_offset": "2,0,0"}):  # fmt: skip
            response = http.put(url, json=body, params=params)
            assert response.status_code == 400 and response.json()["detail"], params
        assert client["frames"].read().shape == (2, 2, 3)  # refused: nothing changed
        response = http.put(
            url, json=body, params={"patch_shape": "1,2,3", "patch_offset": "2,0,0"}
        )
        assert response.status_code == 200, response.text
        fresh = client["frames"]
        assert fresh.read()[:, 0, 0].tolist() == [0, 1, 2]
        (after,) = fresh.data_sources()
        assert after.id == source.id and [a.num for a in after.assets] == [0, 1, 2]
        # Echoing it back changes nothing; an unknown id is 404; a bad structure is 4xx.
        assert http.put(url, json={"data_source": after.to_json()}).status_code == 200
        assert len(client["frames"].data_sources()[0].assets) == 3
        missing = {**after.to_json(), "id": after.id + 1000}
        assert http.put(url, json={"data_source": missing}).status_code == 404
        wrong = after.to_json()
        wrong["structure"]["shape"] = [5, 2, 3]
        response = http.put(url, json={"data_source": wrong})
        assert response.status_code == 400 and response.json()["detail"]
        assert http.put(url, json={"data_source": {"nonsense": 1}}).status_code in (400, 422)
        assert http.put(url, json={"not": "a data source"}).status_code == 422
        assert client["frames"].read().shape == (3, 2, 3)


def test_put_data_source_of_stored_data_takes_only_an_echo(tmp_path):
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_array([1, 2, 3], key="x")
        (source,) = client["x"].data_sources()
        http = context.http_client
        echo = http.put("/api/v1/data_source/x", json={"data_source": source.to_json()})
        assert echo.status_code == 200, echo.text
        changed = source.to_json()
        changed["structure"]["shape"] = [30]
        changed["structure"]["chunks"] = [[30]]
        response = http.put("/api/v1/data_source/x", json={"data_source": changed})
        assert response.status_code == 409 and response.json()["detail"]
        assert client["x"].read().tolist() == [1, 2, 3]


def test_a_node_reads_its_first_data_source(tmp_path, files):
    """A registered container may have several data sources: the first (by id) is read, and
    adding one (PUT without an id) does not change what is served."""
    h5py = pytest.importorskip("h5py")
    for name, value in (("a.h5", 1), ("b.h5", 2)):
        with h5py.File(files / name, "w") as file:
            file["x"] = numpy.full(3, value)
    with _context(tmp_path, files) as context:
        client = from_context(context)
        source = DataSource(
            StructureFamily.container, mimetype="application/x-hdf5",
            assets=[Asset(f"file://localhost{files}/a.h5", False, "data_uris", num=0)],
            management=Management.external,
        )  # fmt: skip
        client.new("container", data_sources=[source], key="h")
        second = DataSource(
            StructureFamily.container, mimetype="application/x-hdf5",
            assets=[Asset(f"file://localhost{files}/b.h5", False, "data_uris", num=0)],
            management=Management.external,
        )  # fmt: skip
        response = context.http_client.put(
            "/api/v1/data_source/h", json={"data_source": second.to_json()}
        )
        assert response.status_code == 200, response.text
        sources = client["h"].data_sources()
        assert [Path(s.assets[0].data_uri).name for s in sources] == ["a.h5", "b.h5"]
        assert sources[0].id < sources[1].id
        assert client["h"]["x"].read().tolist() == [1, 1, 1]
        # A leaf has exactly one data source: adding another is refused.
        client.write_array([1, 2], key="leaf")
        extra = _npy_source(files, 1).to_json()
        response = context.http_client.put("/api/v1/data_source/leaf", json={"data_source": extra})
        assert response.status_code == 400 and response.json()["detail"]


def test_old_clients_get_assets_without_size(tmp_path):
    with _context(tmp_path) as context:
        client = from_context(context)
        client.write_array([1, 2, 3], key="x")
        for agent, has_size in (("python-tiled/0.2.12", False), ("python-tiled/0.2.20", True),
                                ("curl/8", True)):  # fmt: skip
            response = context.http_client.get(
                "/api/v1/metadata/x", params={"include_data_sources": "true"},
                headers={"user-agent": agent},
            )  # fmt: skip
            (source,) = response.json()["data"]["attributes"]["data_sources"]
            assert all(("size" in a) is has_size for a in source["assets"]), agent


UPSTREAM_RAW_EXPORT = r"""
import hashlib, json, sys
from pathlib import Path
import numpy
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
node = client.write_array(numpy.arange(12).reshape(3, 4), key="exported")
paths = client["exported"].raw_export(sys.argv[2])
print(json.dumps({str(Path(p).relative_to(sys.argv[2])): hashlib.md5(Path(p).read_bytes()).hexdigest()
                  for p in paths}))
"""


@pytest.mark.slow
def test_upstream_client_raw_export(upstream_tiled, tmp_path):
    """Upstream 0.2.20's client downloads the zarr files of an array it wrote."""
    import json

    from tiled.catalog import from_uri

    from .isolated_python import run_isolated
    from .live_server import serve

    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )  # fmt: skip
    app = build_app(tree, authentication={"single_user_api_key": "secret"})
    with serve(app) as server:
        result = run_isolated(
            upstream_tiled, UPSTREAM_RAW_EXPORT, server.url, str(tmp_path / "out")
        )
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout.strip().splitlines()[-1])
    (stored,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    expected = {
        p.relative_to(stored).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in stored.rglob("*")
        if p.is_file()
    }
    assert exported == expected and "zarr.json" in exported

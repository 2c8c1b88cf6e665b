"""Registering files with a catalog: ``tiled register``, the walk, and what the catalog checks.

Real servers (in a thread, or ``tiled serve catalog`` as a process) and real files; values are
read back through ``/api/v1`` and with zarr-python. Formats whose adapters may be absent are
skipped when their module is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy
import pandas
import pytest
import zarr

from tiled.catalog import from_uri
from tiled.client.register import HTTPTarget, Settings, Walker, register
from tiled.server.app import build_app
from tiled.structures.array import ArrayStructure

from .live_server import serve
from .processes import server_process, without_pythonpath

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
TILED = str(Path(sys.executable).parent / "tiled")


# --- fixtures ---------------------------------------------------------------------------------


def make_files(root: Path) -> Path:
    """A small tree: a Parquet table, a zarr array, a nested zarr group, a subdirectory, and
    files the walk must skip (hidden, unknown format)."""
    root.mkdir(parents=True, exist_ok=True)
    pandas.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}).to_parquet(root / "table.parquet")
    array = zarr.create_array(str(root / "image.zarr"), shape=(4, 6), chunks=(2, 3), dtype="f8")
    array[:] = numpy.arange(24.0).reshape(4, 6)
    group = zarr.open_group(str(root / "group.zarr"), mode="w")
    group.attrs["color"] = "red"
    member = group.create_group("inner").create_array("x", shape=(5,), chunks=(2,), dtype="i4")
    member[:] = numpy.arange(5)
    (root / "notes.txt").write_text("not data")
    (root / ".hidden.parquet").write_bytes((root / "table.parquet").read_bytes())
    (root / "sub").mkdir(exist_ok=True)
    pandas.DataFrame({"z": [7, 8]}).to_parquet(root / "sub" / "deep.parquet")
    return root


@contextmanager
def catalog_server(tmp_path: Path, readable: Path, **catalog_options):
    """A catalog (SQLite file, readable storage ``readable``) served on a live port."""
    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=tmp_path / "written",
        readable_storage=[readable], init_if_not_exists=True, **catalog_options,
    )  # fmt: skip
    app = build_app(tree, authentication={"single_user_api_key": KEY})
    with serve(app) as server:
        yield server.url


def get(url: str, route: str, **params) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/{route}", headers=HEADERS, params=params, timeout=30)


def values(url: str, route: str) -> object:
    response = get(url, route, format="application/json")
    assert response.status_code == 200, response.text
    return response.json()


def keys(url: str, path: str = "") -> list[str]:
    response = get(url, f"search/{path}", fields="")
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["data"])


def data_sources(url: str, path: str) -> list[dict]:
    response = get(url, f"metadata/{path}", include_data_sources="true")
    assert response.status_code == 200, response.text
    return response.json()["data"]["attributes"]["data_sources"]


def walk(url: str, path: Path, prefix: str = "/", **settings) -> tuple[Walker, HTTPTarget]:
    async def run():
        async with HTTPTarget(url, KEY) as target:
            walker = Walker(target, path, prefix, Settings.init(**settings))
            await walker.run()
            return walker, target

    return asyncio.run(run())


def zarr_group(url: str, zarr_format: int) -> zarr.Group:
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(
        f"{url}/zarr/v{zarr_format}/", storage_options={"headers": HEADERS}, read_only=True
    )
    return zarr.open_group(store, mode="r", zarr_format=zarr_format)


def register_node(url: str, parent: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/register/{parent}", headers=HEADERS, json=body, timeout=30)


def zarr_array_node(key: str, path: Path, structure: dict | None = None, family: str = "array"):
    return {
        "id": key,
        "structure_family": family,
        "metadata": {},
        "specs": [],
        "data_sources": [
            {
                "structure_family": family,
                "structure": structure,
                "mimetype": "application/x-zarr",
                "management": "external",
                "assets": [
                    {"data_uri": f"file://localhost{path}", "is_directory": True,
                     "parameter": "data_uri", "num": None},
                ],
            }
        ],
    }  # fmt: skip


def parquet_node(key: str, path: Path | str, structure: dict | None = None) -> dict:
    return {
        "id": key,
        "structure_family": "table",
        "data_sources": [
            {
                "structure_family": "table",
                "structure": structure,
                "mimetype": "application/x-parquet",
                "management": "external",
                "assets": [
                    {"data_uri": f"file://localhost{path}", "is_directory": False,
                     "parameter": "data_uris", "num": 0},
                ],
            }
        ],
    }  # fmt: skip


# --- the command line, end to end -----------------------------------------------------------------


def test_tiled_register_serves_files_natively_and_as_zarr(tmp_path):
    files = make_files(tmp_path / "files")
    serve = [TILED, "serve", "catalog", "--temp", "--read", files, "--api-key", KEY]
    with server_process(serve, tmp_path) as url:
        done = subprocess.run(
            [TILED, "register", url, str(files), "--api-key", KEY, "--verbose"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "SKIPPED" in done.stderr and "notes.txt" in done.stderr  # the reason is logged
        assert keys(url) == ["group", "image", "sub", "table"]
        assert keys(url, "sub") == ["deep"]
        assert values(url, "table/full/table") == {"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}
        assert values(url, "array/full/image") == numpy.arange(24.0).reshape(4, 6).tolist()
        assert values(url, "array/full/group/inner/x") == [0, 1, 2, 3, 4]
        assert keys(url, "group/inner") == ["x"]  # members listed from the store, any depth
        assert get(url, "metadata/group").json()["data"]["attributes"]["metadata"] == {
            "color": "red"
        }
        assert values(url, "table/full/sub/deep") == {"z": [7, 8]}
        (source,) = data_sources(url, "group")
        assert source["structure_family"] == "container"
        assert source["structure"] == {"keys": ["inner"]}
        assert source["assets"][0]["parameter"] == "data_uri"
        for zarr_format in (2, 3):
            root = zarr_group(url, zarr_format)
            assert root["image"][...].tolist() == numpy.arange(24.0).reshape(4, 6).tolist()
            assert root["group/inner/x"][...].tolist() == [0, 1, 2, 3, 4]
            assert root["table/y"][...].tolist() == [0.5, 1.5, 2.5]


def test_prefix_keep_ext_include_ext_and_ext(tmp_path):
    files = make_files(tmp_path / "files")
    shutil.copy(files / "table.parquet", files / "other.pq")
    serve = [TILED, "serve", "catalog", "--temp", "--read", files, "--api-key", KEY]
    with server_process(serve, tmp_path) as url:
        common = [TILED, "register", url, str(files), "--api-key", KEY]
        run = [*common, "--prefix", "a/b", "--keep-ext", "--ext", ".pq=application/x-parquet"]
        assert subprocess.run(run, capture_output=True, timeout=120).returncode == 0
        assert keys(url, "a/b") == ["group.zarr", "image.zarr", "other.pq", "sub", "table.parquet"]
        assert values(url, "table/full/a/b/other.pq") == {"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}
        run = [
            *common,
            "--prefix",
            "only",
            "--include-ext",
            ".parquet",
            "--ext",
            ".pq=application/x-parquet",
        ]
        assert subprocess.run(run, capture_output=True, timeout=120).returncode == 0
        # Directories are kept (walked, or registered if stores), as upstream's filter keeps them.
        assert keys(url, "only") == ["group", "image", "sub", "table"]
        assert keys(url, "only/sub") == ["deep"]


# --- incremental ----------------------------------------------------------------------------------


def test_registering_an_unchanged_tree_again_reads_no_file_and_writes_nothing(
    tmp_path, monkeypatch
):
    import tiled.client.register as walk_module

    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        walker, target = walk(url, files)
        assert walker.progress.registered == 4  # table, image, group, sub/deep
        first = {key: data_sources(url, key) for key in ("table", "image", "group")}

        opened = []
        real_describe = walk_module.describe
        monkeypatch.setattr(
            walk_module, "describe", lambda *a: opened.append(a) or real_describe(*a)
        )
        walker, target = walk(url, files)
        assert opened == []  # no file was opened: a stat each decided
        assert walker.progress.registered == 0 and walker.progress.unchanged == 4
        assert set(target.requests) == {"GET"}  # nothing posted, nothing deleted
        assert target.requests["GET"] == 2  # one listing per directory (and the prefix)
        assert {key: data_sources(url, key) for key in ("table", "image", "group")} == first


def test_changed_added_and_removed_files_are_reflected(tmp_path):
    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        walk(url, files)
        time.sleep(0.01)  # a new modification time, whatever the file system's resolution
        pandas.DataFrame({"x": [9], "w": ["new"]}).to_parquet(files / "table.parquet")
        (files / "sub" / "deep.parquet").unlink()
        pandas.DataFrame({"n": [1]}).to_parquet(files / "added.parquet")
        shutil.rmtree(files / "image.zarr")
        walker, target = walk(url, files)
        assert walker.progress.registered == 2 and walker.progress.removed == 2
        assert values(url, "table/full/table") == {"x": [9], "w": ["new"]}
        assert values(url, "table/full/added") == {"n": [1]}
        assert keys(url) == ["added", "group", "sub", "table"]
        assert keys(url, "sub") == []


def test_a_walk_removes_only_what_it_registered(tmp_path):
    """Nodes that clients created at the prefix, and nodes registered from another directory,
    survive a walk; a directory that is gone takes the nodes registered from it, and its
    container once that is empty."""
    files = make_files(tmp_path / "files")
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    pandas.DataFrame({"o": [1]}).to_parquet(tmp_path / "elsewhere" / "sub" / "other.parquet")
    with catalog_server(tmp_path, tmp_path) as url:
        made = httpx.post(
            f"{url}/api/v1/metadata/", headers=HEADERS,
            json={"id": "by_a_client", "structure_family": "container"},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        walk(url, tmp_path / "elsewhere", prefix="/")
        walk(url, files, prefix="/")
        assert {"by_a_client", "table", "sub"} <= set(keys(url))
        assert keys(url, "sub") == ["deep", "other"]
        shutil.rmtree(files / "sub")
        walk(url, files, prefix="/")
        assert "by_a_client" in keys(url)
        assert keys(url, "sub") == ["other"]  # registered from elsewhere: not this walk's
        shutil.rmtree(tmp_path / "elsewhere" / "sub")
        walk(url, tmp_path / "elsewhere", prefix="/")
        assert "sub" not in keys(url) and "by_a_client" in keys(url)


def test_symlink_loops_are_skipped(tmp_path):
    files = make_files(tmp_path / "files")
    (files / "sub" / "up").symlink_to(files, target_is_directory=True)
    (files / "sub" / "self").symlink_to(files / "sub", target_is_directory=True)
    (files / "sub" / "a").symlink_to(files / "sub" / "b")  # a loop of links: resolves to nothing
    (files / "sub" / "b").symlink_to(files / "sub" / "a")
    with catalog_server(tmp_path, files) as url:
        walker, _ = walk(url, files)
        assert keys(url, "sub") == ["deep"]
        assert walker.progress.skipped >= 2


def test_files_that_would_share_a_key_are_both_skipped(tmp_path, caplog):
    files = tmp_path / "files"
    files.mkdir()
    pandas.DataFrame({"a": [1]}).to_parquet(files / "same.parquet")
    zarr.create_array(str(files / "same.zarr"), shape=(2,), dtype="i1")
    pandas.DataFrame({"a": [1]}).to_parquet(files / "single.parquet")
    with catalog_server(tmp_path, files) as url:
        walker, _ = walk(url, files)
        assert keys(url) == ["single"]
        assert "COLLISION" in caplog.text


# --- security and checks ------------------------------------------------------------------------


def test_files_outside_the_readable_storage_are_refused(tmp_path):
    files = make_files(tmp_path / "files")
    outside = tmp_path / "outside"
    outside.mkdir()
    pandas.DataFrame({"secret": [42]}).to_parquet(outside / "secret.parquet")
    with catalog_server(tmp_path, files) as url:
        escapes = {
            "dots": f"{files}/../outside/secret.parquet",
            "absolute": f"{outside}/secret.parquet",
        }
        for key, path in escapes.items():
            response = register_node(url, "", parquet_node(key, path))
            assert response.status_code == 403, response.text
            assert "outside the readable storage" in response.json()["detail"]
        (files / "link.parquet").symlink_to(outside / "secret.parquet")
        response = register_node(url, "", parquet_node("link", files / "link.parquet"))
        assert response.status_code == 403, response.text
        # The walk skips the link (the server refuses it) and registers the rest.
        walker, _ = walk(url, files)
        assert "link" not in keys(url) and "table" in keys(url)
        assert walker.progress.skipped >= 1
        for key in ("dots", "absolute", "link"):
            assert get(url, f"metadata/{key}").status_code == 404  # nothing was written

        # A registered file later replaced by a link out of the storage is not read.
        (files / "table.parquet").unlink()
        (files / "table.parquet").symlink_to(outside / "secret.parquet")
        time.sleep(1.1)  # past the lookup cache
        response = get(url, "table/full/table", format="application/json")
        assert response.status_code == 415, response.text
        assert "outside the readable storage" in response.json()["detail"]
        assert "secret" not in response.text.replace("secret.parquet", "")


def test_file_parameters_outside_the_readable_storage_are_refused(tmp_path):
    # Adapters read data_uri(s) parameters in place of the assets: they are checked alike.
    files = tmp_path / "files"
    files.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    numpy.save(files / "public.npy", numpy.zeros(3))
    numpy.save(outside / "secret.npy", numpy.full(3, 42.0))
    secret = f"file://localhost{outside}/secret.npy"
    with catalog_server(tmp_path, files) as url:
        for key, value in (("many", [secret]), ("one", secret)):
            body = {
                "id": key,
                "structure_family": "array",
                "data_sources": [
                    {
                        "structure_family": "array",
                        "mimetype": "application/x-npy",
                        "management": "external",
                        "parameters": {"data_uris": value},
                        "assets": [{"data_uri": f"file://localhost{files}/public.npy",
                                    "is_directory": False, "parameter": "data_uri"}],
                    }
                ],
            }  # fmt: skip
            response = register_node(url, "", body)
            assert response.status_code == 403, response.text
            assert "outside the readable storage" in response.json()["detail"]
            assert get(url, f"metadata/{key}").status_code == 404


def test_a_declared_structure_must_match_the_files(tmp_path):
    files = make_files(tmp_path / "files")
    image = files / "image.zarr"
    actual = ArrayStructure.from_array(numpy.zeros((4, 6)), chunks=((2, 2), (3, 3))).to_json()
    with catalog_server(tmp_path, files) as url:
        wrong_shape = {**actual, "shape": [5, 6], "chunks": [[2, 2, 1], [3, 3]]}
        wrong_dtype = {**actual, "data_type": {**actual["data_type"], "kind": "i"}}
        wrong_chunks = {**actual, "chunks": [[4], [6]]}
        for name, structure, named in [
            ("shape", wrong_shape, "shape"), ("dtype", wrong_dtype, "data type"),
            ("chunks", wrong_chunks, "chunks"),
        ]:  # fmt: skip
            response = register_node(url, "", zarr_array_node(name, image, structure))
            assert response.status_code == 400, response.text
            assert named in response.json()["detail"]
            assert get(url, f"metadata/{name}").status_code == 404
        # The family must be what the files hold.
        response = register_node(url, "", zarr_array_node("g", files / "group.zarr", None))
        assert response.status_code == 400 and "container" in response.json()["detail"]
        columns = parquet_node("t", files / "table.parquet", {"arrow_schema": "", "columns": []})
        columns["data_sources"][0]["structure"] = None
        good = register_node(url, "", columns)
        assert good.status_code == 200, good.text
        table = data_sources(url, "t")[0]["structure"]
        bad = {**table, "columns": ["x", "nope"]}
        response = register_node(url, "", parquet_node("t2", files / "table.parquet", bad))
        assert response.status_code == 400 and "columns" in response.json()["detail"]
        # Declared right: accepted; declared nothing: the files' structure is stored.
        assert register_node(url, "", zarr_array_node("ok", image, actual)).status_code == 200
        response = register_node(url, "", zarr_array_node("filled", image, None))
        assert response.status_code == 200, response.text
        (source,) = data_sources(url, "filled")
        assert source["structure"]["shape"] == [4, 6] and source["structure"]["chunks"] == [
            [2, 2],
            [3, 3],
        ]
        assert source["management"] == "external"


def test_nodes_whose_files_cannot_be_opened_answer_4xx_and_their_parent_still_lists(tmp_path):
    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        walk(url, files)
        (files / "table.parquet").write_bytes(b"not parquet at all")
        shutil.rmtree(files / "image.zarr")
        shutil.rmtree(files / "group.zarr")
        time.sleep(1.1)  # past the lookup cache
        for route, named in [
            ("table/full/table", "table.parquet"),
            ("array/full/image", "missing"),
            ("search/group", "missing"),
            ("array/full/group/inner/x", "missing"),
        ]:
            response = get(url, route, format="application/json")
            assert response.status_code == 415, (route, response.text)
            assert named in response.json()["detail"], response.text
        for zarr_route in ("v3/image/zarr.json", "v2/group/inner/x/.zarray", "v3/group/zarr.json"):
            response = httpx.get(f"{url}/zarr/{zarr_route}", headers=HEADERS)
            assert response.status_code == 415, (zarr_route, response.text)
        assert keys(url) == ["group", "image", "sub", "table"]  # the listing still works
        listing = get(url, "search/", fields=["structure", "metadata"])
        assert listing.status_code == 200
        group = next(d for d in listing.json()["data"] if d["id"] == "group")
        assert group["attributes"]["structure"]["count"] == 1  # as registered


def test_a_listing_opens_no_registered_file(tmp_path, monkeypatch):
    import tiled.catalog.nodes as nodes_module

    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        walk(url, files)
        opened = []
        real_open = nodes_module.open_external
        monkeypatch.setattr(
            nodes_module, "open_external", lambda *a: opened.append(a) or real_open(*a)
        )
        response = get(url, "search/", fields=["structure", "metadata", "specs"])
        assert response.status_code == 200 and len(response.json()["data"]) == 4
        assert opened == []
        values(url, "table/full/table")
        assert len(opened) == 1


# --- adapters configured, upstream's style ----------------------------------------------------------


class LineLengths:
    """An array written for upstream's adapter protocol (no base class of this project)."""

    structure_family = "array"

    def __init__(self, lengths: numpy.ndarray):
        self._lengths = lengths
        self.specs = []

    def metadata(self) -> dict:
        return {"unit": "characters"}

    def structure(self) -> ArrayStructure:
        return ArrayStructure.from_array(self._lengths)

    def read(self, slice=...):
        return self._lengths[slice]


class UpstreamStyleLinesAdapter:
    """A text file as a container of one array per paragraph (line lengths), in upstream's
    style: ``from_uris`` and ``from_catalog`` classmethods, mapping access to members."""

    structure_family = "container"

    def __init__(self, path: Path, metadata: dict | None = None, specs=None):
        paragraphs = Path(path).read_text().split("\n\n")
        self._members = {
            f"p{n}": LineLengths(numpy.array([len(line) for line in text.splitlines()]))
            for n, text in enumerate(paragraphs)
        }
        self._metadata = metadata if metadata is not None else {"paragraphs": len(paragraphs)}
        self.specs = specs or []

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs):
        return cls(data_uri.removeprefix("file://localhost"))

    @classmethod
    def from_catalog(cls, data_source, node, /, **kwargs):
        path = data_source.assets[0].data_uri.removeprefix("file://localhost")
        return cls(path, node.metadata_, node.specs)

    def metadata(self) -> dict:
        return self._metadata

    def keys(self):
        return list(self._members)

    def __getitem__(self, key: str):
        return self._members[key]

    def __len__(self) -> int:
        return len(self._members)

    def structure(self):
        return {"keys": self.keys()}


def test_a_configured_upstream_style_adapter_serves_at_any_depth(tmp_path):
    files = tmp_path / "files"
    (files / "docs").mkdir(parents=True)
    (files / "docs" / "poem.lines").write_text("ab\nabcd\n\nabc\n")
    adapter = f"{__name__}:UpstreamStyleLinesAdapter"
    with catalog_server(tmp_path, files, adapters_by_mimetype={"text/x-lines": adapter}) as url:
        walker, _ = walk(
            url, files, adapters_by_mimetype={"text/x-lines": adapter},
            mimetypes_by_file_ext={".lines": "text/x-lines"},
        )  # fmt: skip
        assert walker.progress.registered == 1
        assert keys(url, "docs/poem") == ["p0", "p1"]
        assert values(url, "array/full/docs/poem/p0") == [2, 4]
        assert get(url, "metadata/docs/poem").json()["data"]["attributes"]["metadata"] == {
            "paragraphs": 2
        }
        (source,) = data_sources(url, "docs/poem")
        assert source["mimetype"] == "text/x-lines" and source["structure"] == {
            "keys": ["p0", "p1"]
        }
        for zarr_format in (2, 3):
            assert zarr_group(url, zarr_format)["docs/poem/p1"][...].tolist() == [3]


# --- formats whose adapters land separately ---------------------------------------------------------


def _needs_adapter(module: str) -> None:
    if importlib.util.find_spec(f"tiled.adapters.{module}") is None:
        pytest.skip(f"tiled.adapters.{module} is not available")


def test_hdf5_files_are_containers_served_to_any_depth(tmp_path):
    _needs_adapter("hdf5")
    h5py = pytest.importorskip("h5py")
    files = tmp_path / "files"
    files.mkdir()
    with h5py.File(files / "scan.h5", "w") as file:
        file.attrs["sample"] = "gold"
        file["top"] = numpy.arange(3.0)
        file.create_group("g").create_group("h")["d"] = numpy.arange(12).reshape(3, 4)
    with catalog_server(tmp_path, files) as url:
        walker, _ = walk(url, files)
        assert walker.progress.registered == 1, walker.progress.summary()
        assert keys(url, "scan") == ["g", "top"]
        assert values(url, "array/full/scan/g/h/d") == numpy.arange(12).reshape(3, 4).tolist()
        assert get(url, "metadata/scan").json()["data"]["attributes"]["metadata"]["sample"] == (
            "gold"
        )
        (source,) = data_sources(url, "scan")
        assert source["mimetype"] == "application/x-hdf5" and source["structure_family"] == (
            "container"
        )
        for zarr_format in (2, 3):
            assert zarr_group(url, zarr_format)["scan/g/h/d"][...].tolist() == (
                numpy.arange(12).reshape(3, 4).tolist()
            )


def test_sequences_npy_tiff_and_csv(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    expected = {}
    if importlib.util.find_spec("tiled.adapters.npy"):
        for n in range(3):
            numpy.save(files / f"frame_{n:03}.npy", numpy.full((2, 2), n))
        numpy.save(files / "single.npy", numpy.arange(4))
        expected["frame_"] = [numpy.full((2, 2), n).tolist() for n in range(3)]
        expected["single"] = [0, 1, 2, 3]
    if importlib.util.find_spec("tiled.adapters.tiff") and importlib.util.find_spec("tifffile"):
        import tifffile

        for n in range(2):
            tifffile.imwrite(files / f"img{n:02}.tif", numpy.full((3, 2), n, dtype="uint8"))
        expected["img"] = [numpy.full((3, 2), n).tolist() for n in range(2)]
    if importlib.util.find_spec("tiled.adapters.csv"):
        (files / "table.csv").write_text("a,b\n1,2\n3,4\n")
    if not expected and not (files / "table.csv").exists():
        pytest.skip("no adapter for NPY, TIFF or CSV files is available")
    with catalog_server(tmp_path, files) as url:
        walker, _ = walk(url, files)
        for key, value in expected.items():
            assert values(url, f"array/full/{key}") == value, key
        if "frame_" in expected:
            (source,) = data_sources(url, "frame_")
            assert source["mimetype"] == "multipart/related;type=application/x-npy"
            assert [(a["parameter"], a["num"]) for a in source["assets"]] == [
                ("data_uris", 0), ("data_uris", 1), ("data_uris", 2),
            ]  # fmt: skip
            assert zarr_group(url, 3)["frame_"][...].tolist() == expected["frame_"]
        if (files / "table.csv").exists():
            assert values(url, "table/full/table") == {"a": [1, 3], "b": [2, 4]}
            (source,) = data_sources(url, "table")
            assert source["assets"][0]["parameter"] == "data_uris"


# --- --watch --------------------------------------------------------------------------------------


def _eventually(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_register_watch_reflects_added_changed_and_removed_files(tmp_path):
    files = make_files(tmp_path / "files")
    serve = [TILED, "serve", "catalog", "--temp", "--read", files, "--api-key", KEY]
    with server_process(serve, tmp_path) as url:
        log = open(tmp_path / "watch.log", "w")
        watcher = subprocess.Popen(
            [TILED, "register", url, str(files), "--api-key", KEY, "--watch", "-v"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _eventually(lambda: "table" in keys(url))
            pandas.DataFrame({"fresh": [1]}).to_parquet(files / "sub" / "new.parquet")
            _eventually(lambda: "new" in keys(url, "sub"))
            assert values(url, "table/full/sub/new") == {"fresh": [1]}
            (files / "table.parquet").unlink()
            _eventually(lambda: "table" not in keys(url))
            group = zarr.open_group(str(files / "group.zarr"), mode="a")
            group.create_array("added", shape=(2,), dtype="i2")[:] = [5, 6]
            _eventually(lambda: "added" in keys(url, "group"))
        finally:
            watcher.terminate()
            watcher.wait(timeout=30)
            log.close()


# --- upstream's tiled register -------------------------------------------------------------------


def _arrow_fields(encoded: str) -> list[tuple[str, str]]:
    import base64

    import pyarrow

    schema = pyarrow.ipc.read_schema(pyarrow.py_buffer(base64.b64decode(encoded.split(",")[1])))
    return [(field.name, str(field.type)) for field in schema]


def _comparable(source: dict) -> dict:
    """A data source without what differs by catalog: ids, our walk's file stat, and the
    pandas notes inside a table's Arrow schema (upstream reads it through dask)."""
    kept = {k: v for k, v in source.items() if k not in ("id", "properties")}
    kept["assets"] = [{k: v for k, v in a.items() if k != "id"} for a in source["assets"]]
    structure = kept.get("structure")
    if isinstance(structure, dict) and "arrow_schema" in structure:
        kept["structure"] = {**structure, "arrow_schema": _arrow_fields(structure["arrow_schema"])}
    return kept


def _tree_sources(url: str, path: str = "") -> dict[str, list[dict]]:
    found = {}
    response = get(url, f"search/{path}", include_data_sources="true", fields="structure_family")
    for item in response.json()["data"]:
        where = f"{path}/{item['id']}".strip("/")
        sources = item["attributes"]["data_sources"] or []
        found[where] = [_comparable(s) for s in sources]
        if item["attributes"]["structure_family"] == "container" and not sources:
            found.update(_tree_sources(url, where))
    return found


@pytest.mark.slow
def test_upstream_tiled_register_into_this_server_holds_what_ours_would(upstream_tiled, tmp_path):
    files = make_files(tmp_path / "files")
    for n in range(2):
        numpy.save(files / "sub" / f"img_{n}.npy", numpy.full((2, 2), n))
    upstream = [str(upstream_tiled.parent / "tiled")]
    serve = [TILED, "serve", "catalog", "--temp", "--read", files, "--api-key", KEY]
    with server_process(serve, tmp_path) as url:
        done = subprocess.run(
            [*upstream, "register", url, str(files), "--prefix", "up", "--api-key", KEY],
            capture_output=True, text=True, timeout=300, env=without_pythonpath(), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ours = subprocess.run(
            [TILED, "register", url, str(files), "--prefix", "ours", "--api-key", KEY],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert ours.returncode == 0, ours.stderr
        by_upstream, by_us = _tree_sources(url, "up"), _tree_sources(url, "ours")
        assert {k.removeprefix("up/") for k in by_upstream} == {
            k.removeprefix("ours/") for k in by_us
        }
        for where, sources in by_upstream.items():
            assert by_us["ours/" + where.removeprefix("up/")] == sources, where
        # What upstream registered is served here like the rest.
        assert values(url, "table/full/up/table") == {"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}
        assert values(url, "array/full/up/group/inner/x") == [0, 1, 2, 3, 4]
        assert zarr_group(url, 3)["up/image"][...].shape == (4, 6)
        if importlib.util.find_spec("tiled.adapters.npy"):
            assert values(url, "array/full/up/sub/img_") == [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]
        # Our walk over what upstream registered: everything is re-registered once (upstream
        # records no file stat), then nothing.
        again = [TILED, "register", url, str(files), "--prefix", "up", "--api-key", KEY, "-v"]
        subprocess.run(again, check=True, capture_output=True, timeout=300)
        last = subprocess.run(again, capture_output=True, text=True, timeout=300)
        assert "Registered '" not in last.stderr and "0 registered" in last.stderr


@pytest.mark.slow
def test_our_walk_and_upstreams_make_the_same_data_sources_in_upstreams_server(
    upstream_tiled, tmp_path
):
    """Both walks, into upstream's own server: the catalogs hold the same data sources."""
    files = make_files(tmp_path / "files")
    upstream = [str(upstream_tiled.parent / "tiled")]
    serve = [*upstream, "serve", "catalog", "--temp", "-r", files, "--api-key", KEY]
    with server_process(serve, tmp_path, env=without_pythonpath()) as url:
        env = without_pythonpath()
        subprocess.run(
            [*upstream, "register", url, str(files), "--prefix", "up", "--api-key", KEY],
            check=True, capture_output=True, timeout=300, env=env, cwd=tmp_path,
        )  # fmt: skip
        walker, target = walk(url, files, prefix="ours")
        assert walker.progress.registered == 4, walker.progress.summary()
        by_upstream, by_us = _tree_sources(url, "up"), _tree_sources(url, "ours")
        assert len(by_upstream) == len(by_us) == 5
        for where, sources in by_upstream.items():
            ours = by_us["ours/" + where.removeprefix("up/")]
            for mine, theirs in zip(ours, sources, strict=True):
                # Upstream's server answers the structures it stored in its own spelling.
                assert {k: v for k, v in mine.items() if k != "structure"} == {
                    k: v for k, v in theirs.items() if k != "structure"
                }, where
        walker, target = walk(url, files, prefix="ours")
        assert walker.progress.unchanged == 4 and set(target.requests) == {"GET"}


def test_register_cli_reports_an_unreachable_server(tmp_path):
    files = make_files(tmp_path / "files")
    done = subprocess.run(
        [TILED, "register", "http://127.0.0.1:9", str(files), "--api-key", KEY],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "cannot reach" in done.stderr


def test_register_cli_reports_an_address_with_no_container_in_one_line(tmp_path):
    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        done = subprocess.run(
            [TILED, "register", f"{url.rstrip('/')}/not-a-server", str(files), "--api-key", KEY],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Error: no container at " in done.stderr and "/not-a-server/api/v1" in done.stderr


def test_register_of_a_single_file_and_of_a_store(tmp_path):
    files = make_files(tmp_path / "files")
    with catalog_server(tmp_path, files) as url:
        walk(url, files / "table.parquet", prefix="one")
        walk(url, files / "image.zarr", prefix="store")
        assert keys(url, "one") == ["table"] and keys(url, "store") == ["image"]
        assert values(url, "array/full/store/image")[0] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_metadata_read_from_files_must_be_json(tmp_path):
    # Attributes read from files are numpy values; the walk sends them as JSON.
    files = tmp_path / "files"
    files.mkdir()
    group = zarr.open_group(str(files / "g.zarr"), mode="w")
    group.attrs["n"] = 3
    group.create_array("a", shape=(1,), dtype="u1")
    with catalog_server(tmp_path, files) as url:

        async def run():
            async with HTTPTarget(url, KEY) as target:
                await register(target, files)

        asyncio.run(run())
        assert json.loads(get(url, "metadata/g").text)["data"]["attributes"]["metadata"] == {"n": 3}
    assert os.path.exists(files / "g.zarr")


def test_an_adapter_configured_in_yaml_serves_what_it_registers(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "poem.lines").write_text("a\nbb\n")
    adapter = f"{__name__}:UpstreamStyleLinesAdapter"
    config = tmp_path / "config.yml"
    config.write_text(
        "trees:\n"
        "  - path: /\n"
        "    tree: catalog\n"
        "    args:\n"
        f"      uri: sqlite:///{tmp_path / 'catalog.db'}\n"
        "      init_if_not_exists: true\n"
        f"      readable_storage: [{files}]\n"
        "      adapters_by_mimetype:\n"
        f"        text/x-lines: {adapter}\n"
    )
    with server_process([TILED, "serve", "config", config, "--api-key", KEY], tmp_path) as url:
        walker, _ = walk(
            url, files, adapters_by_mimetype={"text/x-lines": adapter},
            mimetypes_by_file_ext={".lines": "text/x-lines"},
        )  # fmt: skip
        assert walker.progress.registered == 1
        assert values(url, "array/full/poem/p0") == [1, 2]

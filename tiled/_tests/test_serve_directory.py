"""``tiled serve directory``: a directory's files served from a catalog indexed in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy
import pandas
import zarr

from tiled.adapters.array import ArrayAdapter

from .processes import server_process
from .test_register import KEY, data_sources, get, keys, make_files, values, zarr_group

TILED = str(Path(sys.executable).parent / "tiled")


def serve_directory(directory: Path, *options: str) -> list:
    return [TILED, "serve", "directory", directory, "--api-key", KEY, *options]


def _eventually(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _indexed(log: Path) -> bool:
    return "Indexed " in log.read_text()


def _log(tmp_path: Path) -> Path:
    (log,) = tmp_path.glob("server-*.log")
    return log


def test_serve_directory_serves_files_natively_and_as_zarr(tmp_path):
    files = make_files(tmp_path / "files")
    outside = tmp_path / "outside"
    outside.mkdir()
    pandas.DataFrame({"secret": [1]}).to_parquet(outside / "secret.parquet")
    (files / "link.parquet").symlink_to(outside / "secret.parquet")
    with server_process(serve_directory(files, "--verbose"), tmp_path) as url:
        _eventually(lambda: _indexed(_log(tmp_path)))
        assert keys(url) == ["group", "image", "sub", "table"]  # not the link out of DIR
        assert values(url, "table/full/table") == {"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}
        assert values(url, "array/full/group/inner/x") == [0, 1, 2, 3, 4]
        assert values(url, "table/full/sub/deep") == {"z": [7, 8]}
        (source,) = data_sources(url, "image")
        assert source["management"] == "external" and source["mimetype"] == "application/x-zarr"
        for zarr_format in (2, 3):
            root = zarr_group(url, zarr_format)
            assert root["image"][...].tolist() == numpy.arange(24.0).reshape(4, 6).tolist()
            assert root["group/inner/x"][...].tolist() == [0, 1, 2, 3, 4]
        text = _log(tmp_path).read_text()
        assert "outside the readable storage" in text  # why the link was skipped
        assert "notes.txt" in text  # skipped, with its reason (--verbose)
        # The key is required; --public was not given.
        assert httpx.get(f"{url}/api/v1/search/").status_code == 401


def test_serve_directory_public_allows_anonymous_reads(tmp_path):
    files = make_files(tmp_path / "files")
    with server_process(serve_directory(files, "--public"), tmp_path) as url:
        _eventually(lambda: _indexed(_log(tmp_path)))
        response = httpx.get(
            f"{url}/api/v1/table/full/table", params={"format": "application/json"}
        )
        assert response.status_code == 200 and response.json()["x"] == [1, 2, 3]


# A file whose existence lets SlowAdapter open files (the server process reads its path here).
GATE_VARIABLE = "TILED_TEST_SLOW_ADAPTER_GATE"


class SlowAdapter:
    """Reads a file's bytes as an array, slowly: a directory that takes a while to index. No
    file is opened before the file :data:`GATE_VARIABLE` names exists (if it names one, for
    two minutes at most): the walk lasts as long as the test needs, however slowly a loaded
    machine runs the test."""

    @staticmethod
    def _open(data_uri: str) -> ArrayAdapter:
        gate = os.environ.get(GATE_VARIABLE)
        deadline = time.monotonic() + 120
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        data = numpy.frombuffer(Path(data_uri.removeprefix("file://localhost")).read_bytes(), "u1")
        return ArrayAdapter.from_array(data)

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs) -> ArrayAdapter:
        return cls._open(data_uri)

    @classmethod
    def from_catalog(cls, data_source, node, /, **kwargs) -> ArrayAdapter:
        return cls._open(data_source.assets[0].data_uri)


def test_serve_directory_answers_while_indexing_and_reports_progress(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    count = 30
    for n in range(count):
        (files / f"f{n:02}.slow").write_bytes(bytes([n, n + 1]))
    options = ["--ext", ".slow=application/x-slow",
               "--adapter", f"application/x-slow={__name__}:SlowAdapter"]  # fmt: skip
    gate = tmp_path / "gate"  # no file is opened, and the walk cannot end, before it exists
    env = {**os.environ, GATE_VARIABLE: str(gate)}
    started = time.monotonic()
    with server_process(serve_directory(files, *options), tmp_path, env=env) as url:
        early = keys(url)
        # A bound on the process's start (about 2 s; many more on a loaded machine).
        assert time.monotonic() - started < 60
        assert len(early) < count  # served before the walk was done
        _eventually(lambda: "so far" in _log(tmp_path).read_text(), timeout=60)
        gate.touch()
        _eventually(lambda: len(keys(url)) == count, timeout=120)
        assert values(url, "array/full/f07") == [7, 8]
        _eventually(lambda: _indexed(_log(tmp_path)))


def test_serve_directory_watch_reflects_changes(tmp_path):
    files = make_files(tmp_path / "files")
    with server_process(serve_directory(files, "--watch"), tmp_path) as url:
        _eventually(lambda: _indexed(_log(tmp_path)))
        pandas.DataFrame({"fresh": [1.5]}).to_parquet(files / "sub" / "new.parquet")
        _eventually(lambda: "new" in keys(url, "sub"))
        assert values(url, "table/full/sub/new") == {"fresh": [1.5]}
        (files / "table.parquet").unlink()
        _eventually(lambda: "table" not in keys(url))
        pandas.DataFrame({"changed": [1, 2]}).to_parquet(files / "sub" / "deep.parquet")
        _eventually(lambda: get(url, "table/full/sub/deep", format="application/json").json() == {
            "changed": [1, 2]
        })  # fmt: skip
        (files / "later").mkdir()
        pandas.DataFrame({"a": [1]}).to_parquet(files / "later" / "t.parquet")
        _eventually(lambda: "t" in keys(url, "later") if "later" in keys(url) else False)
        array = zarr.open_array(str(files / "image.zarr"), mode="a")
        array.resize((2, 6))
        _eventually(
            lambda: values(url, "array/full/image") == numpy.arange(12.0).reshape(2, 6).tolist()
        )


def test_serve_directory_refuses_what_is_not_a_directory(tmp_path):
    done = subprocess.run(
        [TILED, "serve", "directory", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert done.returncode == 1 and "is not a directory" in done.stderr


def test_the_temporary_catalog_is_removed_when_the_server_stops(tmp_path):
    from tiled.catalog.directory import directory_tree
    from tiled.client.register import Settings
    from tiled.server.app import build_app

    from .live_server import serve

    files = make_files(tmp_path / "files")
    tree, database = directory_tree(files, Settings.init())
    with serve(build_app(tree, authentication={"single_user_api_key": KEY})) as server:
        _eventually(lambda: "table" in keys(server.url))
        assert database.exists()
    assert not database.parent.exists()

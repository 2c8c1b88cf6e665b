"""Directories holding files that must not stop a walk: FIFOs, names that are not UTF-8 or
hold a newline, metadata that JSON cannot hold, corrupt files. Each is skipped with one
warning line; ``tiled serve directory`` and ``tiled register`` finish and serve the rest."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas
import pytest

from tiled.adapters.files import path_from_uri
from tiled.adapters.sequence import FileUnreadable, opened
from tiled.catalog.directory import index_directory
from tiled.client.register import Settings, file_uri

from .processes import server_process
from .test_register import KEY, catalog_server, keys
from .test_serve_directory import _eventually, _indexed, _log, serve_directory

TILED = str(Path(sys.executable).parent / "tiled")

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def good_csv(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pandas.DataFrame({"x": [1, 2]}).to_csv(directory / "good.csv", index=False)
    return directory


def hostile_names(directory: Path) -> None:
    """A name that is not UTF-8, and one holding a newline, both of valid CSV files."""
    (Path(os.fsdecode(os.fsencode(directory) + b"/bad\xff\xfe.csv"))).write_text("x\n1\n")
    (directory / "newline\nname.csv").write_text("x\n1\n")


def unstorable_hdf5(directory: Path) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(directory / "bstr.h5", "w") as file:
        file.attrs["bstr"] = b"\xff\xfe bytes"
        file["x"] = [1, 2]


def test_a_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(FileUnreadable, match="not a regular file"):
        with opened(tmp_path / "fifo.csv"):
            pass


def test_file_uris_keep_control_characters(tmp_path):
    path = tmp_path / "newline\nname.csv"
    assert path_from_uri(file_uri(path)) == path


def test_serve_directory_skips_a_fifo(tmp_path):
    files = good_csv(tmp_path / "files")
    os.mkfifo(files / "fifo.csv")
    with server_process(serve_directory(files), tmp_path) as url:
        _eventually(lambda: _indexed(_log(tmp_path)), timeout=20)
        assert keys(url) == ["good"]
        assert "fifo.csv': it is a FIFO" in _log(tmp_path).read_text()


def test_register_skips_what_it_cannot_register_and_registers_the_rest(tmp_path):
    files = good_csv(tmp_path / "files")
    os.mkfifo(files / "fifo.csv")
    hostile_names(files)
    unstorable_hdf5(files)
    with catalog_server(tmp_path, files) as url:
        done = subprocess.run(
            [TILED, "register", url, str(files), "--api-key", KEY],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert keys(url) == ["good"]
    err = done.stderr
    assert "fifo.csv': it is a FIFO" in err
    assert "bad\\xff\\xfe.csv': its name is not UTF-8 text" in err
    assert "newline\\nname.csv': its name holds a control character" in err
    assert "bstr.h5" in err and "lone surrogate" in err
    assert "Traceback" not in err and "unhandled exception" not in err


def test_each_unreadable_file_is_one_warning_line(tmp_path, caplog):
    files = good_csv(tmp_path / "files")
    (files / "broken_csv.csv").write_bytes(b'a,b\n"1,2\n3,4,5\n')
    (files / "broken_h5.h5").write_bytes(b"not hdf5")
    (files / "broken_parquet.parquet").write_bytes(b"PAR1 not parquet")
    os.mkfifo(files / "fifo.csv")
    caplog.set_level(logging.WARNING)
    database = index_directory(files, Settings.init(), report=lambda text: None)
    database.unlink()
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("tiled")
    ]
    for name in ("broken_csv.csv", "broken_h5.h5", "broken_parquet.parquet", "fifo.csv"):
        (record,) = [r for r in warnings if name in r.getMessage()]
        assert "SKIPPED" in record.getMessage() and "\n" not in record.getMessage()
    assert not any(r.exc_info for r in warnings)  # tracebacks only at debug level

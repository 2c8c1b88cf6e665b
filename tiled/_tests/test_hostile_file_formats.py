"""Files other than HDF5 that are small on disk but hostile to serve: a CSV file of 200 000
columns (pandas needs minutes to parse its header), wide tables (whose structure took time
quadratic in the columns), integers too large for 64 bits in a CSV column, a workbook whose one
far cell (XFD1048576) makes pandas pad a sheet to 1.7e10 cells, and numbered files of different
formats that share a name. Each is served, or skipped by the walk with its reason, quickly, and
never takes its siblings or its parent's listing down with it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy
import openpyxl
import pandas
import pytest
import tifffile

from tiled.adapters.csv import MAX_COLUMNS, CSVAdapter
from tiled.adapters.excel import ExcelAdapter
from tiled.adapters.files import uri_from_path
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.sequence import FileUnreadable
from tiled.catalog.directory import directory_tree
from tiled.client.register import Settings, plan_directory
from tiled.server.app import build_app

from .live_server import serve

WIDE = 200_000  # columns of the too-wide CSV file
MANY = 4_000  # columns of a wide CSV file that is read


def _csv_of_columns(path: Path, count: int) -> None:
    names = ",".join(f"c{i}" for i in range(count))
    path.write_text(names + "\n" + ",".join("1" for _ in range(count)) + "\n")


def _far_cell_workbook(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["A1"] = "h"
    sheet["XFD1048576"] = 1  # the last cell of a sheet
    book.save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hostile_formats")
    _csv_of_columns(directory / "wide.csv", WIDE)
    _csv_of_columns(directory / "many.csv", MANY)
    (directory / "big.csv").write_text("a,b\n" + "9" * 40 + ",1\n7,2\n")
    _far_cell_workbook(directory / "far.xlsx")
    book = openpyxl.Workbook()
    book.active["A1"], book.active["A2"] = "x", 5
    book.save(directory / "sheets.xlsx")
    numpy.save(directory / "good.npy", numpy.arange(5.0))
    pandas.DataFrame({"a": [1, 2]}).to_csv(directory / "small.csv", index=False)
    return directory


def _eventually(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _keys(url: str, path: str = "") -> list[str]:
    response = httpx.get(f"{url}/api/v1/search/{path}", params={"fields": ""}, timeout=10)
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["data"])


@pytest.fixture(scope="module")
def directory_server(files):
    tree, _ = directory_tree(files, Settings.init())
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield live.url


@pytest.fixture(scope="module")
def tree_server(files):
    tree = MapAdapter(
        {
            "big": CSVAdapter.from_uris(uri_from_path(files / "big.csv")),
            "many": CSVAdapter.from_uris(uri_from_path(files / "many.csv")),
            "sheets": ExcelAdapter.from_uris(uri_from_path(files / "sheets.xlsx")),
        }
    )
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield live.url


# --- a CSV file too wide to parse ---------------------------------------------------------------


def test_too_wide_csv_is_refused_before_it_is_parsed(files):
    started = time.monotonic()
    with pytest.raises(FileUnreadable, match=f"{WIDE} or more columns"):
        CSVAdapter.from_uris(uri_from_path(files / "wide.csv"))
    # Refused in milliseconds; parsed, the file takes over 20 s (pandas, then the structure).
    # Not 2 s: a loaded machine may stop this process for a second or two.
    assert time.monotonic() - started < 10
    assert MAX_COLUMNS < WIDE


def test_too_wide_csv_and_far_cell_workbook_leave_the_directory_served(directory_server):
    # Both are skipped by the walk, quickly; their siblings are listed and read.
    _eventually(lambda: _keys(directory_server) == ["big", "good", "many", "sheets", "small"])
    url = f"{directory_server}/api/v1"
    small = httpx.get(f"{url}/table/full/small", params={"format": "application/json"})
    assert small.json() == {"a": [1, 2]}
    sheet = httpx.get(f"{url}/table/full/sheets/Sheet", params={"format": "application/json"})
    assert sheet.status_code == 200 and sheet.json() == {"x": [5]}
    for key in ("wide", "far"):
        missing = httpx.get(f"{url}/metadata/{key}")
        assert missing.status_code == 404 and "detail" in missing.json()


# --- wide tables ---------------------------------------------------------------------------------


def test_wide_csv_structure_decodes_the_index_names_once(files, monkeypatch):
    # Once per column, a table of 4000 columns took 14 s to describe.
    from tiled.structures import table

    calls = []
    original = table.index_columns
    monkeypatch.setattr(table, "index_columns", lambda schema: calls.append(1) or original(schema))
    adapter = CSVAdapter.from_uris(uri_from_path(files / "many.csv"))
    assert len(adapter.structure().columns) == MANY
    assert len(calls) == 1


def test_wide_csv_is_served(tree_server):
    url = f"{tree_server}/api/v1"
    response = httpx.get(f"{url}/table/full/many", params={"format": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()) == MANY
    column = httpx.get(f"{tree_server}/zarr/v3/many/c3999/c/0")
    assert column.status_code == 200, column.text


# --- integers beyond 64 bits -------------------------------------------------------------------


def test_csv_integers_beyond_64_bits_are_served_as_text(tree_server):
    url = f"{tree_server}/api/v1"
    for path in ("table/full/big", "table/partition/big"):
        response = httpx.get(f"{url}/{path}", params={"format": "application/json", "partition": 0})
        assert response.status_code == 200, response.text
        assert response.json() == {"a": ["9" * 40, "7"], "b": [1, 2]}
    exported = httpx.get(f"{url}/table/full/big", params={"format": "text/csv"})
    assert exported.status_code == 200 and "9" * 40 in exported.text
    column = httpx.get(f"{url}/array/full/big/a", params={"format": "application/json"})
    assert column.status_code == 200 and column.json() == ["9" * 40, "7"]


# --- a workbook padded to 1.7e10 cells ---------------------------------------------------------


def test_far_cell_workbook_is_refused_quickly(files):
    started = time.monotonic()
    with pytest.raises(FileUnreadable, match="XFD|more than 20000000 cells"):
        ExcelAdapter.from_uris(uri_from_path(files / "far.xlsx"))
    assert time.monotonic() - started < 10


def test_workbook_that_is_no_zip_is_refused(tmp_path):
    path = tmp_path / "lies.xlsx"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(FileUnreadable):
        ExcelAdapter.from_uris(uri_from_path(path))


# --- numbered files of several formats ----------------------------------------------------------


def test_numbered_files_of_different_formats_are_never_one_sequence(tmp_path):
    tifffile.imwrite(tmp_path / "frame000.tif", numpy.zeros((4, 4), "u1"))
    tifffile.imwrite(tmp_path / "frame001.tif", numpy.ones((4, 4), "u1"))
    numpy.save(tmp_path / "frame002.npy", numpy.zeros((4, 4)))
    numpy.save(tmp_path / "dark000.npy", numpy.zeros(3))
    numpy.save(tmp_path / "dark001.npy", numpy.ones(3))
    plan = plan_directory(tmp_path, Settings.init())
    # Two sequences named 'frame' are a collision: neither is served as the other's format.
    assert plan.skipped_keys == {"frame"}
    (item,) = plan.items
    assert item.key == "dark" and [p.name for p in item.paths] == ["dark000.npy", "dark001.npy"]

"""Listing a container through the client: slices and indexers (what each costs in requests),
cursor pagination and sort parameters on the server, distinct values, and registering files
through a container client (``Container.register``, ``register(client, path)``).

Real apps (``Context.from_app``) over in-memory catalogs and mappings; requests are counted
with ``record_history``.
"""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy
import pandas
import pytest
import xarray

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.xarray import DatasetAdapter
from tiled.catalog import in_memory
from tiled.client import Context, from_context, record_history
from tiled.client.register import IMG_SEQUENCE_EMPTY_NAME_ROOT, register
from tiled.server.app import build_app
from tiled.server.core import INLINED_CONTENTS_LIMIT

LETTERS = list(string.ascii_lowercase)


@pytest.fixture(scope="module")
def letters():
    """A mapping of 26 arrays, keyed a..z in order."""
    tree = MapAdapter({k: ArrayAdapter.from_array(numpy.full(2, i)) for i, k in enumerate(LETTERS)})
    with Context.from_app(build_app(tree)) as context:
        yield from_context(context)


@pytest.fixture
def catalog(tmp_path):
    """A writable in-memory catalog whose files under ``tmp_path / "files"`` are readable."""
    files = tmp_path / "files"
    files.mkdir()
    adapter = in_memory(writable_storage=str(tmp_path / "data"), readable_storage=[str(files)])
    with Context.from_app(build_app(adapter)) as context:
        yield from_context(context), files


def _search_url(client) -> str:
    return client.uri.replace("/api/v1/metadata/", "/api/v1/search/")


# --- slices and indexers ------------------------------------------------------------------------

SLICES = [
    slice(None), slice(3, None), slice(None, 4), slice(2, 6), slice(-5, None), slice(-5, -2),
    slice(None, -3), slice(3, -3), slice(-20, 20), slice(None, None, -1), slice(-3, None, -1),
    slice(-1, -5, -1), slice(10, 2, -1), slice(10, None, -2), slice(None, 5, -1),
    slice(1, 20, 3), slice(-1, 3, -2), slice(5, 5), slice(6, 2), slice(-2, -6), slice(100, None),
]  # fmt: skip


@pytest.mark.parametrize("index", SLICES, ids=str)
def test_slices_have_python_semantics(letters, index):
    assert letters.keys()[index] == LETTERS[index]
    assert [k for k, _ in letters.items()[index]] == LETTERS[index]


@pytest.mark.parametrize("index", [0, 5, 25, -1, -7, -26])
def test_indices_and_bounds(letters, index):
    assert letters.keys()[index] == LETTERS[index]
    assert int(letters.values()[index].read()[0]) == LETTERS.index(LETTERS[index])


@pytest.mark.parametrize("index", [26, -27, 1000])
def test_out_of_range_indices_raise(letters, index):
    with pytest.raises(IndexError):
        letters.keys()[index]


@pytest.mark.parametrize(
    "take, limit, count_requests",
    [
        (lambda v: v.last(), "1", 1),
        (lambda v: v.tail(3), "3", 1),
        (lambda v: v[-4:-1], "3", 1),
        (lambda v: v[-2:-6:-1], "4", 1),
        (lambda v: v.head(5), "5", 1),
        (lambda v: v.page_size(2).head(5), "2", 3),
    ],
)
def test_reads_cost_one_request_per_page_and_no_count(letters, take, limit, count_requests):
    with record_history() as history:
        take(letters.keys())
    assert len(history.requests) == count_requests
    assert all(r.url.params["page[limit]"] == limit for r in history.requests)
    # Nothing asked for the length (a page of 0).
    assert all(r.url.params.get("page[limit]") != "0" for r in history.requests)


def test_positions_from_the_end_are_read_in_reverse_order(letters):
    with record_history() as history:
        assert letters.keys().tail(2) == ["y", "z"]
    (request,) = history.requests
    assert request.url.params["sort"] == "-"
    sorted_view = letters.sort(("color", 1))
    with record_history() as history:
        sorted_view.keys().last()
    assert history.requests[0].url.params["sort"] == "-color,-"


def test_unbounded_slice_lets_the_server_choose_the_page_size(letters):
    with record_history() as history:
        assert letters.keys()[20:] == LETTERS[20:]
    (request,) = history.requests
    assert "page[limit]" not in request.url.params


def test_empty_container(catalog):
    client, _ = catalog
    assert client.keys().head() == [] and client.keys().tail() == []
    with pytest.raises(IndexError):
        client.keys().first()
    with pytest.raises(IndexError):
        client.values().last()


def test_deprecated_indexers_warn(letters):
    with pytest.warns(DeprecationWarning, match="keys\\(\\)"):
        assert letters.keys_indexer[:2] == ["a", "b"]
    with pytest.warns(DeprecationWarning):
        assert [k for k, _ in letters.items_indexer[-1:]] == ["z"]


def test_page_size_must_be_positive(letters):
    with pytest.raises(ValueError):
        letters.keys().page_size(0)


# --- inlined contents ---------------------------------------------------------------------------


def test_inlined_contents_are_listed_without_requests():
    dataset = xarray.Dataset({"t": ("x", numpy.arange(3))}, coords={"x": numpy.arange(3)})
    tree = MapAdapter({"ds": DatasetAdapter.from_dataset(dataset)})
    with Context.from_app(build_app(tree)) as context:
        ds = from_context(context)["ds"]
        with record_history() as history:
            assert list(ds) == ["t", "x"]
            assert ds.keys()[-1] == "x" and len(ds) == 2
        assert not history.requests
        with record_history() as history:
            assert list(ds._keys_slice(0, None, -1, _ignore_inlined_contents=True)) == ["x", "t"]
        assert history.requests


def test_too_wide_a_dataset_is_not_inlined():
    variables = {f"v{i:04}": ("x", numpy.zeros(1)) for i in range(INLINED_CONTENTS_LIMIT + 1)}
    tree = MapAdapter({"ds": DatasetAdapter.from_dataset(xarray.Dataset(variables))})
    with Context.from_app(build_app(tree)) as context:
        ds = from_context(context)["ds"]
        assert ds.item["attributes"]["structure"]["contents"] is None
        assert ds.item["attributes"]["structure"]["count"] == INLINED_CONTENTS_LIMIT + 1
        assert ds.keys()[-1] == f"v{INLINED_CONTENTS_LIMIT:04}"


# --- the server: cursors and sort parameters ----------------------------------------------------


def _fill(client, keys):
    for key in keys:
        client.create_container(key, metadata={"letter": key})


def _walk(client, **params):
    """Every key, following the ``next`` links; also the kinds of link followed."""
    http = client.context.http_client
    keys, kinds, query = [], [], {"page[limit]": 2, **params}
    while True:
        body = http.get(_search_url(client), params=query).json()
        keys += [item["id"] for item in body["data"]]
        link = body["links"]["next"]
        if not link:
            return keys, kinds
        following = parse_qs(urlparse(link).query)
        kind = "page[cursor]" if "page[cursor]" in following else "page[offset]"
        kinds.append(kind)
        query = {"page[limit]": 2, kind: following[kind][0], **params}


def test_default_order_pages_by_cursor_and_metadata_order_by_offset(catalog):
    client, _ = catalog
    _fill(client, ["e", "b", "d", "a", "c"])
    keys, kinds = _walk(client)
    assert keys == ["e", "b", "d", "a", "c"] and set(kinds) == {"page[cursor]"}
    keys, kinds = _walk(client, sort="-")
    assert keys == ["c", "a", "d", "b", "e"] and set(kinds) == {"page[cursor]"}
    keys, kinds = _walk(client, sort="id")
    assert keys == sorted(keys) and set(kinds) == {"page[offset]"}
    keys, _ = _walk(client, sort="-metadata.letter")
    assert keys == sorted(keys, reverse=True)


def test_cursor_pages_do_not_shift_when_children_are_added(catalog):
    client, _ = catalog
    _fill(client, ["a", "b", "c", "d"])
    http = client.context.http_client
    first = http.get(_search_url(client), params={"sort": "-", "page[limit]": 2}).json()
    assert [item["id"] for item in first["data"]] == ["d", "c"]
    client.create_container("e")  # newest first: an offset would now repeat "c"
    cursor = parse_qs(urlparse(first["links"]["next"]).query)["page[cursor]"][0]
    second = http.get(
        _search_url(client), params={"sort": "-", "page[limit]": 2, "page[cursor]": cursor}
    ).json()
    assert [item["id"] for item in second["data"]] == ["b", "a"]
    assert second["links"]["next"] is None


def test_client_slices_follow_cursors(catalog):
    client, _ = catalog
    _fill(client, [f"k{i}" for i in range(7)])
    with record_history() as history:
        assert client.keys().page_size(3)[:] == [f"k{i}" for i in range(7)]
    assert [("page[cursor]" in r.url.params) for r in history.requests] == [False, True, True]


@pytest.mark.parametrize(
    "params, status",
    [
        ({"sort": "-+id"}, 422),
        ({"sort": "a b"}, 422),
        ({"sort": "id,-id"}, 400),
        ({"page[cursor]": "abc"}, 422),
    ],
)
def test_bad_listing_parameters_get_4xx_with_detail(catalog, params, status):
    client, _ = catalog
    response = client.context.http_client.get(_search_url(client), params=params)
    assert response.status_code == status
    assert response.json()["detail"]


def test_cursor_on_a_listing_without_cursors_is_refused(letters):
    response = letters.context.http_client.get(_search_url(letters), params={"page[cursor]": 3})
    assert response.status_code == 400 and response.json()["detail"]


def test_cursor_under_a_metadata_sort_is_refused(catalog):
    client, _ = catalog
    _fill(client, ["a", "b"])
    params = {"page[cursor]": 1, "sort": "letter"}
    response = client.context.http_client.get(_search_url(client), params=params)
    assert response.status_code == 400 and response.json()["detail"]


# --- distinct -----------------------------------------------------------------------------------


def test_distinct_reports_null_counts_when_not_counted(catalog):
    client, _ = catalog
    _fill(client, ["a", "b"])
    client.create_container("c", metadata={"letter": "a"})
    answer = client.distinct("letter", structure_families=True)
    assert answer["metadata"]["letter"] == [
        {"value": "a", "count": None},
        {"value": "b", "count": None},
    ]
    assert answer["structure_families"] == [{"value": "container", "count": None}]
    counted = client.distinct("letter", counts=True)["metadata"]["letter"]
    assert counted == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]


# --- registering through a container client -----------------------------------------------------


def test_register_a_file_and_a_stack(catalog):
    client, files = catalog
    client = client.include_data_sources()
    pandas.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}).to_csv(files / "t.csv", index=False)
    for i in range(3):
        numpy.save(files / f"frame{i}.npy", numpy.full((2, 2), i))
    table = client.register(files / "t.csv", metadata={"x": 1})
    assert table.item["id"] != "t" and table.metadata["x"] == 1
    assert list(table.read()["a"]) == [1, 2]
    stack = client.register(*sorted(files.glob("frame*.npy")), key="stack")
    assert stack.read().shape == (3, 2, 2)
    (source,) = stack.data_sources()
    assert [asset.num for asset in source.assets] == [0, 1, 2]


def test_register_refuses_what_it_cannot_read(catalog):
    client, files = catalog
    with pytest.raises(ValueError):
        client.register()
    (files / "x.unknownext").write_bytes(b"\0")
    with pytest.raises(ValueError):
        client.register(files / "x.unknownext")
    numpy.save(files / "a.npy", numpy.zeros((2, 3)))
    bad = {"data_type": {"endianness": "little", "kind": "f", "itemsize": 8},
           "chunks": [[5], [3]], "shape": [5, 3], "dims": None, "resizable": False}  # fmt: skip
    with pytest.raises(ValueError, match="not compatible"):
        client.register(files / "a.npy", key="bad", structure=bad)
    assert "bad" not in client


async def test_register_a_directory_through_a_client(catalog):
    client, files = catalog
    (files / "sub").mkdir()
    numpy.save(files / "sub" / "one.npy", numpy.arange(3))
    for i in range(2):
        numpy.save(files / f"{i:03}.npy", numpy.full(2, i))  # a sequence with no name
    progress = await register(client, files, prefix="/here")
    assert progress.registered == 2
    here = client["here"]
    assert sorted(here) == sorted([IMG_SEQUENCE_EMPTY_NAME_ROOT, "sub"])
    assert here[IMG_SEQUENCE_EMPTY_NAME_ROOT].read().shape == (2, 2)
    assert list(here["sub"]["one"].read()) == [0, 1, 2]
    # Walking again changes nothing; a vanished file's node goes.
    (files / "sub" / "one.npy").unlink()
    again = await register(client, files, prefix="/here")
    assert again.registered == 0 and again.removed == 1
    assert list(client["here"]["sub"]) == []


def test_register_needs_a_container_client(tmp_path):
    with pytest.raises(TypeError):
        import asyncio

        asyncio.run(register(object(), Path(tmp_path)))

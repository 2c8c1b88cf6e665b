"""The Python client misused, against real servers on loopback: each mistake gives a clear
Python exception (or does what upstream's client does), never a silent wrong result, a server
error or an exception from deep inside a library without a message."""

from __future__ import annotations

import http.server
import io
import threading

import numpy
import pandas
import pyarrow
import pytest

from tiled.client import ASCENDING, DELETE_KEY, from_uri
from tiled.queries import Key
from tiled.server.simple import SimpleTiledServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SimpleTiledServer(tmp_path_factory.mktemp("misuse")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return from_uri(server.uri)


@pytest.fixture
def scratch(client, request):
    """A container of this test's own."""
    return client.create_container(request.node.name[:200])


# --- array indexing ---


@pytest.mark.parametrize(
    "index",
    [True, False, numpy.bool_(True), numpy.array(True), (0, True), (Ellipsis, False)],
    ids=["True", "False", "numpy.bool_", "0-d bool array", "(0, True)", "(..., False)"],
)
def test_boolean_scalar_index_is_refused(scratch, index):
    # Python takes True for 1, so it read row 1 (numpy reads a new axis): a silent wrong result.
    node = scratch.write_array(numpy.arange(24).reshape(4, 6), key="a")
    with pytest.raises(IndexError, match="Boolean"):
        node[index]
    with pytest.raises(IndexError, match="Boolean"):
        node.read(index)
    with pytest.raises(IndexError, match="Boolean"):
        node.export(io.BytesIO(), format="csv", slice=index)


def test_boolean_index_on_dask_client_is_refused(server, scratch):
    scratch.write_array(numpy.arange(6), key="a")
    node = from_uri(server.uri, "dask")[scratch.path_parts[-1]]["a"]
    with pytest.raises(IndexError, match="Boolean"):
        node.read(True)
    mask = numpy.array([True, False] * 3)  # a mask (not a scalar) is dask's to apply
    numpy.testing.assert_array_equal(node.read(mask).compute(), numpy.arange(6)[mask])


def test_negative_block_indices_count_from_the_end(scratch):
    # As upstream's client and server take them; they were refused as off the grid.
    data = numpy.arange(24.0).reshape(4, 6)
    node = scratch.write_array(data, key="a")
    numpy.testing.assert_array_equal(node.read_block((-1, -1)), data)
    numpy.testing.assert_array_equal(node.read_block((numpy.int64(-1), 0)), data)
    node.write_block(-data, (-1, -1))
    numpy.testing.assert_array_equal(node.read(), -data)
    for block in [(1, 0), (-2, 0), (0,), (0, 0, 0)]:
        with pytest.raises(IndexError, match="Block"):
            node.read_block(block)
        with pytest.raises(IndexError, match="Block"):
            node.write_block(data, block)


# --- metadata ---


def test_update_metadata_keeps_keys_set_to_null(scratch):
    # A merge patch reads null as "delete": None and NaN deleted the key (upstream keeps it).
    node = scratch.write_array([1], key="a", metadata={"x": 1, "n": {"p": 1, "q": 2}, "d": 0})
    node.update_metadata({"x": None, "n": {"p": None, "r": float("nan")}, "d": DELETE_KEY})
    assert dict(node.metadata) == {"x": None, "n": {"p": None, "q": 2, "r": None}}
    node.update_metadata({"y": numpy.float64("inf"), "t": numpy.datetime64("NaT")}, specs=["s"])
    assert dict(node.refresh().metadata) == {
        "x": None, "n": {"p": None, "q": 2, "r": None}, "y": None, "t": None,
    }  # fmt: skip
    assert [spec.name for spec in node.specs] == ["s"]
    node.update_metadata({"new": {"a": None, "gone": DELETE_KEY}, "absent": DELETE_KEY})
    assert node.metadata["new"] == {"a": None}
    node.update_metadata({"x": 5})  # without nulls: a merge patch, as before
    assert node.refresh().metadata["x"] == 5


def test_integers_past_64_bits_are_refused(scratch):
    # Stored, such an integer made every later read of the node a 500 (msgpack cannot carry it).
    node = scratch.write_array([1], key="a")
    with pytest.raises(TypeError, match="64-bit"):
        node.update_metadata({"x": 2**70})
    with pytest.raises(TypeError, match="64-bit"):
        scratch.write_array([1], key="b", metadata={"x": [-(2**64)]})
    assert "b" not in scratch
    node.update_metadata({"big": 2**64 - 1, "small": -(2**63)})  # what msgpack carries
    assert scratch["a"].metadata["big"] == 2**64 - 1


@pytest.mark.parametrize("specs", ["xyz", [5], [{"version": "1"}]])
def test_malformed_specs_are_refused(scratch, specs):
    # A string was taken as a spec per letter; others failed inside the Spec class.
    with pytest.raises(ValueError, match="[Ss]pecs"):
        scratch.write_array([1], key="a", specs=specs)
    assert "a" not in scratch
    node = scratch.write_array([1], key="b", specs=["ok"])
    with pytest.raises(ValueError, match="[Ss]pecs"):
        node.update_metadata(specs=specs)
    assert [spec.name for spec in node.refresh().specs] == ["ok"]


# --- tables ---


@pytest.mark.parametrize(
    "column",
    [
        pandas.Series([b"x", b"yz"], dtype=object),
        pandas.Series(["a", "bc"], dtype=object),
        pandas.Series([[1, 2], [3]], dtype=object),
    ],
    ids=["bytes", "object text", "lists"],
)
def test_object_columns_are_written(scratch, column):
    # The schema was read from the frame's empty head, where an object column is Arrow's
    # null type: the server refused the data (400), or failed (500) on object text.
    frame = pandas.DataFrame({"c": column})
    node = scratch.write_dataframe(frame, key="t")
    read = [v if isinstance(v, (str, bytes)) else list(v) for v in node.read()["c"]]
    assert read == column.tolist()


def test_unconvertible_table_makes_no_node(scratch):
    with pytest.raises((pyarrow.ArrowInvalid, pyarrow.ArrowTypeError)):
        scratch.write_dataframe(pandas.DataFrame({"x": [1, "a"]}), key="mixed")
    assert "mixed" not in scratch  # refused before the node was made


def test_multiindex_columns_are_refused(scratch):
    # They reached the server as text "('a', 'b')", which failed there (500).
    columns = pandas.MultiIndex.from_tuples([("a", "b"), ("a", "c")])
    with pytest.raises(ValueError, match="MultiIndex"):
        scratch.write_dataframe(pandas.DataFrame([[1, 2]], columns=columns), key="t")
    assert "t" not in scratch


# --- keys and lookups ---


def test_empty_key_lets_the_server_name_the_node(scratch):
    # As upstream: key="" is no key (the server refused it, 422).
    node = scratch.create_container(key="")
    assert node.item["id"] and node.item["id"] in scratch
    with pytest.raises(TypeError, match="key"):
        scratch.create_container(key=5)


def test_containers_are_indexed_by_text(scratch):
    scratch.create_container("0")
    # c[0] found the key "0" (str() of any key): positions are c.values()[i].
    for key in [0, None, 1.5, b"0", ("0", 0)]:
        with pytest.raises(TypeError, match="indexed by key"):
            scratch[key]
        assert key not in scratch
    # "" and "/" name the container itself, as upstream's client has it.
    assert scratch[""].path_parts == scratch.path_parts
    assert scratch["/"].path_parts == scratch.path_parts
    assert "" in scratch


def test_search_with_something_not_a_query(scratch):
    # It was taken, to fail at the first listing with KeyError(<class 'str'>).
    for query in ["color", None, {"color": "red"}]:
        with pytest.raises(TypeError, match="Not a query"):
            scratch.search(query)


def test_sort_arguments(scratch):
    for n in [2, 0, 1]:
        scratch.create_container(f"k{n}", metadata={"n": n})
    for bad in ["n", ("n",), 1, (1, ASCENDING), ("n", "up")]:
        with pytest.raises(TypeError, match="Sort by"):
            scratch.sort(bad)
    # As upstream: a direction of 0 (or any non-negative) is ascending; it was descending.
    assert list(scratch.sort(("n", 0))) == ["k0", "k1", "k2"]
    assert list(scratch.sort(("n", -5))) == ["k2", "k1", "k0"]
    assert list(scratch.sort(["n", 1]).search(Key("n") >= 1)) == ["k1", "k2"]


# --- servers that are not Tiled's ---


class _NotTiled(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if "json" in self.path:
            body, kind = b'{"hello": "world"}', "application/json"
        else:
            body, kind = b"<html>Welcome</html>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def not_tiled():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTiled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/html", "/json"])
def test_a_server_that_is_not_tiled(not_tiled, path):
    # A web page failed with JSONDecodeError, other JSON with KeyError('data').
    with pytest.raises(ValueError, match="not a Tiled server") as raised:
        from_uri(not_tiled + path)
    assert not_tiled in str(raised.value)


def test_delete_key_from_upstreams_module(scratch):
    # Upstream's update_metadata documentation imports it from here (ModuleNotFoundError).
    from tiled.client.metadata_update import DELETE_KEY as UPSTREAMS

    node = scratch.write_array([1], key="a", metadata={"x": 1, "y": 2})
    node.update_metadata({"x": UPSTREAMS})
    assert dict(node.metadata) == {"y": 2}


def test_lookups_by_something_not_text_or_integer(scratch):
    # A column by int failed inside urllib (quote_from_bytes), a revision by str in a '<'.
    frame = pandas.DataFrame({"x": [2], 0: [1]})  # the column 0 is written as "0"
    table = scratch.write_dataframe(frame, key="t")
    with pytest.raises(TypeError, match="Columns are named by text"):
        table[0]
    assert table["0"].read().tolist() == [1]
    table.update_metadata({"x": 1})
    with pytest.raises(TypeError):
        table.metadata_revisions["x"]
    with pytest.raises(IndexError):
        table.metadata_revisions[-5]
    assert table.metadata_revisions[-1]["attributes"]["metadata"] == {}

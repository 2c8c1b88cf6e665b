"""How the client creates nodes: one request each (the node's client is built from the
server's answer, as upstream's is), and a create whose answer was lost is retried and finds
the node it made (every create names its node, so a retry cannot make a second one), while a
node of the same name made by someone else stays a conflict.

A real server on loopback; a lost answer is the connection closing in the middle of it, after
the server acted on the request (as a proxy that drops a connection does)."""

from __future__ import annotations

import collections
import tempfile

import numpy
import pandas
import pytest

from tiled.catalog import in_memory
from tiled.client import from_uri
from tiled.client.logger import record_history
from tiled.client.utils import ClientError
from tiled.server.app import build_app
from tiled.structures.core import Spec

from .live_server import serve

KEY = "secret"


class CutsAnswers:
    """Passes requests on to ``app``; the answers to the next ``count`` POSTs are cut off
    after their first byte (the server has done the work: the client cannot know it)."""

    def __init__(self, app):
        self.app = app
        self.state = app.state
        self.to_cut = 0
        self.cut = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not self.to_cut:
            return await self.app(scope, receive, send)
        self.to_cut -= 1
        self.cut += 1

        async def cutting(message):
            if message["type"] == "http.response.start":
                await send(message)
            elif message.get("body"):
                await send({**message, "body": message["body"][:1], "more_body": True})
                raise ConnectionAbortedError("the answer is lost")  # the server closes it

        await self.app(scope, receive, cutting)


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as directory:
        tree = in_memory(writable_storage=directory)
        app = CutsAnswers(build_app(tree, authentication={"single_user_api_key": KEY}))
        with serve(app) as live:
            yield live, app


@pytest.fixture
def client(server):
    live, _ = server
    client = from_uri(live.url, api_key=KEY)
    yield client.create_container()
    client.context.close()


def test_a_create_is_one_request(client):
    with record_history() as history:
        array = client.write_array(numpy.arange(6).reshape(2, 3), key="a", metadata={"m": 1})
    assert [r.method for r in history.requests] == ["POST", "PUT"]
    numpy.testing.assert_array_equal(array.read(), numpy.arange(6).reshape(2, 3))
    assert array.metadata == {"m": 1}
    assert array.shape == (2, 3)

    frame = pandas.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    with record_history() as history:
        table = client.write_dataframe(frame, key="t")
    assert [r.method for r in history.requests] == ["POST", "PUT"]
    pandas.testing.assert_frame_equal(table.read(), frame)

    with record_history() as history:
        container = client.create_container("c", specs=[Spec("s", "1")])
    assert [r.method for r in history.requests] == ["POST"]
    assert container.specs == [Spec("s", "1")]
    container.write_array([1, 2], key="inner")
    assert list(container) == ["inner"]
    assert len(container) == 1


def test_the_built_node_is_the_node_the_server_gives(client):
    """What the client built from the answer is what reading the node gives."""
    made = client.write_array(
        numpy.ones((4, 5)), key="x", metadata={"n": numpy.int64(3), "v": numpy.arange(2)},
        specs=["s"], dims=("a", "b"),
    )  # fmt: skip
    read = client["x"]
    assert made.metadata == read.metadata == {"n": 3, "v": [0, 1]}
    assert made.specs == read.specs
    assert made.structure() == read.structure()
    assert made.item["links"] == read.item["links"]
    assert made.item["attributes"]["ancestors"] == read.item["attributes"]["ancestors"]


def test_without_a_key_the_client_names_the_node(client):
    node = client.create_container()
    assert list(client) == [node.item["id"]]
    assert len(node.item["id"]) == 32  # as the server names nodes: a uuid4 in hex


@pytest.mark.parametrize("key", ["named", None])
@pytest.mark.parametrize("family", ["container", "array"])
def test_a_create_whose_answer_was_lost_finds_its_node(server, client, key, family):
    _, app = server
    app.to_cut, cut_before = 1, app.cut
    metadata = {"count": numpy.int64(3), "text": "ü", "nested": {"a": [1.5, None]}}
    if family == "container":
        node = client.create_container(key, metadata=metadata, specs=["s"])
    else:
        node = client.write_array(numpy.arange(4), key=key, metadata=metadata, specs=["s"])
    assert app.cut == cut_before + 1  # the first answer was lost
    assert list(client) == [node.item["id"]]  # one node: the retry made no second one
    if key is not None:
        assert node.item["id"] == key
    assert node.metadata == {"count": 3, "text": "ü", "nested": {"a": [1.5, None]}}
    if family == "container":
        node.create_container("child")
        assert list(node) == ["child"]
    else:
        numpy.testing.assert_array_equal(node.read(), numpy.arange(4))


@pytest.mark.parametrize(
    "theirs",
    [
        {"family": "array", "specs": ["s"], "metadata": {"a": 1}},
        {"family": "container", "specs": ["other"], "metadata": {"a": 1}},
        {"family": "container", "specs": ["s"], "metadata": {"a": 2}},
    ],
    ids=["family", "specs", "metadata"],
)
def test_a_node_someone_else_made_stays_a_conflict(server, client, theirs):
    """After a lost answer, the name taken by a node unlike the one asked for is another
    writer's: the 409 stands (nothing is adopted, nothing changed)."""
    _, app = server
    if theirs["family"] == "array":
        client.write_array([1, 2], key="k", metadata=theirs["metadata"], specs=theirs["specs"])
    else:
        client.create_container("k", metadata=theirs["metadata"], specs=theirs["specs"])
    app.to_cut = 1
    with pytest.raises(ClientError) as info:
        client.create_container("k", metadata={"a": 1}, specs=["s"])
    assert info.value.response.status_code == 409
    assert client["k"].metadata == theirs["metadata"]


def test_a_conflict_without_a_lost_answer_is_raised_as_before(client):
    client.create_container("k", metadata={"a": 1})
    with pytest.raises(ClientError) as info:
        client.create_container("k", metadata={"a": 1})  # the same node: still a conflict
    assert info.value.response.status_code == 409


def test_long_spec_names_are_the_servers_to_refuse(client):
    """As upstream's client: specs of any length are sent; the server refuses past 255
    characters (422), and takes 255."""
    client.write_array([1], key="ok", specs=["a" * 255])
    with pytest.raises(ClientError) as info:
        client.write_array([1], specs=["a" * 256])
    assert info.value.response.status_code == 422
    with pytest.raises(ClientError) as info:
        client["ok"].update_metadata(specs=[Spec("a" * 256)])
    assert info.value.response.status_code == 422
    assert list(client) == ["ok"]


def test_metadata_may_be_any_mapping(client):
    node = client.create_container("m", metadata=collections.ChainMap({"a": 1}, {"b": 2}))
    assert node.metadata == {"a": 1, "b": 2}
    node.update_metadata(metadata=collections.ChainMap({"a": 3}, {"c": 4}))
    assert client["m"].metadata == {"a": 3, "b": 2, "c": 4}
    with pytest.raises(ValueError, match="Metadata must be a dict"):
        client.create_container("n", metadata=[("a", 1)])


def test_a_storage_format_the_server_cannot_write_is_415(client):
    """As upstream's: the data source asks for a mimetype no writer stores (nothing made)."""
    from tiled.structures.data_source import DataSource
    from tiled.structures.table import TableStructure

    frame = pandas.DataFrame({"a": [1, 2]})
    source = DataSource("table", TableStructure.from_pandas(frame), mimetype="application/x-nope")
    with pytest.raises(ClientError) as info:
        client.new("table", [source], key="nope")
    assert info.value.response.status_code == 415
    assert "application/x-parquet" in info.value.response.json()["detail"]
    assert list(client) == []

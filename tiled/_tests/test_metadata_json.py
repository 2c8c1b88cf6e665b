"""One value of metadata reads the same on every route that emits it (tiled.structures.json).

Metadata holding NaN, infinities, numpy scalars and arrays, datetimes and bytes is rendered
through /api/v1/metadata and /search (JSON and msgpack), the zarr attributes (.zattrs,
zarr.json, consolidated), the JSON export, and a catalog's round trip (stored by the server,
sent by the client): every route gives the same values, the ones the rule names. msgpack keeps
NaN and infinities (as upstream's does: its client reads NaN metadata back as NaN), which JSON
writes null: what msgpack gives, written as JSON by the rule, is what the JSON routes give.
"""

from __future__ import annotations

import datetime
import math

import httpx
import msgpack
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.catalog import in_memory
from tiled.client import from_context
from tiled.client.context import Context
from tiled.server.app import build_app
from tiled.structures.json import dumps, refuse, to_document_value, to_json_value


def awkward_metadata() -> dict:
    return {
        "nan": float("nan"),
        "inf": float("inf"),
        "minus_inf": -math.inf,
        "float32": numpy.float32(1.5),
        "float64_nan": numpy.float64("nan"),
        "int64": numpy.int64(7),
        "bool_": numpy.bool_(True),
        "floats": numpy.array([1.0, numpy.nan, numpy.inf]),
        "ints": numpy.arange(3),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "day": datetime.date(2024, 1, 2),
        "datetime64": numpy.datetime64("2024-01-02T03:04:05"),
        "raw": b"\x00\x01",
        "nested": {"values": [math.nan, numpy.float64(2.5), (1, 2)], "text": "plain"},
    }


# The rule, spelled out (not computed by the code under test).
EXPECTED = {
    "nan": None,
    "inf": None,
    "minus_inf": None,
    "float32": 1.5,
    "float64_nan": None,
    "int64": 7,
    "bool_": True,
    "floats": [1.0, None, None],
    "ints": [0, 1, 2],
    "when": "2024-01-02T03:04:05",
    "day": "2024-01-02",
    "datetime64": "2024-01-02T03:04:05",
    "raw": "data:application/octet-stream;base64,AAE=",
    "nested": {"values": [None, 2.5, [1, 2]], "text": "plain"},
}
MSGPACK = {"Accept": "application/x-msgpack"}
PUBLIC = {"allow_anonymous_access": True}


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "standard-library"])
def test_the_rule_and_its_fallbacks(monkeypatch, orjson):
    import json

    from tiled.structures import json as rule

    if not orjson:  # as on a client installed without the server's dependencies
        monkeypatch.setattr(rule, "_orjson", lambda: None)
    assert to_json_value(awkward_metadata()) == EXPECTED
    assert json.loads(dumps(awkward_metadata())) == EXPECTED
    assert to_json_value(EXPECTED) == EXPECTED  # what went through it goes through unchanged
    assert to_json_value({1: object, numpy.int64(2): 2**70}) == {"1": str(object), "2": 2**70}
    with pytest.raises(TypeError):
        dumps({"x": object()}, refuse)  # stored or sent: refused
    with pytest.raises(TypeError):
        to_json_value({"x": [object()]}, refuse)
    # For documents sent as JSON or msgpack: the same, non-finite floats kept as floats.
    document = to_document_value(awkward_metadata())
    assert to_json_value(document) == EXPECTED and math.isnan(document["nan"])
    plain = {"a": [1, 2.5, math.inf], "b": {"c": None}}
    assert to_document_value(plain) == plain
    if orjson:
        assert to_document_value(plain) is plain  # plain already: given back as it is


def unpacked(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/x-msgpack"
    return msgpack.unpackb(response.content, timestamp=3)  # as the client reads it


async def rendered_everywhere(client: httpx.AsyncClient, path: str) -> dict[str, dict]:
    """The metadata of the node at ``path`` (a child of the root) as each route renders it."""

    async def get(url: str, **kwargs) -> httpx.Response:
        response = await client.get(url, **kwargs)
        assert response.status_code == 200, (url, response.text)
        return response

    key = path.rpartition("/")[2]
    parent = path.rpartition("/")[0]
    found: dict[str, dict] = {}
    found["metadata json"] = (await get(f"/api/v1/metadata/{path}")).json()
    found["metadata msgpack"] = unpacked(await get(f"/api/v1/metadata/{path}", headers=MSGPACK))
    for name, response in [
        ("search json", (await get(f"/api/v1/search/{parent}")).json()),
        ("search msgpack", unpacked(await get(f"/api/v1/search/{parent}", headers=MSGPACK))),
    ]:
        (entry,) = [item for item in response["data"] if item["id"] == key]
        found[name] = entry
    found = {name: doc.get("data", doc)["attributes"]["metadata"] for name, doc in found.items()}
    found["zarr v2 .zattrs"] = (await get(f"/zarr/v2/{path}/.zattrs")).json()
    found["zarr v3 zarr.json"] = (await get(f"/zarr/v3/{path}/zarr.json")).json()["attributes"]
    consolidated = (await get(f"/zarr/v3/{parent}/zarr.json")).json()["consolidated_metadata"]
    found["zarr v3 consolidated"] = consolidated["metadata"][key]["attributes"]
    zmetadata = (await get(f"/zarr/v2/{parent}/.zmetadata")).json()["metadata"]
    found["zarr v2 consolidated"] = zmetadata[f"{key}/.zattrs"]
    export = (await get(f"/api/v1/container/full/{parent}", params={"format": "json"})).json()
    found["json export"] = export["contents"][key]["metadata"]
    return found


def assert_all_expected(found: dict[str, dict], non_finite_kept: bool) -> None:
    differing = {
        name: value
        for name, value in found.items()
        if (to_json_value(value) if "msgpack" in name else value) != EXPECTED
    }
    assert not differing, differing
    for name in (name for name in found if "msgpack" in name):
        values = found[name]
        if non_finite_kept:
            assert math.isnan(values["nan"]) and math.isnan(values["float64_nan"]), name
            assert (values["inf"], values["minus_inf"]) == (math.inf, -math.inf), name
            first, nan, infinity = values["floats"]
            assert (first, infinity) == (1.0, math.inf) and math.isnan(nan), name
        else:  # stored in a catalog, they are null (JSON) before any route reads them
            assert values == EXPECTED, name


@pytest.mark.parametrize("kind", ["array", "container"])
async def test_in_memory_metadata_reads_the_same_on_every_route(kind):
    node = (
        ArrayAdapter.from_array(numpy.arange(3), metadata=awkward_metadata())
        if kind == "array"
        else MapAdapter({}, metadata=awkward_metadata())
    )
    app = build_app(MapAdapter({"lab": MapAdapter({"node": node})}), authentication=PUBLIC)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert_all_expected(await rendered_everywhere(client, "lab/node"), non_finite_kept=True)


async def test_catalog_round_trip_reads_the_same_on_every_route(tmp_path):
    from tiled.structures.array import ArrayStructure
    from tiled.structures.data_source import DataSource

    tree = in_memory(writable_storage=tmp_path)
    lab = await tree.create_node(key="lab", structure_family="container", metadata={})
    # Stored in-process: the catalog writes the metadata by the rule.
    await lab.create_node(key="stored", structure_family="container",
                          metadata=awkward_metadata())  # fmt: skip
    assert (await tree.lookup_adapter(["lab", "stored"])).metadata() == EXPECTED
    structure = ArrayStructure.from_array(numpy.arange(3))
    array = await lab.create_node(
        key="array", structure_family="array", metadata=awkward_metadata(),
        data_sources=[DataSource(structure_family="array", structure=structure)],
    )  # fmt: skip
    await array.write(numpy.arange(3))
    app = build_app(tree, authentication=PUBLIC)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        for path in ("lab/stored", "lab/array"):
            assert_all_expected(await rendered_everywhere(client, path), non_finite_kept=False)
    await tree.shutdown()


def test_client_sends_metadata_by_the_rule(tmp_path):
    tree = in_memory(writable_storage=tmp_path)
    with Context.from_app(build_app(tree)) as context:
        client = from_context(context)
        lab = client.create_container("lab", metadata=awkward_metadata())
        written = lab.write_array(numpy.arange(3), key="array", metadata=awkward_metadata())
        assert dict(lab.metadata) == EXPECTED
        assert dict(written.metadata) == EXPECTED
        assert dict(client["lab"]["array"].metadata) == EXPECTED
        with pytest.raises(TypeError):
            lab.update_metadata(metadata={"x": object()})

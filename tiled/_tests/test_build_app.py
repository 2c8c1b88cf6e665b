"""What ``build_app`` builds: one typed application state, and the registries it is given."""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.query_registration import QueryRegistry, default_query_registry
from tiled.serialization import (
    DeserializationRegistry,
    SerializationRegistry,
    default_deserialization_registry,
    default_serialization_registry,
    register_default_decoders,
    register_defaults,
)
from tiled.server.app import build_app
from tiled.server.compression import CompressionRegistry, default_compression_registry
from tiled.server.state import TiledState
from tiled.structures.array import ArrayStructure, data_type_from_numpy
from tiled.structures.core import Spec, StructureFamily
from tiled.validation_registration import (
    ValidationError,
    ValidationRegistry,
    default_validation_registry,
)


def _tree() -> MapAdapter:
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})


def test_the_state_is_one_frozen_object_with_upstreams_names_alongside():
    tree = _tree()
    app = build_app(tree, authentication={"single_user_api_key": "secret"})
    state = app.state.tiled
    assert isinstance(state, TiledState)
    assert state.root_tree is tree and state.access_policy is None
    assert state.authenticator.api_key == "secret" and state.authenticated
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.root_tree = MapAdapter({})
    # Upstream's applications expose these three; its tests and deployments read them.
    assert app.state.root_tree is tree
    assert app.state.access_policy is None
    assert app.state.authenticated is True
    public = build_app(tree, authentication={"allow_anonymous_access": True})
    assert public.state.authenticated is public.state.tiled.authenticated is False


# --- the registries build_app is given ------------------------------------------------------

API_KEY = {"Authorization": "Apikey secret"}


@contextlib.asynccontextmanager
async def _client(app) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app``, inside its lifespan (a catalog opens at startup)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=API_KEY
        ) as client:
            yield client


def _app(tree, **registries) -> Any:
    return build_app(tree, authentication={"single_user_api_key": "secret"}, **registries)


async def test_a_given_serialization_registry_encodes_data_and_the_default_is_untouched():
    def as_words(array, metadata):
        return " ".join(f"<{value}>" for value in array.tolist()).encode()

    registry = register_defaults(SerializationRegistry())
    registry.register("array", "text/x-words", as_words)
    registry.register_alias("words", "text/x-words")
    async with _client(_app(_tree(), serialization_registry=registry)) as client:
        response = await client.get("/api/v1/array/full/x", params={"format": "words"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/x-words")
        assert response.text == " ".join(f"<{i}>" for i in range(10))
        # The default encoders are there too, and /api/v1/ lists what this app offers.
        as_json = await client.get("/api/v1/array/full/x", params={"format": "json"})
        assert as_json.json() == list(range(10))
        assert "text/x-words" in (await client.get("/api/v1/")).json()["formats"]["array"]
    assert "text/x-words" not in default_serialization_registry.media_types("array")
    async with _client(_app(_tree())) as client:
        refused = await client.get("/api/v1/array/full/x", params={"format": "text/x-words"})
        assert refused.status_code == 406 and "detail" in refused.json()


class _NearTree(MapAdapter):
    """A MapAdapter class of its own, so that its query function stays in this test."""


@dataclasses.dataclass(frozen=True)
class Near:
    """Children whose metadata ``x`` lies within 1 of ``value``."""

    value: float

    def encode(self) -> dict[str, str]:
        return {"value": str(self.value)}

    @classmethod
    def decode(cls, *, value: str) -> Near:
        return cls(float(value))


_NearTree.register_query(
    Near,
    lambda query, tree: tree.new_variation(
        mapping={
            key: child
            for key, child in tree.items()
            if abs(child.metadata().get("x", float("inf")) - query.value) <= 1
        }
    ),
)


async def test_a_given_query_registry_decodes_search_filters():
    tree = _NearTree(
        {
            name: ArrayAdapter.from_array(numpy.zeros(1), metadata={"x": x})
            for name, x in {"a": 1.0, "b": 5.0, "c": 5.5}.items()
        }
    )
    registry = QueryRegistry()
    registry.register(name="near")(Near)
    params = registry.encode_params(Near(5.2))
    async with _client(_app(tree, query_registry=registry)) as client:
        found = (await client.get("/api/v1/search/", params=params)).json()
        assert sorted(item["id"] for item in found["data"]) == ["b", "c"]
        assert (await client.get("/api/v1/")).json()["queries"] == ["near"]
    assert "near" not in default_query_registry.names
    async with _client(_app(tree)) as client:
        # The default registry does not know the name: the filter is ignored, as upstream's.
        everything = (await client.get("/api/v1/search/", params=params)).json()
        assert len(everything["data"]) == 3


def _writable_tree(tmp_path) -> Any:
    from tiled.catalog import in_memory

    return in_memory(writable_storage=[str(tmp_path / "data")])


def _array_node(key: str, shape: tuple[int, ...]) -> dict[str, Any]:
    structure = ArrayStructure(
        data_type_from_numpy(numpy.dtype("<f8")), tuple((n,) for n in shape), shape
    )
    source = {"structure_family": "array", "structure": structure.to_json(), "assets": []}
    return {"id": key, "structure_family": "array", "metadata": {}, "data_sources": [source]}


async def test_a_given_deserialization_registry_reads_the_bodies_of_writes(tmp_path):
    def from_csv(body: bytes, dtype: Any, shape: tuple[int, ...]) -> numpy.ndarray:
        values = [float(item) for item in body.decode().split(",")]
        return numpy.asarray(values, dtype=dtype).reshape(shape)

    registry = register_default_decoders(DeserializationRegistry())
    registry.register("array", "text/csv", from_csv)
    csv = {"Content-Type": "text/csv"}
    async with _client(_app(_writable_tree(tmp_path), deserialization_registry=registry)) as client:
        created = await client.post("/api/v1/metadata/", json=_array_node("x", (3,)))
        assert created.status_code == 200
        written = await client.put("/api/v1/array/full/x", content=b"1,2,3", headers=csv)
        assert written.status_code == 200
        read = (await client.get("/api/v1/array/full/x", params={"format": "json"})).json()
        assert read == [1.0, 2.0, 3.0]
        # The built-in decoders stay (raw bytes), and a body the decoder cannot read is a 400.
        raw = numpy.arange(3.0).tobytes()
        assert (await client.put("/api/v1/array/full/x", content=raw)).status_code == 200
        bad = await client.put("/api/v1/array/full/x", content=b"1,two,3", headers=csv)
        assert bad.status_code == 400 and "text/csv" in bad.json()["detail"]
    assert "text/csv" not in default_deserialization_registry.media_types("array")
    async with _client(_app(_writable_tree(tmp_path))) as client:
        await client.post("/api/v1/metadata/", json=_array_node("x", (3,)))
        refused = await client.put("/api/v1/array/full/x", content=b"1,2,3", headers=csv)
        assert refused.status_code == 415 and "text/csv" in refused.json()["detail"]


async def test_a_given_compression_registry_compresses_response_bodies():
    tree = MapAdapter({"zeros": ArrayAdapter.from_array(numpy.zeros(10_000))})
    deflate = CompressionRegistry()
    deflate.register("application/octet-stream", "deflate", zlib.compress)
    url = "/api/v1/array/full/zeros"
    async with _client(_app(tree, compression_registry=deflate)) as client:
        response = await client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
        assert response.headers["content-encoding"] == "deflate"
        assert numpy.frombuffer(response.content, "<f8").tolist() == [0.0] * 10_000
        # Nothing is registered for JSON in this registry: JSON goes uncompressed.
        as_json = await client.get(
            url, params={"format": "json"}, headers={"Accept-Encoding": "gzip"}
        )
        assert "content-encoding" not in as_json.headers
    async with _client(_app(tree, compression_registry=CompressionRegistry())) as client:
        plain = await client.get(url, headers={"Accept-Encoding": "gzip, zstd"})
        assert "content-encoding" not in plain.headers
    async with _client(_app(tree)) as client:
        default = await client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
        assert default.headers["content-encoding"] == "gzip"
    assert default_compression_registry.encodings("application/octet-stream") == ["zstd", "gzip"]


def _lower_case_keys(spec, metadata, entry, structure_family, structure):
    if "foo" not in {key.lower() for key in metadata}:
        raise ValidationError("metadata must contain foo")
    if structure_family is not None and structure_family != StructureFamily.container:
        raise ValidationError(f"must be a container, not {structure_family.value}")
    if any(key != key.lower() for key in metadata):
        return {key.lower(): value for key, value in metadata.items()}
    return None


async def _no_bar_in_updates(spec, metadata, entry, structure_family, structure):
    if entry is not None and "bar" in metadata and "bar" not in entry.metadata():
        raise ValidationError("bar may not be added later")


async def test_a_given_validation_registry_validates_specs(tmp_path):
    registry = ValidationRegistry()
    registry.register("foo", _lower_case_keys)
    registry.register(Spec("strict", "2"), _no_bar_in_updates)
    app = _app(_writable_tree(tmp_path), validation_registry=registry)

    async def create(key, metadata, specs, family="container"):
        body = {"id": key, "structure_family": family, "metadata": metadata, "specs": specs}
        if family == "array":
            body = {**_array_node(key, (2,)), "metadata": metadata, "specs": specs}
        return await client.post("/api/v1/metadata/", json=body)

    async with _client(app) as client:
        refused = await create("a", {"bar": 1}, ["foo"])
        assert refused.status_code == 400
        assert refused.json()["detail"] == (
            "failed validation for the foo spec:\nmetadata must contain foo"
        )
        wrong_family = await create("b", {"foo": 1}, ["foo"], family="array")
        assert wrong_family.status_code == 400 and "not array" in wrong_family.json()["detail"]
        # A validator's change is stored and reported, as upstream does.
        created = await create("c", {"FOO": 1, "Other": 2}, ["foo"])
        assert created.status_code == 200
        assert created.json()["metadata"] == {"foo": 1, "other": 2}
        stored = (await client.get("/api/v1/metadata/c")).json()["data"]["attributes"]["metadata"]
        assert stored == {"foo": 1, "other": 2}
        # Updates are validated too (the validator sees the node); async validators work.
        without_foo = await client.put("/api/v1/metadata/c", json={"metadata": {"x": 1}})
        assert without_foo.status_code == 400
        renamed = await client.put("/api/v1/metadata/c", json={"metadata": {"FOO": 3}})
        assert renamed.status_code == 200 and renamed.json()["metadata"] == {"foo": 3}
        strict = [{"name": "strict", "version": "2"}]
        assert (await create("d", {"bar": 1}, strict)).status_code == 200
        patch = {"content-type": "application/merge-patch+json", "metadata": {"bar": 2}}
        assert (await client.patch("/api/v1/metadata/d", json=patch)).status_code == 200
        assert (await create("e", {}, strict)).status_code == 200
        refused_patch = await client.patch("/api/v1/metadata/e", json=patch)
        assert refused_patch.status_code == 400
        assert "bar may not be added later" in refused_patch.json()["detail"]
        # A spec nobody declared passes (reject_undeclared_specs is off by default).
        assert (await create("f", {}, ["unknown"])).status_code == 200
    assert "foo" not in default_validation_registry


async def test_undeclared_specs_are_refused_when_the_settings_say_so(tmp_path):
    registry = ValidationRegistry()
    registry.register("known", lambda *args: None)
    app = build_app(
        _writable_tree(tmp_path),
        authentication={"single_user_api_key": "secret"},
        server_settings={"reject_undeclared_specs": True},
        validation_registry=registry,
    )
    async with _client(app) as client:
        body = {"structure_family": "container", "metadata": {}}
        known = await client.post("/api/v1/metadata/", json={**body, "specs": ["known"]})
        assert known.status_code == 200
        refused = await client.post("/api/v1/metadata/", json={**body, "specs": ["other"]})
        assert refused.status_code == 400
        assert refused.json()["detail"] == "Unrecognized spec: other"


def test_the_registries_keep_upstreams_lookups():
    validators = ValidationRegistry()
    check = validators.register(Spec("foo"), lambda *args: None)
    # A bare name is the spec without a version, both ways.
    assert "foo" in validators and Spec("foo") in validators and Spec("foo", "1") not in validators
    assert validators("foo") is validators.dispatch(Spec("foo")) is check
    with pytest.raises(ValueError):
        validators.dispatch("bar")
    decoders = DeserializationRegistry()

    @decoders.register(StructureFamily.table, "text/csv")
    def from_csv(body):
        return body

    assert decoders.dispatch("table", "TEXT/CSV") is from_csv
    with pytest.raises(ValueError):
        decoders.dispatch("array", "text/csv")
    compressors = CompressionRegistry()
    compressors.register("text/csv", "deflate", zlib.compress)
    assert compressors.dispatch("text/csv", "deflate") is zlib.compress
    assert compressors.choose("text/csv", {"gzip"}) is None


def needs_title(spec, metadata, entry, structure_family, structure):
    """A spec validator named by import path in a configuration (below)."""
    if "title" not in metadata:
        raise ValidationError("a title is required")


async def test_a_configuration_declares_specs_and_their_validators(tmp_path):
    from tiled.server.app import build_app_from_config

    config = {
        "trees": [
            {
                "path": "/",
                "tree": "tiled.catalog:in_memory",
                "args": {"writable_storage": str(tmp_path / "data")},
            }
        ],
        "authentication": {"single_user_api_key": "secret"},
        "specs": [{"spec": "titled", "validator": f"{__name__}:needs_title"}, {"spec": "plain"}],
        "reject_undeclared_specs": True,
    }
    body = {"structure_family": "container", "metadata": {}}
    async with _client(build_app_from_config(config)) as client:
        untitled = await client.post("/api/v1/metadata/", json={**body, "specs": ["titled"]})
        assert untitled.status_code == 400 and "a title is required" in untitled.json()["detail"]
        titled = {**body, "metadata": {"title": "t"}, "specs": ["titled", "plain"]}
        assert (await client.post("/api/v1/metadata/", json=titled)).status_code == 200
        other = await client.post("/api/v1/metadata/", json={**body, "specs": ["other"]})
        assert other.status_code == 400 and other.json()["detail"] == "Unrecognized spec: other"


def test_allowed_origins_no_browser_sends_are_warned_of(caplog):
    tree = MapAdapter({})
    origins = ["https://a.example", "http://b.example:8080", "*", "https://c.example/", "x"]
    with caplog.at_level("WARNING", logger="tiled.server.app"):
        build_app(tree, server_settings={"allow_origins": origins})
    warned = [r.getMessage() for r in caplog.records if "allow_origins" in r.getMessage()]
    assert len(warned) == 2
    assert "'https://c.example/'" in warned[0] and "'x'" in warned[1]

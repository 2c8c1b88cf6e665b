"""Server-side behaviour upstream Tiled 0.2.20 has and its tests rely on: scopes without an
access policy, deep variations of catalogs, reshaped and cast registrations, batched sequence
reads, CORS, the OpenAPI document and the ``tiled serve`` startup lines."""

from __future__ import annotations

import re
import threading

import httpx
import numpy
import pandas
import pyarrow
import pytest
import tifffile

from tiled.adapters import sequence
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.tiff import TiffSequenceAdapter
from tiled.catalog import in_memory
from tiled.catalog.adapter import CatalogNodeAdapter, slice_by_offset
from tiled.client import Context, from_context
from tiled.config import Authentication
from tiled.errors import Unsupported
from tiled.server.app import build_app
from tiled.structures.table import TableStructure

from .live_server import serve
from .processes import running_tiled

USERS = {"alice": "secret1", "bob": "secret2"}


def _multi_user(**overrides) -> Authentication:
    return Authentication(
        providers=[
            {
                "provider": "toy",
                "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                "args": {"users_to_passwords": USERS},
            }
        ],
        secret_keys=["0123456789abcdef0123456789abcdef"],
        tiled_admins=[{"provider": "toy", "id": "alice"}],
        **overrides,
    )


def _api_key(client: httpx.Client, user: str, scopes: list[str]) -> str:
    tokens = client.post(
        "/api/v1/auth/provider/toy/token", data={"username": user, "password": USERS[user]}
    ).json()
    response = client.post(
        "/api/v1/auth/apikey",
        json={"scopes": scopes},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["secret"]


# --- scopes without an access policy ----------------------------------------------------------


def test_read_data_scope_alone_reads_data_without_a_policy():
    """Without an access policy nothing is hidden: a key with read:data only reads data (as
    upstream's), and is refused (401) on a route needing read:metadata."""
    tree = MapAdapter({"A1": ArrayAdapter.from_array(numpy.arange(5))})
    app = build_app(tree, authentication=_multi_user())
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        key = {"Authorization": f"Apikey {_api_key(client, 'bob', ['read:data'])}"}
        response = client.get("/api/v1/array/full/A1", headers=key)
        assert response.status_code == 200, response.text
        assert client.get("/api/v1/metadata/A1", headers=key).status_code == 401
        assert client.get("/api/v1/array/full/nothing", headers=key).status_code == 404
        assert client.get("/api/v1/array/full/A1").status_code == 401  # no key at all


# --- tiled.catalog.adapter ------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset, limit, page, following",
    [
        (2, None, [3, 4, 5], None),
        (0, 3, [1, 2, 3], 3),
        (0, 5, [1, 2, 3, 4, 5], None),  # an exact fit: no empty page after it
        (4, 3, [5], None),
        (9, 2, [], None),
    ],
)
def test_slice_by_offset(offset, limit, page, following):
    assert slice_by_offset(iter([1, 2, 3, 4, 5]), offset, limit) == (page, following)


def test_slice_by_offset_refuses_negative_bounds():
    with pytest.raises(ValueError):
        slice_by_offset([1, 2], offset=-1)


# --- deep variations --------------------------------------------------------------------------


@pytest.fixture
def nested_catalog(tmp_path):
    """outside; a/{inside, b/{deep}}, each with metadata m naming it."""
    catalog = in_memory(writable_storage=tmp_path / "data")
    with Context.from_app(build_app(catalog)) as context:
        client = from_context(context)
        client.write_array(numpy.ones(2), key="outside", metadata={"m": "outside"})
        a = client.create_container("a", metadata={"m": "a"})
        a.write_array(numpy.ones(2), key="inside", metadata={"m": "inside", "n": 1})
        b = a.create_container("b", metadata={"m": "b"})
        b.write_array(numpy.ones(2), key="deep", metadata={"m": "deep", "n": 2})
        yield catalog


async def test_search_deep_counts_and_distinct_cover_the_subtree(nested_catalog):
    from tiled.queries import Key

    a = await nested_catalog.lookup_adapter(["a"])
    assert isinstance(a, CatalogNodeAdapter)
    deep = a.search_deep()
    assert await deep.count() == 3
    distinct = await deep.get_distinct(["m"], True, False, True)
    values = sorted((d["value"], d["count"]) for d in distinct["metadata"]["m"])
    assert values == [("b", 1), ("deep", 1), ("inside", 1)]
    assert sorted(d["value"] for d in distinct["structure_families"]) == ["array", "container"]
    # Searches narrow the whole subtree; max_depth bounds it.
    assert await deep.search(Key("n") == 2).count() == 1
    assert await a.search_deep(max_depth=1).count() == 2
    # The node itself stays a listing of its children.
    assert await a.count() == 2
    # A descendant's key alone does not say where it is: keys are refused, items come
    # under their paths.
    with pytest.raises(Unsupported):
        await deep.keys_range()
    assert [key for key, _ in await deep.items_range()] == ["inside", "b", "b/deep"]


# --- registration with a declared structure ---------------------------------------------------


@pytest.fixture
def registering(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    tifffile.imwrite(files / "image.tif", numpy.arange(12, dtype="uint16").reshape(3, 4))
    pandas.DataFrame(numpy.arange(6).reshape(3, 2)).to_csv(
        files / "grid.csv", index=False, header=False
    )
    catalog = in_memory(writable_storage=tmp_path / "data", readable_storage=[files])
    app = build_app(catalog, authentication={"single_user_api_key": "secret"})
    headers = {"Authorization": "Apikey secret"}
    with serve(app) as server, httpx.Client(base_url=server.url, headers=headers) as client:
        yield client, files


def _register(client, key, path, mimetype, structure) -> httpx.Response:
    body = {
        "id": key,
        "structure_family": "array",
        "metadata": {},
        "specs": [],
        "data_sources": [
            {
                "structure_family": "array",
                "structure": structure,
                "mimetype": mimetype,
                "parameters": {},
                "properties": {},
                "management": "external",
                "assets": [
                    {
                        "data_uri": f"file://localhost{path}",
                        "is_directory": False,
                        "parameter": "data_uris",
                        "num": 0,
                    }
                ],
            }
        ],
    }
    return client.post("/api/v1/register/", json=body)


def _structure(dtype: str, shape: tuple[int, ...]) -> dict:
    from tiled.structures.array import ArrayStructure

    return ArrayStructure.from_array(numpy.zeros(shape, dtype=dtype)).to_json()


def test_registration_may_reshape_files_of_the_same_size(registering):
    client, files = registering
    tiff = "image/tiff"
    response = _register(
        client, "reshaped", files / "image.tif", tiff, _structure("uint16", (2, 6))
    )
    assert response.status_code == 200, response.text
    data = client.get("/api/v1/array/full/reshaped", params={"format": "application/json"})
    assert data.json() == numpy.arange(12).reshape(2, 6).tolist()
    # Upstream's record of the file's own chunking, by which its servers read the file.
    (source,) = client.get(
        "/api/v1/metadata/reshaped", params={"include_data_sources": True}
    ).json()["data"]["attributes"]["data_sources"]
    assert source["properties"]["chunks"] == [[3], [4]]


@pytest.mark.parametrize(
    "name, structure, named",
    [
        ("count", _structure("uint16", (2, 7)), "elements"),
        ("dtype", _structure("float64", (3, 4)), "data type"),
    ],
)
def test_registration_refuses_what_the_files_cannot_serve(registering, name, structure, named):
    client, files = registering
    response = _register(client, name, files / "image.tif", "image/tiff", structure)
    assert response.status_code == 400, response.text
    assert "not compatible" in response.json()["detail"] and named in response.json()["detail"]
    assert client.get(f"/api/v1/metadata/{name}").status_code == 404


def test_csv_array_registration_casts_to_the_declared_type(registering):
    client, files = registering
    csv = "text/csv;header=absent"
    response = _register(client, "grid", files / "grid.csv", csv, _structure("uint8", (3, 2)))
    assert response.status_code == 200, response.text
    data = client.get("/api/v1/array/full/grid", params={"format": "application/octet-stream"})
    assert numpy.frombuffer(data.content, "uint8").tolist() == list(range(6))
    # A CSV array may cast, not reshape.
    response = _register(client, "flat", files / "grid.csv", csv, _structure("int64", (6,)))
    assert response.status_code == 400 and "shape" in response.json()["detail"]


def test_table_structure_from_schema_and_compatibility():
    schema = pyarrow.schema([("a", pyarrow.int64()), ("b", pyarrow.float64())])
    structure = TableStructure.from_schema(schema, npartitions=2)
    assert structure.columns == ["a", "b"] and structure.npartitions == 2
    renamed = TableStructure.from_arrays([pyarrow.array([1]), pyarrow.array([1.0])], ["x", "y"])
    assert structure.is_compatible(renamed)  # names and partitions may differ, types not
    assert not structure.is_compatible(TableStructure.from_dict({"a": [1], "b": ["s"]}))
    assert not structure.is_compatible(TableStructure.from_schema(schema.remove(1)))


# --- batched reads of file sequences --------------------------------------------------------


def test_sequence_reads_bound_their_threads_by_read_batch_bytes(tmp_path, monkeypatch):
    frames = numpy.arange(6 * 5 * 7, dtype="uint16").reshape(6, 5, 7)
    uris = []
    for i, frame in enumerate(frames):
        tifffile.imwrite(tmp_path / f"f{i}.tif", frame)
        uris.append(f"file://localhost{tmp_path}/f{i}.tif")
    adapter = TiffSequenceAdapter.from_uris(*uris)
    threads: set[int] = set()
    original = sequence.FrameReader.read

    def recording(self, region):
        threads.add(threading.get_ident())
        return original(self, region)

    monkeypatch.setattr(sequence.FrameReader, "read", recording)
    monkeypatch.setattr(sequence, "READ_BATCH_BYTES", 1)  # less than one frame: one at a time
    numpy.testing.assert_array_equal(adapter.read(), frames)
    assert threads == {threading.get_ident()}
    monkeypatch.setattr(sequence, "READ_BATCH_BYTES", 1 << 30)
    threads.clear()
    numpy.testing.assert_array_equal(adapter.read(), frames)
    assert threading.get_ident() not in threads  # a generous budget reads on a pool


# --- CORS and the OpenAPI document ------------------------------------------------------------

PREFLIGHT = {"Access-Control-Request-Method": "GET", "Origin": "https://example.com"}


@pytest.mark.parametrize("allowed, status", [(None, 400), (["https://example.com"], 200)])
def test_cors_preflight(allowed, status):
    settings = {"allow_origins": allowed} if allowed else None
    app = build_app(MapAdapter({}), server_settings=settings)
    with serve(app) as server:
        response = httpx.options(f"{server.url}/api/v1/", headers=PREFLIGHT)
    assert response.status_code == status


def test_openapi_names_a_token_url_among_its_paths():
    with serve(build_app(MapAdapter({}), authentication=_multi_user())) as server:
        document = httpx.get(f"{server.url}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    token_url = schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"]
    assert token_url == "/api/v1/auth/provider/toy/token"
    assert "post" in document["paths"][token_url]
    assert schemes["APIKeyQuery"] == {"type": "apiKey", "in": "query", "name": "api_key"}


# --- tiled serve ------------------------------------------------------------------------------


def test_serve_port_zero_logs_the_bound_port(tmp_path):
    """Upstream's tooling waits for uvicorn's "Uvicorn running on http://HOST:PORT" line; the
    URL Tiled prints names the same (bound) port, not 0."""
    with running_tiled("serve", "directory", str(tmp_path), "--port", "0") as (url, banner):
        running = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", banner)
        assert running is not None, banner
        port = running.group(1)
        assert port != "0" and f"localhost:{port}" in url
        assert httpx.get(url.replace("localhost", "127.0.0.1")).status_code == 200

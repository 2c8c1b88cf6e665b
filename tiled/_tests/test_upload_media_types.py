"""A request body in a media type the route cannot read is refused with 415 Unsupported Media
Type (406 is for responses that cannot be given in a type the client accepts), and nothing is
written."""

from __future__ import annotations

import httpx
import numpy
import pytest

from tiled.catalog import from_uri
from tiled.client import from_context
from tiled.client.context import Context
from tiled.server.app import build_app

from .live_server import serve

KEY = "uploadtypes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("catalog")
    catalog = from_uri(
        f"sqlite:///{directory}/catalog.db",
        writable_storage=[str(directory / "data"), f"duckdb:///{directory}/tables.duckdb"],
        init_if_not_exists=True,
    )
    app = build_app(catalog, authentication={"single_user_api_key": KEY})
    with serve(app) as live:
        with Context(live.url, api_key=KEY) as context:
            client = from_context(context)
            client.write_array(numpy.zeros(4), key="array")
            client.write_awkward([[1, 2], [3]], key="awkward")
            client.write_dataframe({"a": [1, 2]}, key="table")
            import ragged

            client.write_ragged(ragged.array([[1.0], [2.0, 3.0]]), key="ragged")
        yield live


BAD_TYPES = ["text/csv", "application/x-nonsense", "image/png"]
UPLOADS = [
    ("put", "/api/v1/array/full/array"),
    ("put", "/api/v1/array/block/array?block=0"),
    ("put", "/api/v1/awkward/full/awkward"),
    ("put", "/api/v1/ragged/full/ragged"),
    ("put", "/api/v1/table/full/table"),
]


@pytest.mark.parametrize("method, path", UPLOADS)
@pytest.mark.parametrize("media_type", BAD_TYPES)
def test_unreadable_bodies_are_415(server, method, path, media_type):
    headers = {"Authorization": f"Apikey {KEY}", "Content-Type": media_type}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        node = path.rsplit("/", 1)[-1].split("?")[0]
        before = client.get(f"/api/v1/metadata/{node}").json()["data"]["attributes"]
        response = client.request(method, path, content=b"\0" * 32)
        assert response.status_code == 415, response.text
        assert media_type in response.json()["detail"]
        after = client.get(f"/api/v1/metadata/{node}").json()["data"]["attributes"]
        assert after == before


def test_responses_in_unaccepted_types_stay_406(server):
    headers = {"Authorization": f"Apikey {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        response = client.get("/api/v1/array/full/array", params={"format": "application/x-no"})
        assert response.status_code == 406

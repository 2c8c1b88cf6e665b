"""Every route family x every credential state, on a live multi-user server with a policy.

The zarr routes go through the same authentication and access policy as /api/v1: no route
serves data without credentials, none reveals a node its user may not see.
"""

from __future__ import annotations

import fsspec
import httpx
import numpy
import pandas
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.access.policies import SimpleAccessPolicy
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.table import DataFrameAdapter
from tiled.server.app import build_app

from .live_server import serve
from .test_authentication import (
    SHORT_LIFETIME,
    apikey,
    authentication,
    bearer,
    create_key,
    login,
    sleep_until_expired,
)

ROUTES = {
    "metadata": "/api/v1/metadata/restricted/r",
    "search": "/api/v1/search/restricted",
    "data": "/api/v1/array/full/restricted/r",
    "table": "/api/v1/table/full/restricted/t",
    "export": "/api/v1/container/full/restricted?format=zarr",
    "zarr2-document": "/zarr/v2/restricted/r/.zarray",
    "zarr3-document": "/zarr/v3/restricted/r/zarr.json",
    "zarr2-chunk": "/zarr/v2/restricted/r/0",
    "zarr3-chunk": "/zarr/v3/restricted/r/c/0",
    "zarr3-listing": "/zarr/v3/restricted",
    "zarr2-consolidated": "/zarr/v2/restricted/.zmetadata",
    "zarr3-consolidated": "/zarr/v3/restricted/zarr.json",
}
DATA_ROUTES = {"data", "table", "export", "zarr2-chunk", "zarr3-chunk"}


def expected(credentials: str, route: str) -> int:
    if credentials in ("none", "wrong key", "revoked key", "expired token"):
        return 401
    if credentials == "user without access":
        return 404
    if credentials == "key lacking read:data":
        return 401 if route in DATA_ROUTES else 200  # upstream: scope the credentials lack
    return 200


def tree() -> MapAdapter:
    frame = pandas.DataFrame({"x": numpy.arange(4.0)})
    return MapAdapter(
        {
            "shared": MapAdapter({"s": ArrayAdapter.from_array(numpy.ones(3))}),
            "restricted": MapAdapter(
                {
                    "r": ArrayAdapter.from_array(numpy.arange(6)),
                    "t": DataFrameAdapter.from_pandas(frame),
                }
            ),
        }
    )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    policy = SimpleAccessPolicy({"bob": ["shared"], "dave": ["shared", "restricted"]})
    app = build_app(
        tree(),
        authentication=authentication(access_token_max_age=SHORT_LIFETIME, tiled_admins=[]),
        server_settings={
            "database": {
                "uri": f"sqlite:///{tmp_path_factory.mktemp('m') / 'authn.db'}",
                "init_if_not_exists": True,
            }
        },
        access_policy=policy,
    )
    with serve(app) as server, httpx.Client(base_url=server.url + "/api/v1") as client:
        dave = apikey(create_key(client, bearer(login(client, "dave")))["secret"])
        bob = apikey(create_key(client, bearer(login(client, "bob")))["secret"])
        narrow = apikey(create_key(client, dave, scopes=["read:metadata"])["secret"])
        revoked_key = create_key(client, dave)
        assert (
            client.delete(
                "/auth/apikey", params={"first_eight": revoked_key["first_eight"]}, headers=dave
            ).status_code
            == 204
        )
        expiring_tokens = login(client, "dave")
        expiring = bearer(expiring_tokens)
        sleep_until_expired(expiring_tokens)
        credentials = {
            "none": {},
            "wrong key": apikey("f" * 72),
            "revoked key": apikey(revoked_key["secret"]),
            "expired token": expiring,
            "key lacking read:data": narrow,
            "user without access": bob,
            "user with access": dave,
        }
        yield server, credentials


CASES = [(c, r) for c in ["none", "wrong key", "revoked key", "expired token", "key lacking read:data", "user without access", "user with access"] for r in ROUTES]  # fmt: skip


@pytest.mark.parametrize(("credentials", "route"), CASES)
def test_matrix(matrix, credentials, route):
    server, headers = matrix
    response = httpx.get(server.url + ROUTES[route], headers=headers[credentials])
    assert response.status_code == expected(credentials, route), response.text
    if response.status_code == 401:
        assert "www-authenticate" in response.headers or "detail" in response.json()
    if response.status_code >= 400:
        assert "detail" in response.json()


def test_listings_and_consolidated_metadata_omit_what_a_user_may_not_see(matrix):
    server, headers = matrix
    bob = headers["user without access"]
    assert httpx.get(f"{server.url}/zarr/v3/", headers=bob).json() == [
        f"{server.url}/zarr/v3/shared"
    ]
    inline = httpx.get(f"{server.url}/zarr/v3/zarr.json", headers=bob).json()[
        "consolidated_metadata"
    ]["metadata"]
    assert sorted(inline) == ["shared", "shared/s"]
    search = httpx.get(f"{server.url}/api/v1/search/", headers=bob).json()
    assert [item["id"] for item in search["data"]] == ["shared"]
    dave = headers["user with access"]
    assert len(httpx.get(f"{server.url}/api/v1/search/", headers=dave).json()["data"]) == 2


def test_zarr_python_with_the_header_reads_what_it_may(matrix, zarr_format):
    server, headers = matrix
    url = f"{server.url}/zarr/v{zarr_format}/"
    dave = HTTPFileSystem(client_kwargs={"headers": headers["user with access"]})
    root = zarr.open(dave.get_mapper(url), mode="r")
    assert sorted(root.keys()) == ["restricted", "shared"]
    numpy.testing.assert_array_equal(root["restricted/r"][...], numpy.arange(6))
    bob = HTTPFileSystem(client_kwargs={"headers": headers["user without access"]})
    bobs_root = zarr.open(bob.get_mapper(url), mode="r")
    assert list(bobs_root.keys()) == ["shared"]
    with pytest.raises(KeyError):
        bobs_root["restricted/r"]
    with pytest.raises(Exception, match="401|Unauthorized|not found|No group|nothing found"):  # noqa: B017
        zarr.open_group(fsspec.get_mapper(url), mode="r", zarr_format=zarr_format)["restricted/r"][
            ...
        ]

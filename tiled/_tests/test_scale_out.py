"""Two server processes behind a load balancer (HAProxy), sharing their databases (SQLite
files, or PostgreSQL).

Whichever process answers, a client sees one server: what was written through one is read
through the other at once (the lookup caches live an hour here, so only the change feed can
make that true), a login made on one refreshes on the other, a revoked session is revoked
everywhere, and the CSRF double-submit check holds on either. Which process answered is told
by the first 8 hex digits of ``x-tiled-request-id``, drawn at random by each process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy
import pytest
import yaml

from .load_balancer import haproxy_or_skip, load_balancer
from .postgres import temporary_database
from .processes import TILED, server_process

pytestmark = pytest.mark.slow


def _process_of(response: httpx.Response) -> str:
    return response.headers["x-tiled-request-id"][:8]


def _configuration(catalog_uri: str, authn_uri: str, data: str, secret_key: str) -> dict:
    return {
        "trees": [
            {
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": catalog_uri,
                    "writable_storage": data,
                    "init_if_not_exists": True,
                    "lookup_cache_ttl": 3600,
                },
            }
        ],
        "authentication": {
            # Every process signs and checks tokens with the same keys.
            "secret_keys": [secret_key],
            "providers": [
                {
                    "provider": "toy",
                    "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                    "args": {"users_to_passwords": {"alice": "secret1"}},
                }
            ],
            "tiled_admins": [{"provider": "toy", "id": "alice"}],
        },
        "database": {"uri": authn_uri, "init_if_not_exists": True},
    }


def _array_node(key: str, data: numpy.ndarray) -> dict:
    structure = {
        "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
        "chunks": [[n] for n in data.shape],
        "shape": list(data.shape),
        "dims": None,
        "resizable": False,
    }
    source = {"structure_family": "array", "structure": structure, "assets": []}
    return {"id": key, "structure_family": "array", "metadata": {"n": 0}, "data_sources": [source]}


@contextmanager
def _databases(backend: str, directory: Path) -> Iterator[tuple[str, str]]:
    """(catalog URI, authentication database URI) on ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'catalog.db'}", f"sqlite:///{directory / 'authn.db'}"
        return
    with (
        temporary_database("tiled_scale_catalog") as catalog_uri,
        temporary_database("tiled_scale_authn") as authn_uri,
    ):
        yield catalog_uri, authn_uri


@pytest.fixture(params=["sqlite", "postgresql"])
def balanced(request, tmp_path):
    """The load balancer's URL, in front of two servers started one after the other (the
    first creates the databases' schemas)."""
    haproxy_or_skip()
    with _databases(request.param, tmp_path) as (catalog_uri, authn_uri):
        config = tmp_path / "config.yml"
        settings = _configuration(
            catalog_uri, authn_uri, str(tmp_path / "data"), secrets.token_hex(32)
        )
        config.write_text(yaml.safe_dump(settings))
        command = [*TILED, "serve", "config", str(config)]
        with (
            server_process(command, tmp_path) as first,
            server_process(command, tmp_path) as second,
        ):
            with load_balancer([first, second], tmp_path) as url:
                yield url


def test_two_servers_behind_a_balancer_are_one_server_to_a_client(balanced):
    with httpx.Client(base_url=balanced, timeout=30) as client:
        login = client.post(
            "/api/v1/auth/provider/toy/token", data={"username": "alice", "password": "secret1"}
        )
        assert login.status_code == 200, login.text
        tokens = login.json()
        client.headers["Authorization"] = f"Bearer {tokens['access_token']}"

        data = numpy.arange(12.0).reshape(3, 4)
        created = client.post("/api/v1/metadata/", json=_array_node("x", data))
        assert created.status_code == 200, created.text
        written = client.put("/api/v1/array/full/x", content=data.tobytes())
        assert written.status_code == 200, written.text

        # Warm both processes' caches, then change the node through one and read it through
        # the other, alternately, many times over.
        answered = set()
        for n in range(1, 21):
            seen = client.get("/api/v1/metadata/x")
            assert seen.status_code == 200, seen.text
            changed = client.patch(
                "/api/v1/metadata/x",
                json={"metadata": [{"op": "replace", "path": "/n", "value": n}],
                      "content-type": "application/json-patch+json"},
            )  # fmt: skip
            assert changed.status_code == 200, changed.text
            read = client.get("/api/v1/metadata/x")
            assert read.json()["data"]["attributes"]["metadata"]["n"] == n
            assert _process_of(read) != _process_of(changed)
            answered |= {_process_of(seen), _process_of(changed), _process_of(read)}
            full = client.get("/api/v1/array/full/x")
            numpy.testing.assert_array_equal(
                numpy.frombuffer(full.content, "<f8").reshape(3, 4), data
            )
        assert len(answered) == 2

        # A node deleted through one process is gone from the other at once.
        deleted = client.delete("/api/v1/metadata/x", params={"external_only": False})
        assert deleted.status_code == 200, deleted.text
        for _ in range(2):
            assert client.get("/api/v1/metadata/x").status_code == 404

        # Conditional zarr writes: of many writers holding one ETag, spread over both
        # processes, exactly one wins (the condition and the change are one step everywhere).
        group = {"zarr_format": 3, "node_type": "group", "attributes": {"round": 0}}
        made = client.put("/zarr/v3/g/zarr.json", json=group)
        assert made.status_code == 201, made.text
        for round_ in range(1, 4):
            etag = client.get("/zarr/v3/g/zarr.json").headers["etag"]
            headers = {**client.headers, "If-Match": etag}

            def conditional(writer: int, round_=round_, headers=headers) -> httpx.Response:
                attributes = {"round": round_, "writer": writer}
                document = {**group, "attributes": attributes}
                return httpx.put(
                    f"{balanced}/zarr/v3/g/zarr.json", json=document, headers=headers, timeout=30
                )

            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(conditional, range(8)))
            statuses = sorted(response.status_code for response in outcomes)
            assert statuses == [204] + [412] * 7, statuses
            assert len({_process_of(response) for response in outcomes}) == 2
            (winner,) = [i for i, r in enumerate(outcomes) if r.status_code == 204]
            stored = client.get("/zarr/v3/g/zarr.json").json()["attributes"]
            assert stored == {"round": round_, "writer": winner}

        # Arrays grown by writers of both processes at once (PATCH with extend): every row
        # lands, and the array ends as long as the longest wish.
        row = numpy.zeros((1, 4))
        node = _array_node("grow", row)
        assert client.post("/api/v1/metadata/", json=node).status_code == 200
        assert client.put("/api/v1/array/full/grow", content=row.tobytes()).status_code == 200

        def grow(number: int) -> httpx.Response:
            return httpx.patch(
                f"{balanced}/api/v1/array/full/grow",
                params={"offset": str(number), "shape": "1,4", "extend": "true"},
                content=numpy.full((1, 4), float(number)).tobytes(),
                headers={**client.headers, "Content-Type": "application/octet-stream"},
                timeout=60,
            )

        with ThreadPoolExecutor(8) as pool:
            grown = list(pool.map(grow, range(1, 13)))
        assert [r.status_code for r in grown] == [200] * 12, [r.text for r in grown]
        assert len({_process_of(r) for r in grown}) == 2
        for _ in range(2):  # from both processes
            full = client.get("/api/v1/array/full/grow")
            rows = numpy.frombuffer(full.content, "<f8").reshape(-1, 4)
            assert rows[:, 0].tolist() == [float(n) for n in range(13)]

        # Sessions: refreshed through either process, revoked for both.
        refreshed = {}
        refresh_token = tokens["refresh_token"]
        for _ in range(4):
            response = client.post(
                "/api/v1/auth/session/refresh", json={"refresh_token": refresh_token}
            )
            assert response.status_code == 200, response.text
            refreshed[_process_of(response)] = response.json()
            refresh_token = response.json()["refresh_token"]
        assert len(refreshed) == 2
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        whoami = client.get("/api/v1/auth/whoami")
        assert whoami.status_code == 200, whoami.text
        (session,) = [s for s in whoami.json()["sessions"] if not s.get("revoked")]
        revoked = client.delete(f"/api/v1/auth/session/revoke/{session['uuid']}")
        assert revoked.status_code == 204, revoked.text
        for _ in range(2):
            again = client.post(
                "/api/v1/auth/session/refresh", json={"refresh_token": refresh_token}
            )
            assert again.status_code == 401, again.text

        # An API key in a cookie, as a browser holds it: state-changing requests need the
        # CSRF double submit, checked alike by both processes.
        key = client.post("/api/v1/auth/apikey", json={"expires_in": 600, "scopes": ["inherit"]})
        assert key.status_code == 200, key.text
    with httpx.Client(base_url=balanced, timeout=30) as browser:
        browser.cookies.set("tiled_api_key", key.json()["secret"])
        about = browser.get("/api/v1/")
        csrf = about.cookies.get("tiled_csrf") or browser.cookies.get("tiled_csrf")
        assert csrf
        body = {"id": "y", "structure_family": "container", "metadata": {}, "data_sources": []}
        refusals = [browser.post("/api/v1/metadata/", json=body) for _ in range(2)]
        assert [r.status_code for r in refusals] == [403, 403]
        assert len({_process_of(r) for r in refusals}) == 2
        accepted = browser.post("/api/v1/metadata/", json=body, headers={"x-csrf": csrf})
        assert accepted.status_code == 200, accepted.text
        listed = browser.get("/api/v1/search/")
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["data"]] == ["g", "grow", "y"]


@pytest.fixture
def own_postgresql():
    """A PostgreSQL cluster of this test alone, which it may stop and start at will."""
    from .postgres import ThrowawayCluster, ThrowawayClusterError, _server_binaries

    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        cluster = ThrowawayCluster.start(binaries)
    except ThrowawayClusterError as err:
        pytest.skip(f"a PostgreSQL cluster of its own could not be started: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_database_outage_is_503_with_retry_after_and_the_server_recovers(
    own_postgresql, tmp_path
):
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "trees": [{"path": "/", "tree": "catalog", "args": {
                    "uri": own_postgresql.uri, "writable_storage": str(tmp_path / "data"),
                    "init_if_not_exists": True}}],
                "authentication": {"single_user_api_key": "secret"},
            }
        )
    )  # fmt: skip
    data = numpy.arange(6.0)
    with (
        server_process([*TILED, "serve", "config", str(config)], tmp_path) as url,
        httpx.Client(base_url=url, headers={"Authorization": "Apikey secret"}) as client,
    ):
        assert client.post("/api/v1/metadata/", json=_array_node("x", data)).status_code == 200
        assert client.put("/api/v1/array/full/x", content=data.tobytes()).status_code == 200
        reads = ["/api/v1/metadata/x", "/api/v1/array/full/x", "/zarr/v3/x/zarr.json",
                 "/zarr/v3/x/c/0", "/api/v1/search/"]  # fmt: skip
        for path in reads:
            assert client.get(path).status_code == 200, path

        own_postgresql.halt()
        for _ in range(2):  # warm caches and pooled connections alike are of no help now
            for path in reads:
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["retry-after"] == "1"
                assert "retry" in response.json()["detail"]
            refused = client.post("/api/v1/metadata/", json=_array_node("y", data))
            assert refused.status_code == 503, refused.text

        own_postgresql.resume()
        for _ in range(100):
            if client.get("/api/v1/metadata/x").status_code == 200:
                break
            time.sleep(0.1)
        for path in reads:
            assert client.get(path).status_code == 200, path
        numpy.testing.assert_array_equal(
            numpy.frombuffer(client.get("/api/v1/array/full/x").content, "<f8"), data
        )
        created = client.post("/api/v1/metadata/", json=_array_node("y", data))
        assert created.status_code == 200, created.text
        assert [i["id"] for i in client.get("/api/v1/search/").json()["data"]] == ["x", "y"]

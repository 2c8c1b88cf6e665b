"""Identities kept by multi-user servers: API keys and access tokens are not established anew
on every request, and what is kept is never given past its validity.

Two servers (real uvicorn, each its own engine and change feed) share one authentication
database, SQLite file or PostgreSQL, as the worker processes of one deployment do.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest

from tiled.authn_database import crud
from tiled.server import kept_identities
from tiled.server.app import build_app
from tiled.server.tokens import TokenSigner

from .live_server import serve
from .postgres import temporary_database
from .test_authentication import (
    SHORT_LIFETIME,
    apikey,
    authentication,
    bearer,
    create_key,
    login,
    sleep_until_expired,
    tree,
)


@contextmanager
def _database(kind: str, tmp_path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'authn.db'}"
    else:
        with temporary_database("tiled_kept") as uri:
            yield uri


@contextmanager
def _two_servers(
    uri: str, recheck_seconds: float = 60.0, **settings
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    database = {"uri": uri, "init_if_not_exists": True}
    apps = [
        build_app(tree(), authentication(**settings), server_settings={"database": database})
        for _ in range(2)
    ]
    for app in apps:
        app.state.tiled.authenticator.api_keys.recheck_seconds = recheck_seconds
    with serve(apps[0]) as first, serve(apps[1]) as second:
        with (
            httpx.Client(base_url=f"{first.url}/api/v1", timeout=30) as one,
            httpx.Client(base_url=f"{second.url}/api/v1", timeout=30) as two,
        ):
            yield one, two


@pytest.fixture(params=["sqlite", "postgresql"])
def uri(request, tmp_path) -> Iterator[str]:
    with _database(request.param, tmp_path) as uri:
        yield uri


def _use_until_kept(client: httpx.Client, secret: str) -> None:
    """Requests with the key until the server keeps its identity: the first on PostgreSQL,
    the second on SQLite (where the first lookup's record of the key's activity is a commit
    like any other, after which what it found may be stale)."""
    for _ in range(2):
        assert client.get("/metadata/x", headers=apikey(secret)).status_code == 200


def _lookups_until_kept(uri: str) -> int:
    return 2 if uri.startswith("sqlite") else 1


def _counting(monkeypatch, owner, name: str) -> list:
    calls: list = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_an_api_key_is_looked_up_again_only_after_a_commit(uri, monkeypatch):
    lookups = _counting(monkeypatch, crud, "lookup_api_key")
    # A key's latest activity is recorded (a commit, which SQLite counts) at most once per
    # ACTIVITY_RESOLUTION: only the first lookup's record may come within this test, however
    # long a loaded machine takes between its requests.
    monkeypatch.setattr(crud, "ACTIVITY_RESOLUTION", timedelta(hours=1))
    with _two_servers(uri) as (one, two):
        tokens = login(one, "bob")
        secret = create_key(one, bearer(tokens))["secret"]
        for _ in range(20):
            assert two.get("/metadata/x", headers=apikey(secret)).status_code == 200
        assert len(lookups) == _lookups_until_kept(uri)
        # Any commit, by any server, may have changed what the key grants: looked up again.
        create_key(one, bearer(tokens))
        assert two.get("/metadata/x", headers=apikey(secret)).status_code == 200
        assert len(lookups) == _lookups_until_kept(uri) + 1


def test_a_key_revoked_through_one_server_is_refused_at_once_by_the_other(uri):
    with _two_servers(uri) as (one, two):
        tokens = login(one, "bob")
        secret = create_key(one, bearer(tokens))["secret"]
        _use_until_kept(two, secret)
        revoked = one.delete(
            "/auth/apikey", params={"first_eight": secret[:8]}, headers=bearer(tokens)
        )
        assert revoked.status_code == 204
        refused = two.get("/metadata/x", headers=apikey(secret))
        assert refused.status_code == 401 and refused.json()["detail"] == "Invalid API key"


def test_a_kept_key_is_refused_once_it_expires(uri):
    with _two_servers(uri) as (one, two):
        key = create_key(one, bearer(login(one, "bob")), expires_in=SHORT_LIFETIME)
        _use_until_kept(two, key["secret"])
        sleep_until_expired(key)
        assert two.get("/metadata/x", headers=apikey(key["secret"])).status_code == 401


def test_a_key_deleted_behind_tiled_s_back_is_refused_by_the_next_recheck(uri):
    """A writer that is not Tiled notifies no PostgreSQL listener; SQLite counts every commit."""
    with _two_servers(uri, recheck_seconds=SHORT_LIFETIME) as (one, two):
        secret = create_key(one, bearer(login(one, "bob")))["secret"]
        _use_until_kept(two, secret)
        kept_by = time.monotonic()
        _delete_keys_directly(uri)
        answers = [two.get("/metadata/x", headers=apikey(secret)).status_code]
        if uri.startswith("sqlite"):
            assert answers == [401]
        else:
            time.sleep(max(0.0, kept_by + SHORT_LIFETIME - time.monotonic()) + 0.1)
            answers.append(two.get("/metadata/x", headers=apikey(secret)).status_code)
            assert answers == [200, 401]


def test_a_shared_in_memory_database_keeps_nothing(tmp_path):
    """Upstream's default names an in-memory database that several engines of one process
    share: nothing tells one of the others' commits, so every request looks its key up."""
    uri = f"sqlite:///file:kept_{tmp_path.name}?mode=memory&cache=shared&uri=true"
    with _two_servers(uri) as (one, two):
        tokens = login(one, "bob")
        secret = create_key(one, bearer(tokens))["secret"]
        _use_until_kept(two, secret)
        one.delete("/auth/apikey", params={"first_eight": secret[:8]}, headers=bearer(tokens))
        assert two.get("/metadata/x", headers=apikey(secret)).status_code == 401


def _delete_keys_directly(uri: str) -> None:
    if uri.startswith("sqlite"):
        with sqlite3.connect(uri.removeprefix("sqlite:///")) as connection:
            connection.execute("DELETE FROM api_keys")
        return

    async def delete() -> None:
        import asyncpg

        connection = await asyncpg.connect(uri)
        try:
            await connection.execute("DELETE FROM api_keys")
        finally:
            await connection.close()

    asyncio.run(delete())


def test_an_access_token_is_verified_once_and_refused_after_it_expires(tmp_path, monkeypatch):
    decodes = _counting(monkeypatch, TokenSigner, "decode")
    with (
        _database("sqlite", tmp_path) as uri,
        _two_servers(uri, access_token_max_age=SHORT_LIFETIME) as (one, _),
    ):
        tokens = login(one, "bob")
        for _ in range(10):
            assert one.get("/metadata/x", headers=bearer(tokens)).status_code == 200
        assert len(decodes) == 1
        sleep_until_expired(tokens)
        expired = one.get("/metadata/x", headers=bearer(tokens))
        assert expired.status_code == 401
        assert expired.json()["detail"] == "Access token has expired. Refresh token."


def test_kept_identities_are_bounded():
    kept = kept_identities.AccessTokenIdentities(size=3)
    for n in range(5):
        kept.keep_token(bytes([n]), object(), time.time() + 60)
    assert len(kept) == 3
    assert kept.identity(bytes([0])) is None and kept.identity(bytes([4])) is not None

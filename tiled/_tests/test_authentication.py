"""Multi-user authentication against a live server: logins, sessions, API keys, CSRF, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import numpy
import pytest
from pydantic import ValidationError

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.authn_database.connection import AuthnDatabase, async_url
from tiled.config import Authentication, Database
from tiled.server import failure_delays
from tiled.server.app import build_app
from tiled.server.failure_delays import FailureDelays

from .live_server import serve
from .postgres import temporary_database

USERS = {"alice": "secret1", "bob": "secret2", "dave": "secret4"}
SECRET_KEY = "0123456789abcdef0123456789abcdef"
TILED = str(Path(sys.executable).parent / "tiled")


def authentication(**overrides) -> Authentication:
    settings = {
        "providers": [
            {
                "provider": "toy",
                "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                "args": {"users_to_passwords": USERS},
            }
        ],
        "secret_keys": [SECRET_KEY],
        "tiled_admins": [{"provider": "toy", "id": "alice"}],
        "allow_anonymous_access": False,
    }
    return Authentication(**{**settings, **overrides})


def tree() -> MapAdapter:
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})


def login(client: httpx.Client, user: str, password: str | None = None) -> dict:
    form = {"username": user, "password": password or USERS[user]}
    response = client.post("/auth/provider/toy/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def apikey(secret: str) -> dict:
    return {"Authorization": f"Apikey {secret}"}


def create_key(client: httpx.Client, headers: dict, **params) -> dict:
    response = client.post("/auth/apikey", json=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# The lifetime of keys and tokens that a test lets expire: long enough that the requests made
# before expiry are in time on a loaded machine; the test then sleeps until the expiry.
SHORT_LIFETIME = 6


def sleep_until_expired(credential: dict) -> None:
    """Sleep until an API key (as created) or the access token of a login has expired."""
    if "access_token" in credential:
        claims = jwt.decode(credential["access_token"], options={"verify_signature": False})
        expiry = float(claims["exp"])
    else:
        when = datetime.fromisoformat(credential["expiration_time"])
        expiry = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    time.sleep(max(0.0, expiry - time.time()) + 0.1)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("authn") / "authn.db"


@pytest.fixture(scope="module")
def server(db_path):
    # Upstream's sync-style URI: the server switches to the aiosqlite driver.
    database = {"uri": f"sqlite:///{db_path}", "init_if_not_exists": True}
    app = build_app(tree(), authentication(), server_settings={"database": database})
    with serve(app) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as http:
        yield http


def test_about_document_lists_providers_and_links(client):
    about = client.get("/").json()["authentication"]
    assert about["required"] is True
    [provider] = about["providers"]
    assert provider["provider"] == "toy" and provider["mode"] == "internal"
    assert provider["links"]["auth_endpoint"].endswith("/api/v1/auth/provider/toy/token")
    assert about["links"]["revoke_session"].endswith("/auth/session/revoke/{session_id}")
    assert set(about["links"]) == {
        "whoami",
        "apikey",
        "refresh_session",
        "revoke_session",
        "logout",
    }


def test_anonymous_requests(client):
    assert client.get("/metadata/x").status_code == 401
    assert client.get("/auth/whoami").json() is None
    assert client.post("/auth/apikey", json={}).status_code == 401
    assert client.post("/auth/provider/nope/token", data={"username": "a"}).status_code == 404


def test_login_form_may_be_multipart(client):
    # As OAuth2 password forms are sent by browsers' FormData and curl -F.
    fields = {"username": (None, "bob"), "password": (None, USERS["bob"])}
    response = client.post("/auth/provider/toy/token", files=fields)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]
    wrong = {"username": (None, "bob"), "password": (None, "wrong")}
    assert client.post("/auth/provider/toy/token", files=wrong).status_code == 401
    garbage = client.post(
        "/auth/provider/toy/token",
        content=b"not a multipart body",
        headers={"content-type": "multipart/form-data"},
    )
    assert garbage.status_code == 400 and garbage.json()["detail"]


def test_login_whoami_refresh_revoke(client):
    tokens = login(client, "alice")
    assert tokens["token_type"] == "bearer"
    assert tokens["identity"] == {"id": "alice", "provider": "toy"}
    assert tokens["expires_in"] == 15 * 60 and tokens["refresh_token_expires_in"] == 7 * 86400
    me = client.get("/auth/whoami", headers=bearer(tokens)).json()
    # As upstream: whoami gives the dashed form of the UUID, the tokens its hex form.
    assert me["uuid"].replace("-", "") == tokens["principal"] and me["type"] == "user"
    assert [i["id"] for i in me["identities"]] == ["alice"]
    assert {role["name"] for role in me["roles"]} == {"user", "admin"}  # a tiled_admin
    assert client.get("/metadata/x", headers=bearer(tokens)).status_code == 200

    refreshed = client.post(
        "/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert client.get("/metadata/x", headers=bearer(refreshed.json())).status_code == 200

    revoked = client.post("/auth/session/revoke", json={"refresh_token": tokens["refresh_token"]})
    assert revoked.status_code == 204
    again = client.post("/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 401
    bad = client.post("/auth/session/refresh", json={"refresh_token": "not.a.token"})
    assert bad.status_code == 401 and bad.json()["detail"] == "Could not validate credentials"
    # The access token itself is not a refresh token.
    wrong_type = client.post(
        "/auth/session/refresh", json={"refresh_token": tokens["access_token"]}
    )
    assert wrong_type.status_code == 401


def test_revoke_session_by_id(client):
    tokens = login(client, "bob")
    me = client.get("/auth/whoami", headers=bearer(tokens)).json()
    assert {role["name"] for role in me["roles"]} == {"user"}
    session_id = me["sessions"][-1]["uuid"]
    other = login(client, "alice")
    stranger = client.delete(f"/auth/session/revoke/{session_id}", headers=bearer(other))
    assert stranger.status_code == 404  # not alice's session
    response = client.delete(f"/auth/session/revoke/{session_id}", headers=bearer(tokens))
    assert response.status_code == 204
    refused = client.post("/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 401


def wrong_password(client: httpx.Client, user: str) -> httpx.Response:
    return client.post("/auth/provider/toy/token", data={"username": user, "password": "wrong"})


def test_wrong_password_delay_grows(client, monkeypatch):
    waited = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    # The server runs in this process: its failed logins now record their delays, unslept.
    monkeypatch.setattr(failure_delays, "sleep", record)
    login(client, "dave")  # no failures counted from earlier tests
    for _ in range(4):
        response = wrong_password(client, "dave")
        assert response.status_code == 401
        assert response.json()["detail"] == "Incorrect username or password"
    assert waited == [0.05, 0.1, 0.2, 0.4]
    wrong_password(client, "mallory")  # counted per username: a first failure
    login(client, "dave")  # success resets the count
    wrong_password(client, "dave")
    assert waited[4:] == [0.05, 0.05]


def test_a_failed_login_waits_before_it_is_answered(client):
    login(client, "dave")
    start = time.perf_counter()
    assert wrong_password(client, "dave").status_code == 401
    # A lower bound only: a loaded machine makes the answer later, never earlier.
    assert time.perf_counter() - start >= 0.05


def test_failure_delays_are_capped_and_bounded():
    delays = FailureDelays(base=0.05, cap=2.0, max_entries=2)
    assert [delays.record("u") for _ in range(8)][-3:] == [1.6, 2.0, 2.0]
    delays.record("v"), delays.record("w")
    assert delays.record("u") == 0.05  # evicted: the table stays small


def test_api_key_lifecycle(client):
    tokens = login(client, "bob")
    key = create_key(
        client,
        bearer(tokens),
        scopes=["read:metadata", "read:data"],
        note="laptop",
        expires_in=3600,
    )
    secret = key["secret"]
    assert len(secret) == 72 and int(secret, 16) >= 0 and key["first_eight"] == secret[:8]
    assert key["note"] == "laptop" and key["scopes"] == ["read:metadata", "read:data"]
    assert key["expiration_time"] is not None
    ways = [
        {"headers": apikey(secret)},
        {"params": {"api_key": secret}},
        {"headers": {"Cookie": f"tiled_api_key={secret}"}},
    ]
    for way in ways:
        assert client.get("/array/full/x", **way).status_code == 200
    described = client.get("/auth/apikey", headers=apikey(secret)).json()
    assert described["first_eight"] == secret[:8] and "secret" not in described
    assert client.get("/auth/apikey", headers=bearer(tokens)).status_code == 401
    listed = client.get("/auth/whoami", headers=bearer(tokens)).json()["api_keys"]
    assert secret[:8] in [k["first_eight"] for k in listed]

    revoked = client.delete(
        "/auth/apikey", params={"first_eight": secret[:8]}, headers=bearer(tokens)
    )
    assert revoked.status_code == 204
    for way in ways:
        refused = client.get("/metadata/x", **way)
        assert refused.status_code == 401 and secret not in refused.text
    missing = client.delete(
        "/auth/apikey", params={"first_eight": secret[:8]}, headers=bearer(tokens)
    )
    assert missing.status_code == 404


def test_api_key_cannot_exceed_owner_scopes(client):
    tokens = login(client, "bob")  # role "user": no read:principals
    response = client.post(
        "/auth/apikey", json={"scopes": ["read:principals"]}, headers=bearer(tokens)
    )
    assert response.status_code == 403 and "read:principals" in response.json()["detail"]
    assert client.get("/auth/principal", headers=bearer(tokens)).status_code == 401
    # A narrowed key makes no key wider than itself, even when asked for "inherit".
    narrow = create_key(client, bearer(tokens), scopes=["read:metadata", "create:apikeys"])
    child = create_key(client, apikey(narrow["secret"]))
    assert set(child["scopes"]) == {"read:metadata", "create:apikeys"}
    inherit = client.post(
        "/auth/apikey", json={"scopes": ["inherit"]}, headers=apikey(narrow["secret"])
    )
    assert inherit.status_code == 403
    # The default key inherits the owner's scopes at the time of use.
    default = create_key(client, bearer(tokens))
    assert default["scopes"] == ["inherit"]
    assert client.get("/array/full/x", headers=apikey(default["secret"])).status_code == 200


def test_metadata_only_key_is_forbidden_data(client):
    tokens = login(client, "alice")
    secret = create_key(client, bearer(tokens), scopes=["read:metadata"])["secret"]
    assert client.get("/metadata/x", headers=apikey(secret)).status_code == 200
    # 401 as upstream answers: the credentials lack the scope (not the node refusing it).
    response = client.get("/array/full/x", headers=apikey(secret))
    assert response.status_code == 401
    assert "read:data" in response.json()["detail"]
    chunk = httpx.get(f"{client.base_url.join('/zarr/v3/x/c/0')}", headers=apikey(secret))
    assert chunk.status_code == 401


def test_expired_api_key_is_refused(client):
    tokens = login(client, "bob")
    key = create_key(client, bearer(tokens), expires_in=SHORT_LIFETIME)
    secret = key["secret"]
    assert client.get("/metadata/x", headers=apikey(secret)).status_code == 200
    sleep_until_expired(key)
    refused = client.get("/metadata/x", headers=apikey(secret))
    assert refused.status_code == 401 and refused.json()["detail"] == "API key has expired"


def test_keys_are_stored_hashed(client, db_path):
    tokens = login(client, "alice")
    secret = create_key(client, bearer(tokens), note="hashed?")["secret"]
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
        [(hashed,)] = db.execute(
            "SELECT hashed_secret FROM api_keys WHERE note = 'hashed?'"
        ).fetchall()
    assert hashed == hashlib.sha256(bytes.fromhex(secret)).digest()
    dumped = repr(rows)
    assert secret not in dumped and repr(bytes.fromhex(secret)) not in dumped


def test_csrf_on_cookie_authenticated_post(client):
    tokens = login(client, "bob")
    secret = create_key(client, bearer(tokens))["secret"]
    cookie = f"tiled_api_key={secret}"
    # A safe request with the cookie is served, and offered a CSRF cookie.
    response = client.get("/metadata/x", headers={"Cookie": cookie})
    assert response.status_code == 200 and "tiled_csrf=" in response.headers["set-cookie"]
    assert "httponly" in response.headers["set-cookie"].lower()
    refused = client.post("/auth/apikey", json={}, headers={"Cookie": cookie})
    assert refused.status_code == 403 and "csrf" in refused.text
    with_csrf = {"Cookie": f"{cookie}; tiled_csrf=abc123"}
    mismatch = client.post("/auth/apikey", json={}, headers={**with_csrf, "x-csrf": "zzz"})
    assert mismatch.status_code == 403
    assert client.post(
        "/auth/apikey", json={}, headers={**with_csrf, "x-csrf": "abc123"}
    ).is_success
    assert client.post("/auth/apikey?csrf=abc123", json={}, headers=with_csrf).is_success
    # Cookies split over several headers (as HTTP/2 clients may send them) are read together,
    # by the CSRF check as by authentication: another cookie header does not hide the key.
    split = [("Cookie", cookie), ("Cookie", "other=1")]
    refused = client.post("/auth/apikey", json={}, headers=split)
    assert refused.status_code == 403 and "csrf" in refused.text
    split = [("Cookie", cookie), ("Cookie", "tiled_csrf=abc123"), ("x-csrf", "abc123")]
    assert client.post("/auth/apikey", json={}, headers=split).is_success
    # Header-authenticated requests need no CSRF token.
    assert client.post("/auth/apikey", json={}, headers=apikey(secret)).is_success


def test_input_strict_json_cannot_carry_is_refused_with_422(client):
    # The refusal echoes the input: NaN, infinities and lone surrogates were a 500.
    json_body = {"content-type": "application/json"}
    for body in (b'{"refresh_token": NaN}', b'{"refresh_token": -Infinity}', b'"\\ud800"'):
        refused = client.post("/auth/session/refresh", content=body, headers=json_body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["detail"]
    admin = bearer(login(client, "alice"))
    for body in (b'{"expires_in": 1e300}', b'{"expires_in": Infinity}', b'{"expires_in": NaN}'):
        refused = client.post("/auth/apikey", content=body, headers={**admin, **json_body})
        assert refused.status_code == 422, (body, refused.text)
    # Offsets past what the database takes (a 64-bit integer) are refused, not overflowed.
    for route in ("/auth/principal", "/search/"):
        refused = client.get(route, params={"page[offset]": 2**63}, headers=admin)
        assert refused.status_code == 422, (route, refused.text)
        assert client.get(route, params={"page[offset]": 2**63 - 1}, headers=admin).is_success


def test_admin_routes(client):
    admin = bearer(login(client, "alice"))
    # At least two principals, whichever tests ran before in this process.
    client.post("/auth/principal", params={"role": "user"}, headers=admin).raise_for_status()
    page = client.get("/auth/principal", params={"page[limit]": 1}, headers=admin).json()
    assert page["meta"]["count"] >= 2 and len(page["data"]) == 1
    assert page["links"]["next"] is not None
    service = client.post("/auth/principal", params={"role": "user"}, headers=admin).json()
    assert service["type"] == "service"
    key = client.post(
        f"/auth/principal/{service['uuid']}/apikey",
        json={"scopes": ["read:metadata"]},
        headers=admin,
    ).json()
    assert client.get("/metadata/x", headers=apikey(key["secret"])).status_code == 200
    shown = client.get(f"/auth/principal/{service['uuid']}", headers=admin).json()
    assert [k["first_eight"] for k in shown["api_keys"]] == [key["first_eight"]]
    gone = client.delete(
        f"/auth/principal/{service['uuid']}/apikey",
        params={"first_eight": key["first_eight"]},
        headers=admin,
    )
    assert gone.status_code == 204
    assert client.get("/metadata/x", headers=apikey(key["secret"])).status_code == 401


def test_logout_clears_cookie(client):
    response = client.post("/auth/logout")
    assert response.json() == {} and "tiled_api_key=" in response.headers["set-cookie"]


def test_expired_access_token_in_memory_database():
    # No database URI: an in-memory SQLite database shared by every connection.
    app = build_app(tree(), authentication(access_token_max_age=SHORT_LIFETIME))
    with serve(app) as live, httpx.Client(base_url=f"{live.url}/api/v1") as client:
        tokens = login(client, "alice")
        assert client.get("/metadata/x", headers=bearer(tokens)).status_code == 200
        garbage = client.get("/metadata/x", headers={"Authorization": "Bearer abc.def.ghi"})
        assert garbage.status_code == 401
        assert garbage.json()["detail"] == "Could not validate credentials"
        assert garbage.headers["www-authenticate"] == "Bearer"
        sleep_until_expired(tokens)
        expired = client.get("/metadata/x", headers=bearer(tokens))
        assert expired.status_code == 401
        assert expired.json()["detail"] == "Access token has expired. Refresh token."
        fresh = client.post(
            "/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert client.get("/metadata/x", headers=bearer(fresh.json())).status_code == 200


def test_cli_api_key_create_list_revoke(server, client):
    admin = create_key(client, bearer(login(client, "alice")))["secret"]
    common = ["--uri", server.url, "--api-key", admin]

    def tiled(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TILED, "api_key", *args], capture_output=True, text=True, timeout=60)

    created = tiled(
        "create", *common, "--scopes", "read:metadata", "--note", "cli", "--expires-in", "1h"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert len(secret) == 72 and created.stdout == secret + "\n"  # only the secret
    assert client.get("/metadata/x", headers=apikey(secret)).status_code == 200
    listed = tiled("list", *common)
    assert secret[:8] in listed.stdout and "cli" in listed.stdout
    assert tiled("revoke", secret[:8], *common).returncode == 0
    assert client.get("/metadata/x", headers=apikey(secret)).status_code == 401
    failed = tiled("revoke", secret[:8], *common)
    assert failed.returncode == 1 and "404" in failed.stderr


def test_cli_login_with_username(server, client):
    args = ["api_key", "create", "--uri", server.url, "--username", "bob", "--expires-in", "5m"]
    env = {**os.environ, "TILED_API_KEY": ""}
    result = subprocess.run(
        [TILED, *args], input="secret2\n", capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    # The prompt goes to standard error: KEY=$(tiled api_key create --username ...) works.
    assert "Password for bob" in result.stderr
    secret = result.stdout.strip()
    assert result.stdout == secret + "\n" and len(secret) == 72
    assert client.get("/auth/apikey", headers=apikey(secret)).json()["expiration_time"]


def test_configuration_is_validated():
    with pytest.raises(ValidationError, match="not configured"):
        authentication(tiled_admins=[{"provider": "elsewhere", "id": "alice"}])
    with pytest.raises(ValidationError):
        Database(uri="sqlite://", pool_size=1)


async def test_existing_database_without_tables_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE unrelated (x INTEGER)")
    database = AuthnDatabase(Database(uri=f"sqlite+aiosqlite:///{path}"))
    with pytest.raises(RuntimeError, match="init_if_not_exists"):
        await database.startup()
    await database.shutdown()
    # As upstream: a new database is created only when init_if_not_exists says so.
    missing = AuthnDatabase(Database(uri=str(tmp_path / "new.db")))
    with pytest.raises(RuntimeError, match="tiled admin initialize-database"):
        await missing.startup()
    assert not (tmp_path / "new.db").exists()
    fresh = AuthnDatabase(Database(uri=str(tmp_path / "new.db"), init_if_not_exists=True))
    await fresh.startup()
    await fresh.shutdown()


@pytest.mark.parametrize(
    "uri, expected",
    [
        (None, "sqlite+aiosqlite://"),
        (":memory:", "sqlite+aiosqlite://"),
        ("sqlite:///a/b.db", "sqlite+aiosqlite:///a/b.db"),
        ("sqlite+aiosqlite:///b.db", "sqlite+aiosqlite:///b.db"),
        ("b.db", "sqlite+aiosqlite:///b.db"),
        ("postgresql://u:pw@h:5432/d", "postgresql+asyncpg://u:***@h:5432/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
    ],
)
def test_database_uris(uri, expected):
    assert async_url(uri).render_as_string(hide_password=True) == expected


def test_anonymous_access_on_multi_user_server():
    app = build_app(tree(), authentication(allow_anonymous_access=True))
    with serve(app) as live, httpx.Client(base_url=f"{live.url}/api/v1") as client:
        assert client.get("/").json()["authentication"]["required"] is False
        assert client.get("/array/full/x").status_code == 200
        assert client.get("/auth/whoami").json() is None
        assert client.post("/auth/apikey", json={}).status_code == 401


UPSTREAM_SCRIPT = r"""
import json, sys
import tiled.client.context as context
context.username_input = lambda: "alice"
context.password_input = lambda: "secret1"
from tiled.client import from_uri
c = from_uri(sys.argv[1])
out = {"keys": list(c), "x": c["x"].read().tolist()}
out["identities"] = [i["id"] for i in c.context.whoami()["identities"]]
key = c.context.create_api_key(scopes=["read:metadata"], note="upstream")
out["secret_len"] = len(key["secret"])
c.context.force_auth_refresh()
out["after_refresh"] = c["x"].read().tolist()
c.context.revoke_api_key(key["first_eight"])
out["after_revoke"] = [k["first_eight"] for k in c.context.whoami()["api_keys"]]
out["via_key"] = list(from_uri(sys.argv[1], api_key=c.context.create_api_key()["secret"]))
c.logout()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_upstream_client_logs_in(tmp_path, monkeypatch, upstream_client_python):
    from .isolated_python import run_isolated

    python = upstream_client_python
    monkeypatch.setenv("TILED_CACHE_DIR", str(tmp_path / "cache"))  # its token store
    with serve(build_app(tree(), authentication())) as live:
        result = run_isolated(python, UPSTREAM_SCRIPT, live.url)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["keys"] == ["x"] and got["x"] == list(range(10)) == got["after_refresh"]
    assert got["identities"] == ["alice"] and got["secret_len"] == 72
    assert got["after_revoke"] == [] and got["via_key"] == ["x"]


def test_postgresql_database():
    # A schema of its own (the setting under test) in a database of its own.
    schema = f"tiled_authn_test_{uuid.uuid4().hex[:12]}"
    with temporary_database("tiled_authn") as uri:
        database = {"uri": uri, "schema": schema, "init_if_not_exists": True}
        app = build_app(tree(), authentication(), server_settings={"database": database})
        with serve(app) as live, httpx.Client(base_url=f"{live.url}/api/v1") as client:
            tokens = login(client, "bob")
            secret = create_key(client, bearer(tokens), scopes=["read:metadata"], note="pg")[
                "secret"
            ]
            assert client.get("/metadata/x", headers=apikey(secret)).status_code == 200
            assert client.get("/array/full/x", headers=apikey(secret)).status_code == 401
            me = client.get("/auth/whoami", headers=apikey(secret)).json()
            assert me["api_keys"][0]["note"] == "pg"
            refreshed = client.post(
                "/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert refreshed.status_code == 200
            client.delete(
                "/auth/apikey", params={"first_eight": secret[:8]}, headers=bearer(tokens)
            )
            assert client.get("/metadata/x", headers=apikey(secret)).status_code == 401

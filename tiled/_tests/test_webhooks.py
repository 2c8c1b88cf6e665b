"""Webhooks (upstream 0.2.20's ``/api/v1/webhooks`` and deliveries): registered through a live
server, delivered to a real receiver on loopback, recorded in the catalog database."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time

import httpx
import numpy
import pytest

from tiled.catalog import from_uri
from tiled.catalog import webhooks as catalog_webhooks
from tiled.client import Context, from_context
from tiled.server.app import build_app, build_app_from_config

from .isolated_python import run_isolated
from .live_server import serve
from .test_catalog import database_uri, postgres_database  # noqa: F401 (fixtures)

KEY = "secretapikey"
HEADERS = {"Authorization": f"Apikey {KEY}"}
LOOPBACK = {"allow_http": True, "allow_private_addresses": True}


class Receiver:
    """An HTTP server on loopback that records what it is sent and answers ``status``."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        self._arrived = threading.Condition()

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                message = await receive()
                while message["type"] != "lifespan.shutdown":
                    await send({"type": message["type"] + ".complete"})
                    message = await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            status = self.status
            with self._arrived:
                self.received.append({"path": scope["path"], "headers": headers, "body": body})
                self._arrived.notify_all()
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"received"})

        self.app = app

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.received)} deliveries arrived, not {count}"
                self._arrived.wait(left)
            return list(self.received)


@pytest.fixture
def receiver():
    receiver = Receiver()
    with serve(receiver.app) as server:
        receiver.url = f"{server.url}/hook"
        yield receiver


@pytest.fixture
def catalog_uri(database_uri):  # noqa: F811 - SQLite and PostgreSQL
    return database_uri


def _app(uri, tmp_path, webhooks=None, **kwargs):
    tree = from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True)
    settings = {"webhooks": {"secret_keys": ["key-one"], **LOOPBACK, **(webhooks or {})}}
    return build_app(
        tree, authentication={"single_user_api_key": KEY}, server_settings=settings, **kwargs
    )


def _deliveries(http, webhook_id, settled=0, timeout=30.0):
    """The delivery history, once at least ``settled`` deliveries are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        history = http.get(f"/api/v1/webhooks/history/{webhook_id}").raise_for_status().json()
        done = [d for d in history if d["outcome"] != "pending"]
        if len(done) >= settled:
            return history
        assert time.monotonic() < deadline, history
        time.sleep(0.05)


def test_events_are_delivered_signed_and_recorded(catalog_uri, tmp_path, receiver):
    with serve(_app(catalog_uri, tmp_path)) as server, Context(server.url, api_key=KEY) as ctx:
        http = httpx.Client(base_url=server.url, headers=HEADERS)
        client = from_context(ctx)
        runs = client.create_container("runs")
        registered = http.post(
            "/api/v1/webhooks/target/runs", json={"url": receiver.url, "secret": "shh"}
        )
        assert registered.status_code == 200, registered.text
        hook = registered.json()
        assert hook["url"] == receiver.url and hook["active"] is True
        assert hook["events"] is None and hook["time_created"].endswith("Z")
        assert http.get("/api/v1/webhooks/target/runs").json() == [hook]
        assert http.get("/api/v1/webhooks/target/").json() == []  # on that node only

        # A child made below the node, then its metadata replaced: two events, in order.
        scan = runs.create_container("scan1", metadata={"energy": 10}, specs=["BlueskyRun"])
        scan.update_metadata({"energy": 11})
        first, second = receiver.wait_for(2)
        created, updated = json.loads(first["body"]), json.loads(second["body"])
        assert created["type"] == "container-child-created"
        assert created["key"] == "scan1" and created["path"] == ["runs", "scan1"]
        assert created["structure_family"] == "container"
        assert created["metadata"] == {"energy": 10}
        assert created["specs"] == [{"name": "BlueskyRun", "version": None}]
        assert updated["type"] == "container-child-metadata-updated"
        assert updated["metadata"] == {"energy": 11} and updated["path"] == ["runs", "scan1"]
        for delivery in (first, second):
            headers = delivery["headers"]
            expected = hmac.new(b"shh", delivery["body"], hashlib.sha256).hexdigest()
            assert headers["x-tiled-signature"] == f"sha256={expected}"
            assert headers["content-type"] == "application/json"
        assert first["headers"]["x-tiled-event-id"] != second["headers"]["x-tiled-event-id"]

        history = _deliveries(http, hook["id"], settled=2)
        assert [d["event_type"] for d in history] == [
            "container-child-metadata-updated",
            "container-child-created",
        ]  # fmt: skip  (latest first)
        assert {(d["outcome"], d["status_code"], d["attempts"]) for d in history} == {
            ("success", 200, 1)
        }
        assert history[1]["payload"] == created
        assert all(d["delivered_at"] for d in history)

        # Removed: no more deliveries, and its id is gone.
        assert http.delete(f"/api/v1/webhooks/{hook['id']}").json() == {"deleted": hook["id"]}
        runs.create_container("scan2")
        assert http.get(f"/api/v1/webhooks/history/{hook['id']}").status_code == 404
        assert http.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert len(receiver.received) == 2


def test_events_filter_and_arrays_and_a_hook_on_the_root(catalog_uri, tmp_path, receiver):
    with Context.from_app(_app(catalog_uri, tmp_path), api_key=KEY) as ctx:
        http = ctx.http_client
        only_updates = {"url": receiver.url, "events": ["container-child-metadata-updated"]}
        everything = {"url": receiver.url + "/all", "events": []}
        hook = http.post("/api/v1/webhooks/target/", json=only_updates).json()
        assert hook["events"] == ["container-child-metadata-updated"]
        assert http.post("/api/v1/webhooks/target/", json=everything).json()["events"] is None
        client = from_context(ctx)
        array = client.create_container("a").write_array(numpy.arange(3), key="x")
        array.update_metadata({"checked": True})
        received = receiver.wait_for(4)
        time.sleep(0.2)  # (nothing more arrives)
        assert len(receiver.received) == 4
    kinds = sorted((r["path"], json.loads(r["body"])["type"]) for r in received)
    assert kinds == [
        ("/hook", "container-child-metadata-updated"),
        ("/hook/all", "container-child-created"),
        ("/hook/all", "container-child-created"),
        ("/hook/all", "container-child-metadata-updated"),
    ]
    created = [json.loads(r["body"]) for r in received if r["path"] == "/hook/all"]
    assert {tuple(e["path"]) for e in created} >= {("a",), ("a", "x")}
    assert all("x-tiled-signature" not in r["headers"] for r in received)  # no secret


def test_a_failing_receiver_is_retried_then_recorded_as_failed(
    catalog_uri, tmp_path, receiver, monkeypatch
):
    monkeypatch.setattr(catalog_webhooks, "RETRY_FIRST_WAIT", 0.01)
    monkeypatch.setattr(catalog_webhooks, "RETRY_JITTER", 0.0)
    receiver.status = 503
    with serve(_app(catalog_uri, tmp_path)) as server, Context(server.url, api_key=KEY) as ctx:
        http = httpx.Client(base_url=server.url, headers=HEADERS)
        hook = http.post("/api/v1/webhooks/target/", json={"url": receiver.url}).json()
        from_context(ctx).create_container("c")
        (delivery,) = _deliveries(http, hook["id"], settled=1)
        tries = receiver.wait_for(catalog_webhooks.MAX_ATTEMPTS)
    assert delivery["outcome"] == "failed" and delivery["status_code"] == 503
    assert delivery["attempts"] == catalog_webhooks.MAX_ATTEMPTS
    assert delivery["error_detail"] == "HTTP 503: received"
    # Every try is the same delivery: receivers drop repeats by its id.
    assert len({t["headers"]["x-tiled-event-id"] for t in tries}) == 1


def test_a_removed_webhook_is_not_tried_again(catalog_uri, tmp_path, receiver, monkeypatch):
    monkeypatch.setattr(catalog_webhooks, "RETRY_FIRST_WAIT", 1.0)
    monkeypatch.setattr(catalog_webhooks, "RETRY_JITTER", 0.0)
    receiver.status = 503
    with serve(_app(catalog_uri, tmp_path)) as server, Context(server.url, api_key=KEY) as ctx:
        http = httpx.Client(base_url=server.url, headers=HEADERS)
        hook = http.post("/api/v1/webhooks/target/", json={"url": receiver.url}).json()
        from_context(ctx).create_container("c")
        receiver.wait_for(1)
        assert http.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 200
        time.sleep(1.5)  # past the second try's time
    assert len(receiver.received) == 1


def test_a_receiver_out_of_reach_is_recorded_as_failed(catalog_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_webhooks, "RETRY_FIRST_WAIT", 0.01)
    monkeypatch.setattr(catalog_webhooks, "RETRY_JITTER", 0.0)
    from .processes import free_port

    nowhere = f"http://127.0.0.1:{free_port()}/hook"
    with Context.from_app(_app(catalog_uri, tmp_path), api_key=KEY) as ctx:
        http = ctx.http_client
        hook = http.post("/api/v1/webhooks/target/", json={"url": nowhere}).json()
        from_context(ctx).create_container("c")
        (delivery,) = _deliveries(http, hook["id"], settled=1)
    assert delivery["outcome"] == "failed" and delivery["status_code"] is None
    assert "ConnectError" in delivery["error_detail"]


@pytest.mark.parametrize(
    "settings, url, status, detail",
    [
        ({}, "http://example.org/hook", 422, "must use HTTPS"),
        ({"allow_http": True}, "http://127.0.0.1:9/hook", 400, "private or reserved address"),
        ({"allow_http": True}, "http://[::1]:9/hook", 400, "private or reserved address"),
        ({"allow_http": True}, "http://localhost:9/hook", 400, "private or reserved address"),
        ({}, "https://10.1.2.3/hook", 400, "private or reserved address"),
        ({"blocked_networks": ["8.8.8.0/24"]}, "https://8.8.8.8/hook", 400, "private"),
        ({}, "https://no-such-host.invalid/hook", 400, "Cannot resolve"),
        # Spellings of private, reserved and multicast addresses (a connection to an IPv6
        # address that carries an IPv4 one goes to that one).
        ({}, "https://[::]/", 400, "private"),
        ({}, "https://[::ffff:127.0.0.1]/", 400, "private"),
        ({"blocked_networks": ["8.8.8.0/24"]}, "https://[::ffff:8.8.8.8]/", 400, "private"),
        ({}, "https://[64:ff9b::7f00:1]/", 400, "private"),
        ({}, "https://[2002:7f00:1::]/", 400, "private"),
        ({}, "https://224.0.0.1/", 400, "private"),
        ({}, "https://240.0.0.1/", 400, "private"),
        ({}, "https://198.18.0.1/", 400, "private"),
        ({}, "https://2130706433/", 400, "private"),
        ({}, "https://example.org/" + "x" * 2100, 422, None),
        ({}, "not a url", 422, None),
        ({"allow_http": True}, "ftp://example.org/", 422, None),
    ],
)
def test_target_urls_are_checked(tmp_path, settings, url, status, detail):
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    tree = from_uri(uri, init_if_not_exists=True)
    app = build_app(
        tree, authentication={"single_user_api_key": KEY},
        server_settings={"webhooks": settings},
    )  # fmt: skip
    with Context.from_app(app, api_key=KEY) as ctx:
        response = ctx.http_client.post("/api/v1/webhooks/target/", json={"url": url})
    assert response.status_code == status, response.text
    if detail is not None:
        assert detail in response.json()["detail"]


def test_allowed_hosts_and_a_validator_of_ones_own(tmp_path):
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    settings = {"webhooks": {"allow_http": True, "allow_delivery_hosts": ["localhost"]}}
    app = build_app(from_uri(uri, init_if_not_exists=True), authentication={"single_user_api_key": KEY},
                    server_settings=settings)  # fmt: skip
    with Context.from_app(app, api_key=KEY) as ctx:
        post = ctx.http_client.post
        assert post("/api/v1/webhooks/target/", json={"url": "http://localhost:9/"}).is_success
        assert post("/api/v1/webhooks/target/", json={"url": "http://127.0.0.1:9/"}).status_code
    checked = []

    async def only_example_org(registration) -> None:
        from fastapi import HTTPException

        with pytest.raises(ValueError, match="HTTPS"):  # upstream's method, for validators
            registration.check_https()
        checked.append(str(registration.url))
        if registration.url.host != "example.org":
            raise HTTPException(403, "example.org only")

    app = build_app(from_uri(uri, init_if_not_exists=True), authentication={"single_user_api_key": KEY},
                    server_settings=settings, webhook_url_validator=only_example_org)  # fmt: skip
    with Context.from_app(app, api_key=KEY) as ctx:
        post = ctx.http_client.post
        assert post("/api/v1/webhooks/target/", json={"url": "http://localhost:9/"}).json() == {
            "detail": "example.org only"
        }
        assert post("/api/v1/webhooks/target/", json={"url": "http://example.org/"}).is_success
    assert checked == ["http://localhost:9/", "http://example.org/"]


def test_refusals(tmp_path):
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    no_keys = {"webhooks": LOOPBACK}
    app = build_app(from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True),
                    authentication={"single_user_api_key": KEY}, server_settings=no_keys)  # fmt: skip
    with Context.from_app(app, api_key=KEY) as ctx:
        http = ctx.http_client
        url = "http://127.0.0.1:9/hook"
        secret = http.post("/api/v1/webhooks/target/", json={"url": url, "secret": "s"})
        assert secret.status_code == 400 and "secret_keys" in secret.json()["detail"]
        unknown = http.post("/api/v1/webhooks/target/", json={"url": url, "events": ["nope"]})
        assert unknown.status_code == 422
        missing = http.post("/api/v1/webhooks/target/nope", json={"url": url})
        assert missing.status_code == 404 and "No such entry" in missing.json()["detail"]
        assert http.get("/api/v1/webhooks/history/12345").status_code == 404
        assert http.get("/api/v1/webhooks/history/1", params={"limit": 501}).status_code == 422
        assert http.get("/api/v1/webhooks/history/x").status_code == 422
        for too_big in (0, 2**31, 2**63, 10**30):
            assert http.delete(f"/api/v1/webhooks/{too_big}").status_code == 422
            assert http.get(f"/api/v1/webhooks/history/{too_big}").status_code == 422
        long_secret = {"url": url, "secret": "s" * 257}
        assert http.post("/api/v1/webhooks/target/", json=long_secret).status_code == 422
        assert http.get("/api/v1/webhooks/target/a%00b").status_code == 404
    # Without the section there are no webhook routes, as upstream.
    plain = build_app(
        from_uri(uri, init_if_not_exists=True), authentication={"single_user_api_key": KEY}
    )
    with Context.from_app(plain, api_key=KEY) as ctx:
        response = ctx.http_client.post("/api/v1/webhooks/target/", json={"url": "https://x/"})
        assert response.status_code == 404
    # Not a catalog's node: nothing to register on.
    from tiled.adapters.mapping import MapAdapter

    memory = build_app(MapAdapter({}), authentication={"single_user_api_key": KEY},
                       server_settings=no_keys)  # fmt: skip
    with Context.from_app(memory, api_key=KEY) as ctx:
        response = ctx.http_client.post("/api/v1/webhooks/target/", json={"url": url})
        assert response.status_code == 404
        assert response.json()["detail"] == "Webhooks are only supported on catalog-backed trees."


def test_scopes(tmp_path):
    """Anonymous readers hold no webhook scopes: 401, as upstream."""
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    tree = from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True)
    with Context.from_app(build_app(tree)) as ctx:
        from_context(ctx).create_container("open")
    app = build_app(
        from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True),
        authentication={"single_user_api_key": KEY, "allow_anonymous_access": True},
        server_settings={"webhooks": LOOPBACK},
    )
    url = {"url": "http://127.0.0.1:9/hook"}
    with serve(app) as server:
        owner = httpx.Client(base_url=server.url, headers=HEADERS)
        hook = owner.post("/api/v1/webhooks/target/open", json=url).json()
        anonymous = httpx.Client(base_url=server.url)
        assert anonymous.get("/api/v1/metadata/open").status_code == 200  # it may read
        assert anonymous.post("/api/v1/webhooks/target/open", json=url).status_code == 401
        assert anonymous.get("/api/v1/webhooks/target/open").status_code == 401
        assert anonymous.get(f"/api/v1/webhooks/history/{hook['id']}").status_code == 401
        assert anonymous.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 401


def test_trees_and_mounts_use_the_paths_clients_see(tmp_path, receiver):
    """A catalog under a ``trees:`` path (and mounted at a node of its database): webhooks are
    registered at the served path, and found by id through it."""
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    tree = from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True)
    with Context.from_app(build_app(tree)) as ctx:
        from_context(ctx).create_container("A").create_container("sub")
    catalog = {"uri": uri, "writable_storage": [str(tmp_path / "data")], "mount_node": "/A"}
    config = {
        "trees": [{"path": "/raw", "tree": "catalog", "args": catalog}],
        "authentication": {"single_user_api_key": KEY},
        "webhooks": LOOPBACK,
    }
    with serve(build_app_from_config(config)) as server:
        with Context(server.url, api_key=KEY) as ctx:
            http = httpx.Client(base_url=server.url, headers=HEADERS)
            hook = http.post("/api/v1/webhooks/target/raw/sub", json={"url": receiver.url})
            assert hook.status_code == 200, hook.text
            assert [h["id"] for h in http.get("/api/v1/webhooks/target/raw/sub").json()] == [
                hook.json()["id"]
            ]
            from_context(ctx)["raw/sub"].create_container("run")
            (delivery,) = receiver.wait_for(1)
            assert json.loads(delivery["body"])["path"] == ["A", "sub", "run"]  # as upstream
            assert len(_deliveries(http, hook.json()["id"], settled=1)) == 1
            assert http.delete(f"/api/v1/webhooks/{hook.json()['id']}").status_code == 200


def test_configuration_section_and_environment(tmp_path, monkeypatch):
    from tiled.config import ConfigError, validate_config
    from tiled.server.settings import ServerSettings

    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    base = {"catalog": {"uri": uri, "init_if_not_exists": True}}
    with pytest.raises(ConfigError, match="not a network"):
        validate_config({**base, "webhooks": {"blocked_networks": ["nope"]}})
    with pytest.raises(ConfigError, match="names hosts"):
        validate_config({**base, "webhooks": {"allow_delivery_hosts": ["10.0.0.1"]}})
    with pytest.raises(ConfigError, match="unknown key|extra"):
        validate_config({**base, "webhooks": {"secret_key": "x"}})
    # Upstream's build_app callers pass its WebhooksConfig object; any object with its fields.
    from tiled.config import WebhooksConfig

    settings = ServerSettings.from_mapping({"webhooks": WebhooksConfig(secret_keys=["k"])})
    assert settings.webhooks.secret_keys == ("k",)
    monkeypatch.setenv("TILED_WEBHOOKS_SECRET_KEYS", '["from-env"]')
    monkeypatch.setenv("TILED_WEBHOOKS_ALLOW_HTTP", "true")
    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", KEY)
    app = build_app(from_uri(uri, init_if_not_exists=True))
    assert app.state.tiled.settings.webhooks.secret_keys == ("from-env",)
    assert app.state.tiled.settings.webhooks.allow_http is True
    app = build_app_from_config(base)
    assert app.state.tiled.settings.webhooks.secret_keys == ("from-env",)


ENCRYPT_UPSTREAM = r"""
import sys
import tiled.catalog  # (upstream's modules import each other in this order)
from tiled.server.webhooks import _encrypt_secret
print(_encrypt_secret(sys.argv[1], ["old-key", "new-key"]))
"""


def test_secrets_upstream_stored_still_sign(upstream_tiled):
    """A secret upstream encrypted (a database carried over) decrypts here, with any key."""
    done = run_isolated(upstream_tiled, ENCRYPT_UPSTREAM, "their-secret")
    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert catalog_webhooks.decrypt_secret(stored, ["old-key"]) == "their-secret"
    assert catalog_webhooks.decrypt_secret(stored, ["rotated", "old-key"]) == "their-secret"
    assert catalog_webhooks.decrypt_secret(stored, ["other"]) is None
    ours = catalog_webhooks.encrypt_secret("x", ["k1", "k2"])
    assert catalog_webhooks.decrypt_secret(ours, ["k0", "k1"]) == "x"


def test_a_failed_announcement_does_not_fail_the_write(tmp_path, caplog):
    """The change is made whatever happens to its deliveries."""
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    tree = from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True)

    async def run() -> None:
        await tree.startup()
        try:
            hooks = catalog_webhooks.CatalogWebhooks(tree.catalog)
            tree.catalog.webhooks = hooks
            await hooks.start()
            await hooks.register(0, "http://127.0.0.1:9/", None, None)

            async def broken(*args, **kwargs):
                raise RuntimeError("the database is gone")

            hooks._announce = broken
            child = await tree.create_node(key="c", structure_family="container")
            assert child is not None
        finally:
            await hooks.stop()
            await tree.shutdown()

    asyncio.run(run())
    assert "were not recorded" in caplog.text

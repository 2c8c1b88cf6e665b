"""The client's retries (``retry_context``, 429 and Retry-After, the retry notice), its cap on
requests in flight, its token store (``TiledAuth``), ``server_info`` by attribute, and the
server's API-key and session limits and 401 for scopes the credentials lack."""

from __future__ import annotations

import threading
import time

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.client import Context, from_context
from tiled.client.auth import CannotRefreshAuthentication, TiledAuth
from tiled.client.utils import (
    AuthenticationRequired,
    ClientError,
    handle_error,
    retry_context,
    should_retry,
    should_retry_if_unprocessed,
)
from tiled.config import Authentication
from tiled.server import authentication as server_authentication
from tiled.server.app import build_app

USERS = {"alice": "secret1", "bob": "secret2"}


def tree() -> MapAdapter:
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10.0))})


class Throttled:
    """An ASGI app answering the first ``refusals`` requests under ``/api/v1/metadata`` with
    ``status`` (and ``Retry-After: 0``), then passing requests on to ``app``."""

    def __init__(self, app, refusals: int, status: int = 429):
        self.app, self.refusals, self.status = app, refusals, status
        self.refused = 0
        self.state = getattr(app, "state", None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "/metadata" in scope["path"]:
            if self.refused < self.refusals:
                self.refused += 1
                await send({
                    "type": "http.response.start", "status": self.status,
                    "headers": [(b"retry-after", b"0"), (b"content-type", b"application/json")],
                })  # fmt: skip
                await send({"type": "http.response.body", "body": b'{"detail": "slow down"}'})
                return
        await self.app(scope, receive, send)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    return tmp_path / "cache"


# --- the retry loop ---


def test_retry_context_retries_what_may_succeed_and_counts_attempts():
    seen = []
    for attempt in retry_context(attempts=5):
        with attempt:
            seen.append(attempt.num)
            if len(seen) < 3:
                raise httpx.ConnectError("refused")
    assert seen == [1, 2, 3]


def test_retry_context_raises_other_failures_at_once_and_the_last_one():
    runs = []
    with pytest.raises(CannotRefreshAuthentication):
        for attempt in retry_context():
            with attempt:
                runs.append(attempt.num)
                raise CannotRefreshAuthentication("no token")
    assert runs == [1]
    runs.clear()
    with pytest.raises(httpx.ReadTimeout):
        for attempt in retry_context(attempts=3):
            with attempt:
                runs.append(attempt.num)
                raise httpx.ReadTimeout("slow")
    assert runs == [1, 2, 3]


def test_retry_context_gives_up_when_out_of_time():
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        for attempt in retry_context(attempts=100, timeout=0.5):
            with attempt:
                raise httpx.ConnectError("refused")
    assert time.monotonic() - started < 5  # not the 100 attempts' worth of back-off


def test_retry_policies():
    request = httpx.Request("GET", "http://example.com")

    def status(code, **headers):
        response = httpx.Response(code, headers=headers, request=request)
        return httpx.HTTPStatusError("x", request=request, response=response)

    assert should_retry(status(429, **{"Retry-After": "1.5"})) == 1.5
    assert should_retry(status(429)) is True
    assert should_retry(status(503)) is True
    assert should_retry(status(404)) is False
    assert should_retry(httpx.UnsupportedProtocol("htps://")) is False
    assert should_retry(httpx.LocalProtocolError("bad header")) is False
    assert should_retry(httpx.ReadError("reset")) is True
    # Requests that must not be applied twice: only when the server surely did not act.
    assert should_retry_if_unprocessed(httpx.ReadTimeout("slow")) is False
    assert should_retry_if_unprocessed(httpx.ConnectError("refused")) is True
    assert should_retry_if_unprocessed(status(502)) is False
    assert should_retry_if_unprocessed(status(429)) is True


def test_handle_error_leaves_429_to_the_retries():
    request = httpx.Request("GET", "http://example.com")
    with pytest.raises(httpx.HTTPStatusError) as info:
        handle_error(httpx.Response(429, request=request))
    assert not isinstance(info.value, ClientError)
    with pytest.raises(ClientError):
        handle_error(httpx.Response(404, request=request))


# --- retries of a context's requests ---


def test_a_context_waits_out_429_and_503_and_tells_the_user(capsys):
    for status in (429, 503):
        app = Throttled(build_app(tree()), refusals=2, status=status)
        with Context.from_app(app, api_key=app.state.tiled.authenticator.api_key) as context:
            assert from_context(context)["x"].read().tolist() == list(numpy.arange(10.0))
            assert app.refused == 2
            assert context.retry_indicator is None  # taken down once the retries are over
        assert "Retrying" in capsys.readouterr().err


def test_a_post_is_retried_after_429_but_the_last_answer_is_returned():
    app = Throttled(build_app(tree()), refusals=100)
    with Context.from_app(app, api_key=app.state.tiled.authenticator.api_key) as context:
        response = context.request("POST", "metadata/", json={}, check=False)
        assert response.status_code == 429
        assert app.refused == 10  # TILED_RETRY_ATTEMPTS' default
        with pytest.raises(httpx.HTTPStatusError):
            context.get_json("metadata/x")


def test_requests_in_flight_are_capped_by_max_connections():
    app = build_app(tree())
    with Context.from_app(app, max_connections=2) as context:
        peak, current, lock = [0], [0], threading.Lock()
        semaphore = threading.Semaphore(2)

        class Counting:
            def __enter__(self):
                semaphore.acquire()
                with lock:
                    current[0] += 1
                    peak[0] = max(peak[0], current[0])
                time.sleep(0.02)  # let the other threads pile up

            def __exit__(self, *exc):
                with lock:
                    current[0] -= 1
                semaphore.release()

        context._concurrent_request_semaphore = Counting()
        threads = [
            threading.Thread(target=context.get_json, args=("metadata/x",)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak[0] == 2


# --- tokens and logins ---


def test_tiled_auth_keeps_tokens_in_memory_or_on_disk(tmp_path):
    memory = TiledAuth("http://example.com/refresh", "csrf", None)
    assert memory.sync_get_token("access_token", reload_from_disk=True) is None
    memory.sync_set_token("access_token", "a")
    assert memory.sync_get_token("access_token", reload_from_disk=True) == "a"
    disk = TiledAuth("http://example.com/refresh", None, tmp_path / "tokens")
    disk.sync_tokens({"access_token": "a", "refresh_token": "r"})
    other = TiledAuth("http://example.com/refresh", None, tmp_path / "tokens")
    assert other.sync_get_token("refresh_token") == "r"  # another process sees the session
    assert (tmp_path / "tokens" / "refresh_token").stat().st_mode & 0o077 == 0
    disk.clear()
    assert other.sync_get_token("refresh_token", reload_from_disk=True) is None
    with pytest.raises(CannotRefreshAuthentication):
        other.refresh_request()


@pytest.fixture
def multi_user(tmp_path):
    authentication = Authentication(
        providers=[{
            "provider": "toy", "authenticator": "tiled.authenticators:DictionaryAuthenticator",
            "args": {"users_to_passwords": USERS},
        }],
        secret_keys=["0123456789abcdef0123456789abcdef"],
    )  # fmt: skip
    database = {"uri": f"sqlite:///{tmp_path / 'authn.db'}", "init_if_not_exists": True}
    return build_app(tree(), authentication, server_settings={"database": database})


def test_login_tokens_configured_by_hand_and_the_repr(multi_user, private_cache):
    from tiled.client.context import password_grant

    with Context.from_app(multi_user) as context:
        assert not context.authenticated and "unauthenticated" in repr(context)
        provider = context.server_info.authentication.providers[0]
        assert context.server_info["authentication"]["providers"][0] == provider
        tokens = password_grant(context.http_client, provider.links["auth_endpoint"],
                                provider.provider, "alice", "secret1")  # fmt: skip
        context.configure_auth(tokens, remember_me=False)
        assert context.authenticated
        assert "authenticated as 'alice'" in repr(context)
        assert not list(private_cache.glob("tokens/*/*"))  # nothing remembered
        with pytest.raises(RuntimeError):
            context.which_api_key()
        key = context.create_api_key(note="k")
        context.logout()
        context.api_key = key["secret"]
        shown = repr(context)
        assert "as 'alice'" in shown and key["secret"][:8] in shown
        assert key["secret"][8:] not in shown


def test_api_key_and_session_limits(multi_user, private_cache, monkeypatch):
    monkeypatch.setattr(server_authentication, "API_KEY_LIMIT", 2)
    monkeypatch.setattr(server_authentication, "SESSION_LIMIT", 2)
    with Context.from_app(multi_user) as context:
        context.authenticate(username="bob", password="secret2")
        context.create_api_key()
        context.create_api_key()
        with pytest.raises(ClientError) as info:
            context.create_api_key()
        assert info.value.status_code == 400 and "API keys" in info.value.response.json()["detail"]
        context.logout()  # a revoked session still counts until it expires
        context.authenticate(username="bob", password="secret2")
        context.logout()
        with pytest.raises(ClientError) as info:
            context.authenticate(username="bob", password="secret2")
        assert info.value.status_code == 400 and "sessions" in info.value.response.json()["detail"]


def test_scopes_the_credentials_lack_answer_401(multi_user, private_cache):
    with Context.from_app(multi_user) as context:
        context.authenticate(username="bob", password="secret2")
        key = context.create_api_key(scopes=["read:metadata"])
        with pytest.raises(AuthenticationRequired):
            context.admin.list_principals()  # bob is no administrator
        with pytest.raises(ClientError) as info:
            context.create_api_key(scopes=["admin:apikeys"])  # more than bob holds: 403
        assert info.value.status_code == 403
        assert "must be a subset of the principal's scopes" in str(info.value)
        context.logout()
        context.api_key = key["secret"]
        node = from_context(context)["x"]
        with pytest.raises(AuthenticationRequired, match="read:data"):
            node.read()

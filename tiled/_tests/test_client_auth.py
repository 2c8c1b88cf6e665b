"""Logins through the Python client and the client's commands, against a live multi-user
server: password grant, token refresh, remembered sessions, logout, profiles."""

from __future__ import annotations

import numpy
import pytest
from typer.testing import CliRunner

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.client import Context, from_context, from_profile
from tiled.client import context as context_module
from tiled.client.context import PasswordRejected
from tiled.client.utils import AuthenticationRequired
from tiled.commandline.main import cli_app
from tiled.config import Authentication
from tiled.server.app import build_app

from .live_server import serve
from .test_authentication import SHORT_LIFETIME, sleep_until_expired

USERS = {"alice": "secret1", "bob": "secret2"}
DATA = numpy.arange(2_000_000, dtype="float64")  # 16 MB: read through the zarr routes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    authentication = Authentication(
        providers=[{
            "provider": "toy", "authenticator": "tiled.authenticators:DictionaryAuthenticator",
            "args": {"users_to_passwords": USERS},
        }],
        secret_keys=["0123456789abcdef0123456789abcdef"],
        tiled_admins=[{"provider": "toy", "id": "alice"}],
        access_token_max_age=SHORT_LIFETIME,  # so that the tests see a refresh
    )  # fmt: skip
    database = tmp_path_factory.mktemp("authn") / "authn.db"
    tree = MapAdapter({"x": ArrayAdapter.from_array(DATA, chunks=(500_000,))})
    app = build_app(
        tree, authentication,
        server_settings={"database": {"uri": f"sqlite:///{database}", "init_if_not_exists": True}},
    )  # fmt: skip
    with serve(app) as live:
        yield live


@pytest.fixture(autouse=True)
def private_directories(tmp_path, monkeypatch):
    """Remembered sessions and profiles of this test only."""
    from tiled import profiles

    monkeypatch.setenv("TILED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(profiles, "paths", [tmp_path / "site", tmp_path / "user"])
    profiles.load_profiles.cache_clear()
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    monkeypatch.delenv("TILED_URI", raising=False)
    yield
    profiles.load_profiles.cache_clear()


def test_login_refresh_remember_and_logout(server):
    context = Context(server.url)
    with pytest.raises(AuthenticationRequired, match="401"):
        context.get_json("metadata/x")
    context.authenticate(username="alice", password=USERS["alice"])
    client = from_context(context)
    assert context.whoami()["identities"][0]["id"] == "alice"
    first = context.tokens["access_token"]
    sleep_until_expired(context.tokens)
    assert numpy.array_equal(client["x"].read(), DATA)  # through the zarr routes, concurrently
    assert client["x"][5:8].tolist() == DATA[5:8].tolist()
    assert context.tokens["access_token"] != first
    # A new context (a new process, say) resumes the remembered session without a password.
    again = Context(server.url)
    assert again.use_cached_tokens()
    assert again.whoami()["identities"][0]["id"] == "alice"
    refresh_token = context.tokens["refresh_token"]
    context.logout()
    assert not Context(server.url).use_cached_tokens()
    revoked = Context(server.url).request(
        "POST", "auth/session/refresh", json={"refresh_token": refresh_token}, check=False
    )
    assert revoked.status_code == 401


def test_wrong_password_and_prompts(server, monkeypatch):
    context = Context(server.url)
    with pytest.raises(PasswordRejected):
        context.authenticate(username="alice", password="wrong", remember_me=False)
    # Upstream's tests answer the prompts by replacing these two functions.
    monkeypatch.setattr(context_module, "username_input", lambda: "bob")
    monkeypatch.setattr(context_module, "password_input", lambda: USERS["bob"])
    client = from_context(Context(server.url), remember_me=False)  # prompts, then logs in
    assert client.context.whoami()["identities"][0]["id"] == "bob"
    assert client.context.tokens is not None


def test_api_keys_narrow_what_a_login_may_do(server):
    context = Context(server.url)
    context.authenticate(username="alice", password=USERS["alice"], remember_me=False)
    key = context.create_api_key(scopes=["read:metadata"], note="metadata only")
    limited = from_context(Context(server.url, api_key=key["secret"]))
    assert limited["x"].shape == DATA.shape
    assert limited.context.which_api_key()["note"] == "metadata only"
    # 401, as upstream answers when the credentials lack the scope.
    with pytest.raises(AuthenticationRequired, match="read:data"):
        limited["x"].read()
    context.revoke_api_key(key["first_eight"])
    with pytest.raises(AuthenticationRequired):
        Context(server.url, api_key=key["secret"]).get_json("metadata/x")


def test_commands_login_whoami_tree_logout_and_profiles(server, monkeypatch):
    monkeypatch.setattr(context_module, "password_input", lambda: USERS["alice"])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    run("login", "--uri", server.url, "--username", "alice")
    assert run("whoami", "--uri", server.url).strip() == "alice (toy)"
    assert "x" in run("tree", "--uri", server.url)
    # The api_key commands act with the remembered login too (as upstream's do).
    secret = run("api_key", "create", "--uri", server.url, "--note", "from the login").strip()
    assert "from the login" in run("api_key", "list", "--uri", server.url)
    run("api_key", "revoke", "--uri", server.url, secret[:8])
    assert "from the login" not in run("api_key", "list", "--uri", server.url)
    run("logout", "--uri", server.url)
    assert run("whoami", "--uri", server.url).strip() == "Not authenticated."
    refused = runner.invoke(cli_app, ["api_key", "list", "--uri", server.url])
    assert refused.exit_code == 1 and "tiled login" in refused.output
    # A URL that cannot be parsed, an unknown provider: one line, no traceback.
    for args in (
        ["login", "--uri", "http://[::1"],
        ["login", "--uri", server.url, "--provider", "nope"],
    ):
        failed = runner.invoke(cli_app, args)
        assert failed.exit_code == 1 and failed.output.startswith("Error:"), failed.output
    # Profiles: created, listed, shown, made the default, used by commands and from_profile.
    run("profile", "create", server.url, "--name", "here")
    assert run("profile", "list").split()[0] == "here"
    assert server.url in run("profile", "show", "here")
    run("profile", "set-default", "here")
    assert run("profile", "get-default").strip() == "here"
    run("login", "--username", "alice")  # the default profile names the server
    assert run("whoami").strip() == "alice (toy)"
    context = Context(server.url)
    context.authenticate(username="alice", password=USERS["alice"], remember_me=False)
    secret = context.create_api_key()["secret"]
    assert from_profile("here", api_key=secret)["x"].shape == DATA.shape
    run("profile", "clear-default")
    run("profile", "delete", "here")
    assert run("profile", "list").strip() == ""
    failed = runner.invoke(cli_app, ["whoami", "--profile", "nope"])
    assert failed.exit_code == 1 and "no profile 'nope'" in failed.output


def test_administrators_manage_principals_and_their_keys(server):
    admin = Context(server.url)
    admin.authenticate(username="alice", password=USERS["alice"], remember_me=False)
    service = admin.admin.create_service_principal("user")
    assert service["type"] == "service"
    assert service["uuid"] in [p["uuid"] for p in admin.admin.list_principals()]
    key = admin.admin.create_api_key(service["uuid"], scopes=["read:metadata", "read:data"])
    as_service = from_context(Context(server.url, api_key=key["secret"]))
    assert numpy.array_equal(as_service["x"][:4], DATA[:4])
    assert [k["first_eight"] for k in admin.admin.show_principal(service["uuid"])["api_keys"]] == [
        key["first_eight"]
    ]
    admin.admin.revoke_api_key(service["uuid"], key["first_eight"])
    with pytest.raises(AuthenticationRequired):
        Context(server.url, api_key=key["secret"]).get_json("metadata/x")
    bob = Context(server.url)
    bob.authenticate(username="bob", password=USERS["bob"], remember_me=False)
    with pytest.raises(AuthenticationRequired):
        bob.admin.list_principals()

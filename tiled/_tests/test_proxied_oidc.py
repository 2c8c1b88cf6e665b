"""Identity providers whose own access tokens the server accepts: upstream's
``ProxiedOIDCAuthenticator`` and ``EntraAuthenticator``.

The identity provider is a real one on a loopback port (``device_idp``: device flow, JWKS,
refresh, logout); Tiled runs as a live server with an authentication database in a SQLite
file; clients are httpx, this package's client and upstream's released client.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server.app import build_app

from .device_idp import run_idp
from .live_server import serve

AUDIENCE = "tiled-api"
READ = ["read:metadata", "read:data"]


@pytest.fixture(scope="module")
def idp():
    with run_idp(audience=AUDIENCE, interval=0) as provider:
        yield provider


def proxied_args(idp, **more) -> dict:
    return {
        "audience": AUDIENCE,
        "client_id": "tiled",
        "client_secret": "not-a-real-secret",
        "device_flow_client_id": "tiled-cli",
        "well_known_uri": idp.well_known_uri,
        **more,
    }


def tiled_server(tmp_path, providers, **authentication):
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(
        tree,
        {"providers": providers, "secret_keys": ["0123456789abcdef" * 2], **authentication},
        server_settings={
            "database": {"uri": f"sqlite:///{tmp_path / 'authn.db'}", "init_if_not_exists": True}
        },
    )
    return serve(app)


PROXIED = "tiled.authenticators:ProxiedOIDCAuthenticator"


@pytest.fixture(scope="module")
def server(idp, tmp_path_factory):
    """One proxied provider mapping the provider's scopes to Tiled's."""
    scopes_map = {
        "tiled.read": READ,
        "tiled.write": ["write:data", "write:metadata", "create"],
        "tiled.keys": ["apikeys", "create:apikeys"],
    }
    providers = [
        {
            "provider": "idp",
            "authenticator": PROXIED,
            "args": proxied_args(idp, scopes_map=scopes_map),
        }
    ]
    admins = [{"provider": "idp", "id": "root"}]
    with tiled_server(tmp_path_factory.mktemp("p"), providers, tiled_admins=admins) as live:
        yield live.url.rstrip("/")


def get(server, path, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server}/api/v1/{path}", headers=headers, **kwargs)


def test_about_sends_clients_to_the_provider(server, idp):
    about = httpx.get(f"{server}/api/v1/").json()["authentication"]
    (provider,) = about["providers"]
    assert provider["provider"] == "idp"
    assert provider["mode"] == "external"
    assert provider["links"] == {
        "auth_endpoint": f"{idp.url}/device",
        "authorize_endpoint": f"{server}/api/v1/auth/provider/idp/authorize",
        "client_id": "tiled-cli",
        "token_endpoint": f"{idp.url}/token",
    }
    assert provider["extra_scopes"] == []
    assert about["links"]["refresh_session"] == f"{idp.url}/token"
    assert about["links"]["logout"] == f"{idp.url}/logout"
    assert about["links"]["whoami"] == f"{server}/api/v1/auth/whoami"


def test_a_provider_token_reads_as_its_mapped_scopes_allow(server, idp):
    token = idp.issue_access_token("alice", ["tiled.read"])
    assert get(server, "metadata/x", token).status_code == 200
    assert get(server, "array/full/x", token, params={"format": "json"}).json() == list(range(10))
    # Reading only: writing needs scopes the token does not map to.
    refused = httpx.put(
        f"{server}/api/v1/metadata/x",
        json={"metadata": {"a": 1}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401
    assert "write:metadata" in refused.json()["detail"]


def test_the_principal_is_made_once_and_named_by_the_provider(server, idp):
    first = get(server, "auth/whoami", idp.issue_access_token("bob", ["tiled.read"])).json()
    second = get(server, "auth/whoami", idp.issue_access_token("bob", ["tiled.read"])).json()
    assert first["uuid"] == second["uuid"]
    assert [(i["provider"], i["id"]) for i in first["identities"]] == [("idp", "bob")]
    other = get(server, "auth/whoami", idp.issue_access_token("carol", ["tiled.read"])).json()
    assert other["uuid"] != first["uuid"]


def test_unmapped_provider_scopes_grant_nothing(server, idp):
    token = idp.issue_access_token("dave", ["email", "profile"])
    response = get(server, "metadata/x", token)
    assert response.status_code == 401
    assert "read:metadata" in response.json()["detail"]


def test_without_scp_the_scope_claim_is_mapped(server, idp):
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "erin", "iat": now, "exp": now + 300}
    # Keycloak's way: the provider's scopes in "scope".
    assert get(server, "metadata/x", idp.sign({**claims, "scope": "tiled.read"})).is_success
    # Neither (an application's own token): no scope at all, not every scope of the map.
    assert get(server, "metadata/x", idp.sign(claims)).status_code == 401


def test_refused_tokens(server, idp):
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "scp": "tiled.read",
              "iat": now, "exp": now + 300}  # fmt: skip
    expired = idp.sign({**claims, "iat": now - 900, "exp": now - 600})
    response = get(server, "metadata/x", expired)
    assert response.status_code == 401
    assert response.json()["detail"] == "Access token has expired. Refresh token."
    for token in (
        idp.sign({**claims, "aud": "another-api"}),  # for another audience
        idp.foreign_token(claims),  # signed with a key the provider never published
        idp.sign({**claims, "iss": "http://127.0.0.1:9/elsewhere"}),  # another issuer
        idp.sign({key: value for key, value in claims.items() if key != "exp"}),
        _unsigned({**claims, "iss": [idp.issuer]}),  # not a name (refused before any check)
        "not-a-token",
    ):
        response = get(server, "metadata/x", token)
        assert response.status_code == 401, token
        assert response.json()["detail"]


def _unsigned(claims: dict) -> str:
    """A token of these claims with a made-up signature (PyJWT signs no list as issuer)."""
    import base64

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_tokens_signed_with_a_new_key_are_accepted(server, idp, monkeypatch):
    from tiled import authenticators

    assert get(server, "metadata/x", idp.issue_access_token("frank", ["tiled.read"])).is_success
    idp.rotate_key(keep_old=True)
    # An unknown key id fetches the keys again, at most this often.
    monkeypatch.setattr(authenticators, "KEYS_REFETCH_SECONDS", 0.0)
    assert get(server, "metadata/x", idp.issue_access_token("frank", ["tiled.read"])).is_success


def test_admins_also_hold_the_admin_role_scopes(server, idp):
    token = idp.issue_access_token("root", ["tiled.read"])
    assert get(server, "auth/principal", token).status_code == 200  # read:principals
    token = idp.issue_access_token("grace", ["tiled.read"])
    assert get(server, "auth/principal", token).status_code == 401


def test_an_api_key_made_with_a_provider_token(server, idp):
    token = idp.issue_access_token("heidi", ["tiled.read", "tiled.keys"])
    made = httpx.post(
        f"{server}/api/v1/auth/apikey",
        json={"scopes": ["read:metadata"], "expires_in": 600},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert made.status_code == 200, made.text
    key = made.json()["secret"]
    response = httpx.get(f"{server}/api/v1/metadata/x", headers={"Authorization": f"Apikey {key}"})
    assert response.status_code == 200
    whoami = httpx.get(
        f"{server}/api/v1/auth/whoami", headers={"Authorization": f"Apikey {key}"}
    ).json()
    assert whoami["identities"][0]["id"] == "heidi"


def test_without_a_scopes_map_the_tokens_own_scopes_count(idp, tmp_path):
    providers = [{"provider": "idp", "authenticator": PROXIED, "args": proxied_args(idp)}]
    with tiled_server(tmp_path, providers) as live:
        server = live.url.rstrip("/")
        assert get(server, "metadata/x", idp.issue_access_token("ivan", READ)).is_success
        refused = get(server, "metadata/x", idp.issue_access_token("ivan", ["tiled.read"]))
        assert refused.status_code == 401


def test_an_unreachable_provider(tmp_path):
    args = {
        "audience": AUDIENCE,
        "client_id": "tiled",
        "device_flow_client_id": "tiled-cli",
        "well_known_uri": "http://127.0.0.1:9/.well-known/openid-configuration",
    }
    providers = [{"provider": "idp", "authenticator": PROXIED, "args": args}]
    with tiled_server(tmp_path, providers, allow_anonymous_access=True) as live:
        server = live.url.rstrip("/")
        # The about document still answers (anonymous reads need it), describing the
        # provider as a plain OpenID Connect one (upstream's clients refuse null links).
        about = httpx.get(f"{server}/api/v1/").json()["authentication"]
        assert about["providers"][0]["links"] == {
            "auth_endpoint": f"{server}/api/v1/auth/provider/idp/authorize"
        }
        assert about["links"]["refresh_session"] == f"{server}/api/v1/auth/session/refresh"
        assert get(server, "metadata/x").status_code == 200
        with run_idp(audience=AUDIENCE) as elsewhere:
            token = elsewhere.issue_access_token("judy", READ)
        response = get(server, "metadata/x", token)
        assert response.status_code == 503
        assert "identity provider" in response.json()["detail"]
        # A client that holds the provider's tokens, sent to Tiled's refresh route by the
        # document above, keeps its login: 503, not the 401 that ends it.
        for refresh_token in (token, "an-opaque-refresh-token"):
            response = httpx.post(
                f"{server}/api/v1/auth/session/refresh", json={"refresh_token": refresh_token}
            )
            assert response.status_code == 503, response.text


def test_one_unreachable_provider_leaves_the_others_working(idp, tmp_path):
    away = proxied_args(idp, well_known_uri="http://127.0.0.1:9/.well-known/openid-configuration")
    providers = [
        {"provider": "away", "authenticator": PROXIED, "args": away},
        {"provider": "idp", "authenticator": PROXIED, "args": proxied_args(idp)},
    ]
    with tiled_server(tmp_path, providers) as live:
        server = live.url.rstrip("/")
        assert get(server, "metadata/x", idp.issue_access_token("nina", READ)).is_success
        # A token no reachable provider issued may be the unreachable one's: 503, not 401.
        with run_idp(audience=AUDIENCE) as elsewhere:
            token = elsewhere.issue_access_token("nina", READ)
        assert get(server, "metadata/x", token).status_code == 503


def test_entra_names_users_by_readable_claims(idp, tmp_path):
    entra = "tiled.authenticators:EntraAuthenticator"
    args = proxied_args(idp, scopes_map={"tiled.read": READ}, extra_scopes=["api://x/y"])
    providers = [{"provider": "entra", "authenticator": entra, "args": args}]
    with tiled_server(tmp_path, providers) as live:
        server = live.url.rstrip("/")
        about = httpx.get(f"{server}/api/v1/").json()["authentication"]
        assert about["providers"][0]["extra_scopes"] == ["api://x/y"]
        token = idp.issue_access_token(
            "00000-opaque", ["tiled.read"], claims={"preferred_username": "kim@example.org"}
        )
        whoami = get(server, "auth/whoami", token).json()
        assert [(i["provider"], i["id"]) for i in whoami["identities"]] == [("entra", "kim")]
        assert get(server, "metadata/x", token).is_success


# --- this package's client ---


def test_the_client_logs_in_at_the_provider_refreshes_and_logs_out(server, idp, tmp_path):
    from tiled.client.context import Context

    shown = []

    def approve(verification):
        shown.append(verification)
        idp.approve(verification["user_code"], subject="liam", scopes=["tiled.read"])

    context = Context(f"{server}/api")
    context.authenticate(remember_me=False, show_device_login=approve)
    assert shown[0]["authorization_uri"].startswith(f"{idp.url}/verify")
    device_request = idp.device_requests[-1]
    assert device_request["client_id"] == "tiled-cli"
    assert set(device_request["scope"].split()) == {"openid", "offline_access"}
    assert context.whoami()["identities"][0]["id"] == "liam"
    first_access = context.tokens["access_token"]

    refreshed = context.force_auth_refresh()
    assert refreshed["access_token"] != first_access
    refresh_request = idp.token_requests[-1]
    assert refresh_request["grant_type"] == "refresh_token"
    assert refresh_request["client_id"] == "tiled-cli"

    # An access token the server refuses as expired is refreshed at the provider.
    now = int(time.time())
    context.http_client.auth.sync_set_token(
        "access_token",
        idp.sign({"iss": idp.issuer, "aud": AUDIENCE, "sub": "liam", "scp": "tiled.read",
                  "iat": now - 900, "exp": now - 600}),
    )  # fmt: skip
    before = len(idp.token_requests)
    assert context.whoami()["identities"][0]["id"] == "liam"
    assert len(idp.token_requests) == before + 1

    context.logout()
    assert idp.logouts[-1]["client_id"] == "tiled-cli"
    assert idp.logouts[-1].get("id_token_hint")
    assert context.tokens is None
    context.close()


def test_with_several_providers_a_login_refreshes_at_its_own(idp, tmp_path):
    from tiled.client.context import Context

    toy = "tiled.authenticators:DictionaryAuthenticator"
    providers = [
        {"provider": "toy", "authenticator": toy, "args": {"users_to_passwords": {"x": "y"}}},
        {"provider": "idp", "authenticator": PROXIED, "args": proxied_args(idp)},
    ]
    with tiled_server(tmp_path, providers) as live:
        context = Context(live.url)
        context.authenticate(
            remember_me=False,
            provider="idp",
            show_device_login=lambda v: idp.approve(v["user_code"], "olga", READ),
        )
        assert context.whoami()["identities"][0]["id"] == "olga"
        before = len(idp.token_requests)
        context.force_auth_refresh()
        assert idp.token_requests[before]["grant_type"] == "refresh_token"
        # The about document names no logout of this provider: the tokens are forgotten.
        logouts = len(idp.logouts)
        context.logout()
        assert len(idp.logouts) == logouts and context.tokens is None
        # A password login beside it refreshes at Tiled, as before.
        context.authenticate(remember_me=False, provider="toy", username="x", password="y")
        assert context.force_auth_refresh()["access_token"]
        context.close()


def test_a_refused_device_login_is_an_error(server, idp):
    from tiled.client.context import Context, DeviceLoginRefused

    context = Context(f"{server}/api")
    with pytest.raises(DeviceLoginRefused, match="access_denied"):
        context.authenticate(
            remember_me=False, show_device_login=lambda v: idp.deny(v["user_code"])
        )
    context.close()


# --- upstream's client ---

UPSTREAM_LOGIN = r"""
import json, sys
from tiled.client import context, from_uri

context.print = lambda *args, **kwargs: None
client = from_uri(sys.argv[1], remember_me=False)
sys.stdout.write(json.dumps({
    "identity": client.context.whoami()["identities"][0]["id"],
    "x": client["x"].read().tolist(),
}))
"""


@pytest.mark.slow
def test_upstream_client_logs_in_at_the_provider(tmp_path, upstream_client_python, monkeypatch):
    from .isolated_python import run_isolated

    # The browser upstream's client opens is none at all ("true URL").
    monkeypatch.setenv("BROWSER", "true")
    auto = {"subject": "mona", "scopes": ["tiled.read"]}
    with run_idp(audience=AUDIENCE, interval=0, auto_approve=auto) as idp:
        args = proxied_args(idp, scopes_map={"tiled.read": READ})
        providers = [{"provider": "idp", "authenticator": PROXIED, "args": args}]
        with tiled_server(tmp_path, providers) as live:
            result = run_isolated(upstream_client_python, UPSTREAM_LOGIN, live.url.rstrip("/"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"identity": "mona", "x": list(range(10))}
    assert idp.device_requests[-1]["client_id"] == "tiled-cli"

"""Logins through an OpenID Connect provider (``tiled.authenticators:OIDCAuthenticator``).

The identity provider is oidc-provider-mock (an authlib-based OpenID Connect server) on a
loopback port; its login form is answered by plain HTTP requests, as a browser would.
Tiled runs as a live server with an authentication database in a SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.authenticators import OIDCAuthenticator, UserSessionState
from tiled.client.context import Context
from tiled.server.app import build_app
from tiled.server.protocols import ExternalAuthenticator

from .live_server import serve

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
# The provider's library (authlib) warns of its own deprecations.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CLIENT_ID = "tiled-test-client"
USER = "alice@example.com"


@pytest.fixture(scope="module")
def provider():
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


def oidc_args(provider: str, **more) -> dict:
    return {
        "audience": CLIENT_ID,
        "client_id": CLIENT_ID,
        "client_secret": "not-a-real-secret",
        "well_known_uri": f"{provider}/.well-known/openid-configuration",
        "confirmation_message": "You have logged in as {id}.",
        **more,
    }


@pytest.fixture(scope="module")
def server(provider, tmp_path_factory):
    oidc = "tiled.authenticators:OIDCAuthenticator"
    providers = [
        {"provider": "example", "authenticator": oidc, "args": oidc_args(provider)},
        {
            "provider": "web",
            "authenticator": oidc,
            "args": oidc_args(
                provider,
                redirect_on_success="http://app.example/logged-in?from=tiled",
                redirect_on_failure="http://app.example/failed",
            ),
        },
        # Tokens name the client as their audience, not this: every login fails.
        {"provider": "strict", "authenticator": oidc, "args": oidc_args(provider, audience="x")},
        # Nothing listens there.
        {
            "provider": "away",
            "authenticator": oidc,
            "args": oidc_args("http://127.0.0.1:9"),
        },
    ]
    database = tmp_path_factory.mktemp("authn") / "authn.db"
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(
        tree,
        {
            "providers": providers,
            "secret_keys": ["0123456789abcdef0123456789abcdef"],
            "tiled_admins": [{"provider": "example", "id": "admin@example.com"}],
        },
        server_settings={"database": {"uri": f"sqlite:///{database}", "init_if_not_exists": True}},
    )
    with serve(app) as live:
        yield live.url.rstrip("/")


@pytest.fixture
def fast_polls(monkeypatch):
    from tiled.server.api import auth

    monkeypatch.setattr(auth, "DEVICE_CODE_POLLING_INTERVAL", 0.1)


def log_in_at_provider(authorization_url: str, user: str = USER, deny: bool = False) -> str:
    """What a browser does at the identity provider: fill in its login form. Returns where
    the provider sends the browser back to (Tiled's URL with the code)."""
    form = {"action": "deny"} if deny else {"sub": user}
    response = httpx.post(authorization_url, data=form)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def authorize_redirect(server: str, provider: str = "example", **params) -> str:
    response = httpx.get(f"{server}/api/v1/auth/provider/{provider}/authorize", params=params)
    assert response.status_code == 307, response.text
    return response.headers["location"]


def browser_login(server: str, provider: str = "example", user: str = USER) -> httpx.Response:
    back = log_in_at_provider(authorize_redirect(server, provider), user)
    return httpx.get(back)


def test_about_lists_the_external_providers(server):
    providers = httpx.get(f"{server}/api/v1/").json()["authentication"]["providers"]
    example = next(p for p in providers if p["provider"] == "example")
    assert example["mode"] == "external"
    assert example["links"]["auth_endpoint"] == f"{server}/api/v1/auth/provider/example/authorize"
    assert example["confirmation_message"] == "You have logged in as {id}."


def test_authorize_sends_the_browser_to_the_provider(server, provider):
    location = authorize_redirect(server, state="opaque-123")
    url = urlsplit(location)
    assert f"{url.scheme}://{url.netloc}" == provider
    params = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert params["client_id"] == CLIENT_ID
    assert params["response_type"] == "code"
    assert "openid" in params["scope"].split()
    assert params["redirect_uri"] == f"{server}/api/v1/auth/provider/example/code"
    assert params["state"] == "opaque-123"


def test_browser_login_gives_tokens_that_work(server):
    response = browser_login(server)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["identity"] == {"id": USER, "provider": "example"}
    assert tokens["token_type"] == "bearer"
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    who = httpx.get(f"{server}/api/v1/auth/whoami", headers=headers).json()
    assert UUID(who["uuid"]) == UUID(tokens["principal"])
    assert {"id": USER, "provider": "example"}.items() <= who["identities"][0].items()
    data = httpx.get(f"{server}/api/v1/array/full/x", headers=headers, params={"format": "json"})
    assert data.json() == list(range(10))
    refreshed = httpx.post(
        f"{server}/api/v1/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    # The same person logging in again is the same principal.
    assert browser_login(server).json()["principal"] == tokens["principal"]


def test_configured_admins_are_admins_after_their_first_login(server):
    tokens = browser_login(server, user="admin@example.com").json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    who = httpx.get(f"{server}/api/v1/auth/whoami", headers=headers).json()
    assert "admin" in {role["name"] for role in who["roles"]}
    listed = httpx.get(f"{server}/api/v1/auth/principal", headers=headers)
    assert listed.status_code == 200


def test_a_code_logs_in_once(server):
    back = log_in_at_provider(authorize_redirect(server))
    assert httpx.get(back).status_code == 200
    replayed = httpx.get(back)
    assert replayed.status_code == 401
    assert replayed.json()["detail"] == "Authentication failure"


@pytest.mark.parametrize("query", ["", "?code=forged", "?error=access_denied"])
def test_no_valid_code_is_no_login(server, query):
    response = httpx.get(f"{server}/api/v1/auth/provider/example/code{query}")
    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication failure"


def test_a_denied_login_is_no_login(server):
    back = log_in_at_provider(authorize_redirect(server), deny=True)
    assert "code=" not in back
    assert httpx.get(back).status_code == 401


def test_tokens_for_another_audience_are_refused(server):
    response = browser_login(server, provider="strict")
    assert response.status_code == 401


def test_redirects_of_a_web_application(server):
    back = log_in_at_provider(authorize_redirect(server, "web", state="s1"))
    response = httpx.get(back)
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert (target.netloc, target.path) == ("app.example", "/logged-in")
    params = {key: values[0] for key, values in parse_qs(target.query).items()}
    assert params["from"] == "tiled"
    assert params["state"] == "s1"
    assert params["identity.id"] == USER and params["identity.provider"] == "web"
    headers = {"Authorization": f"Bearer {params['access_token']}"}
    assert httpx.get(f"{server}/api/v1/auth/whoami", headers=headers).status_code == 200
    failed = httpx.get(f"{server}/api/v1/auth/provider/web/code?code=forged")
    assert failed.status_code == 302
    assert failed.headers["location"] == "http://app.example/failed"


def test_a_provider_out_of_reach_is_503_and_the_server_serves(server):
    response = httpx.get(f"{server}/api/v1/auth/provider/away/authorize")
    assert response.status_code == 503
    assert "identity provider" in response.json()["detail"]
    assert httpx.get(f"{server}/api/v1/").status_code == 200


def test_routes_of_one_mode_refuse_the_other(server):
    password = httpx.post(
        f"{server}/api/v1/auth/provider/nobody/token", data={"username": "a", "password": "b"}
    )
    assert password.status_code == 404
    assert httpx.get(f"{server}/api/v1/auth/provider/nobody/authorize").status_code == 404
    device = httpx.post(f"{server}/api/v1/auth/provider/example/token", json={})
    assert device.status_code == 400
    assert isinstance(device.json()["detail"], str)


def start_device_login(server: str) -> dict:
    response = httpx.post(f"{server}/api/v1/auth/provider/example/authorize")
    assert response.status_code == 200, response.text
    return response.json()


def poll(verification: dict) -> httpx.Response:
    return httpx.post(
        verification["verification_uri"], json={"device_code": verification["device_code"]}
    )


def type_user_code(verification: dict, user_code: str) -> httpx.Response:
    """What a user does in the browser: log in at the provider, then type the code."""
    back = log_in_at_provider(verification["authorization_uri"])
    page = httpx.get(back)
    assert page.status_code == 200 and "user_code" in page.text
    return httpx.post(back, data={"user_code": user_code})


def test_device_code_login_over_http(server):
    verification = start_device_login(server)
    assert verification["verification_uri"] == f"{server}/api/v1/auth/provider/example/token"
    assert verification["expires_in"] == 900
    assert len(verification["user_code"]) == 9 and verification["user_code"][4] == "-"
    pending = poll(verification)
    assert pending.status_code == 400
    assert pending.json()["detail"] == {"error": "authorization_pending"}
    wrong = type_user_code(verification, "0000-0000")
    assert wrong.status_code == 401 and "Invalid user code" in wrong.text
    assert poll(verification).status_code == 400
    # Typed in lower case and without the dash, as people do.
    typed = verification["user_code"].replace("-", "").lower()
    assert type_user_code(verification, typed).status_code == 200
    tokens = poll(verification)
    assert tokens.status_code == 200
    assert tokens.json()["identity"] == {"id": USER, "provider": "example"}
    # A device code gives tokens once.
    assert poll(verification).status_code == 404
    # A user code is used once.
    assert type_user_code(verification, typed).status_code == 401


def test_device_codes_that_are_not_codes(server):
    response = poll({"verification_uri": f"{server}/api/v1/auth/provider/example/token",
                     "device_code": "not hex"})  # fmt: skip
    assert response.status_code == 401
    assert poll({"verification_uri": f"{server}/api/v1/auth/provider/example/token",
                 "device_code": "00" * 32}).status_code == 404  # fmt: skip


def test_the_code_page_escapes_what_it_echoes(server):
    page = httpx.get(
        f"{server}/api/v1/auth/provider/example/device_code", params={"code": '"><script>x'}
    )
    assert page.status_code == 200
    assert "<script>x" not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_python_client_logs_in_with_a_device_code(server, fast_polls, capsys):
    shown = []

    def browser(verification):
        shown.append(verification)
        assert type_user_code(verification, verification["user_code"]).status_code == 200

    context = Context(server)
    context.authenticate(provider="example", remember_me=False, show_device_login=browser)
    assert shown and context.whoami()["identities"][0]["id"] == USER
    assert context.get_json("array/full/x", params={"format": "json"}) == list(range(10))
    context.logout()


def test_python_client_refuses_a_password_for_a_browser_login(server):
    with pytest.raises(ValueError, match="browser"):
        Context(server).authenticate(provider="example", username="a", password="b")


# --- the ID token checks, on tokens made here against the provider's real keys ---


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def checker(provider):
    return OIDCAuthenticator(**oidc_args(provider))


@pytest.fixture(scope="module")
def genuine(provider, server):
    """A genuine ID token and access token of the provider, and its key id."""
    from urllib.parse import urlencode

    redirect = "http://127.0.0.1:1/back"
    query = urlencode({"client_id": CLIENT_ID, "response_type": "code", "scope": "openid",
                       "redirect_uri": redirect})  # fmt: skip
    back = log_in_at_provider(f"{provider}/oauth2/authorize?{query}")
    code = parse_qs(urlsplit(back).query)["code"][0]
    response = httpx.post(
        f"{provider}/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
        auth=(CLIENT_ID, "not-a-real-secret"),
    )
    body = response.json()
    return body["id_token"], body["access_token"]


def verify(checker, id_token, access_token=None):
    return asyncio.run(checker.verified_claims(id_token, access_token))


def test_a_genuine_token_is_accepted(checker, genuine):
    claims = verify(checker, *genuine)
    assert claims["sub"] == USER and claims["aud"] in (CLIENT_ID, [CLIENT_ID])


def test_forged_tokens_are_refused(checker, genuine):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tiled.authenticators import InvalidIDToken

    id_token, access_token = genuine
    header_b64, payload_b64, signature = id_token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))

    def resigned(changes: dict, key=None, algorithm="RS256", headers=None) -> str:
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode({**claims, **changes}, key, algorithm=algorithm,
                          headers={**({"kid": header["kid"]} if "kid" in header else {}), **(headers or {})})  # fmt: skip

    tampered_payload = _b64(json.dumps({**claims, "sub": "mallory"}).encode())
    public_jwk = httpx.get(checker.well_known_uri).json()["jwks_uri"]
    public_pem_source = httpx.get(public_jwk).json()["keys"][0]
    public_key = jwt.PyJWK.from_dict(public_pem_source).key
    from cryptography.hazmat.primitives import serialization

    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{payload_b64}."
    forgeries = {
        "payload changed": f"{header_b64}.{tampered_payload}.{signature}",
        "signed by another key": resigned({}),
        "unsigned": unsigned,
        "HMAC with the public key": _hmac_token(claims, header.get("kid"), public_pem),
        "unknown key id": resigned({}, headers={"kid": "someone-else"}),
    }
    for name, token in forgeries.items():
        try:
            verify(checker, token, access_token)
        except InvalidIDToken:
            continue
        pytest.fail(f"a token {name} was accepted")
    # A genuine token with the wrong access token fails at_hash, when it carries one.
    if "at_hash" in claims:
        with pytest.raises(InvalidIDToken, match="at_hash"):
            verify(checker, id_token, "another-access-token")


def _hmac_token(claims: dict, kid: str | None, secret: bytes) -> str:
    import hashlib
    import hmac

    header = _b64(
        json.dumps({"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}).encode()
    )
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


UPSTREAM_DEVICE_LOGIN = r"""
import builtins, json, re, sys, webbrowser
import httpx
from tiled.client import context, from_uri

shown = []
context.print = lambda *args, **kwargs: shown.append(" ".join(map(str, args)))
builtins.input = lambda prompt="": "1"  # the first provider: "example"


def browser(url, *args, **kwargs):
    # What the user does: log in at the provider, then type the code the terminal showed.
    user_code = re.search(r"[0-9A-F]{4}-[0-9A-F]{4}", "\n".join(shown)).group(0)
    back = httpx.post(url, data={"sub": sys.argv[2]}).headers["location"]
    assert httpx.get(back).status_code == 200
    typed = httpx.post(back, data={"user_code": user_code})
    assert typed.status_code == 200, typed.text
    return True


webbrowser.open = browser
client = from_uri(sys.argv[1], remember_me=False)
sys.stdout.write(json.dumps({
    "keys": list(client),
    "identity": client.context.whoami()["identities"][0]["id"],
    "x": client["x"].read().tolist(),
}))
"""


@pytest.mark.slow
def test_upstream_client_logs_in_with_a_device_code(server, fast_polls, upstream_client_python):
    from .isolated_python import run_isolated

    result = run_isolated(upstream_client_python, UPSTREAM_DEVICE_LOGIN, server, USER)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got == {"keys": ["x"], "identity": USER, "x": list(range(10))}


# --- a provider that takes the client's secret in the form only (client_secret_post) ---


def _offering_only_secret_post(app):
    """The provider's WSGI app, its discovery document saying so (as such providers do)."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") != "/.well-known/openid-configuration":
            return app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        document = json.loads(b"".join(app(environ, capture)))
        document["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
        body = json.dumps(document).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return wrapped


def test_a_provider_that_takes_the_secret_in_the_form(tmp_path):
    import socket
    import threading

    import werkzeug.serving

    from tiled.server.simple import BackgroundServer

    app = oidc_provider_mock.app(require_client_registration=True)
    provider_server = werkzeug.serving.make_server(
        "localhost", 0, _offering_only_secret_post(app), threaded=True
    )
    threading.Thread(target=provider_server.serve_forever, daemon=True).start()
    provider = f"http://localhost:{provider_server.server_port}"
    try:
        with socket.socket() as probe:  # Tiled's port, known before its redirect URI is
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        redirect = f"http://127.0.0.1:{port}/api/v1/auth/provider/post/code"
        client = httpx.post(
            f"{provider}/oauth2/clients",
            json={"redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_post"},
        ).json()
        args = oidc_args(provider, client_id=client["client_id"], audience=client["client_id"],
                         client_secret=client["client_secret"])  # fmt: skip
        tiled_app = build_app(
            MapAdapter({}),
            {"providers": [{"provider": "post", "authenticator": OIDCAuthenticator(**args)}],
             "secret_keys": ["0123456789abcdef0123456789abcdef"]},
        )  # fmt: skip
        server = BackgroundServer(tiled_app, port=port).start()
        try:
            response = browser_login(server.url, provider="post")
            assert response.status_code == 200, response.text
            assert response.json()["identity"] == {"id": USER, "provider": "post"}
        finally:
            server.stop()
    finally:
        provider_server.shutdown()


# --- an external authenticator written for upstream: attributes, a plain authenticate ---


class CodeIsTheUser(ExternalAuthenticator):
    """As a site might have written one for upstream: the provider's endpoint and client id
    as attributes, a plain (not async) authenticate."""

    authorization_endpoint = "https://login.example/authorize"
    client_id = "site-client"

    def authenticate(self, request):
        code = request.query_params.get("code", "")
        return UserSessionState(code.removeprefix("good-")) if code.startswith("good-") else None


def test_an_upstream_style_external_authenticator(tmp_path):
    tiled_app = build_app(
        MapAdapter({}),
        {"providers": [{"provider": "site", "authenticator": CodeIsTheUser()}],
         "secret_keys": ["0123456789abcdef0123456789abcdef"]},
    )  # fmt: skip
    with serve(tiled_app) as live:
        base = f"{live.url}/api/v1/auth/provider/site"
        location = httpx.get(f"{base}/authorize").headers["location"]
        assert location.startswith("https://login.example/authorize?client_id=site-client&")
        tokens = httpx.get(f"{base}/code", params={"code": "good-carol"})
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["identity"] == {"id": "carol", "provider": "site"}
        assert httpx.get(f"{base}/code", params={"code": "bad"}).status_code == 401


def test_a_device_login_finished_elsewhere_names_the_identity_used(server):
    verification = start_device_login(server)
    # The user logs in with the "web" provider's page instead.
    web = start_device_login_at(server, "web")
    back = log_in_at_provider(web["authorization_uri"], user="dora@example.com")
    assert httpx.post(back, data={"user_code": verification["user_code"]}).status_code == 200
    tokens = poll(verification).json()
    assert tokens["identity"] == {"id": "dora@example.com", "provider": "web"}


def start_device_login_at(server: str, provider: str) -> dict:
    response = httpx.post(f"{server}/api/v1/auth/provider/{provider}/authorize")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_provider_out_of_reach_at_the_code_page_is_a_page(server):
    verification = start_device_login(server)
    page = httpx.post(
        f"{server}/api/v1/auth/provider/away/device_code?code=x",
        data={"user_code": verification["user_code"]},
    )
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "identity provider" in page.text


def test_at_hash_of_eddsa_tokens():
    import hashlib

    from tiled.authenticators import _token_hash

    expected = _b64(hashlib.sha512(b"token").digest()[:32])
    assert _token_hash("EdDSA", "token") == expected
    assert _token_hash("RS256", "token") == _b64(hashlib.sha256(b"token").digest()[:16])


# --- providers that misbehave (a WSGI app of this test, on loopback) ---


@contextlib.contextmanager
def wsgi_server(app):
    import threading

    import werkzeug.serving

    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _misbehaving(answers: dict):
    """A provider answering ``answers[path]``: a JSON-able value, or (status, body bytes),
    or an iterable of bytes chunks (sent as they come)."""

    def app(environ, start_response):
        answer = answers.get(environ["PATH_INFO"], (404, b"{}"))
        if callable(answer):
            answer = answer(environ)
        if isinstance(answer, tuple):
            status, body = answer
            start_response(f"{status} X", [("Content-Type", "application/json")])
            return [body]
        if isinstance(answer, (dict, list)):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(answer).encode()]
        start_response("200 OK", [("Content-Type", "application/json")])
        return answer

    return app


def _discovery(base: str, **changes) -> dict:
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        **changes,
    }


def _login_with(answers_for) -> tuple[httpx.Response, list[str]]:
    """A login through a provider answering ``answers_for(base)``: Tiled's answer to the
    code, and what Tiled logged meanwhile."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("tiled")
    logger.addHandler(handler)
    answers: dict = {}
    try:
        with wsgi_server(_misbehaving(answers)) as base:
            answers.update(answers_for(base))
            authenticator = OIDCAuthenticator(
                **{**oidc_args(base), "well_known_uri": f"{base}/discovery"}
            )
            app = build_app(
                MapAdapter({}),
                {"providers": [{"provider": "p", "authenticator": authenticator}],
                 "secret_keys": ["0123456789abcdef0123456789abcdef"]},
            )  # fmt: skip
            with serve(app) as live:
                response = httpx.get(f"{live.url}/api/v1/auth/provider/p/code?code=c", timeout=60)
    finally:
        logger.removeHandler(handler)
    return response, records


def test_tokens_without_an_id_token_are_refused_and_not_logged():
    response, logged = _login_with(lambda base: {
        "/discovery": _discovery(base),
        "/token": {"access_token": "AT-SECRET", "refresh_token": "RT-SECRET"},
    })  # fmt: skip
    assert response.status_code == 401
    assert logged and not any("SECRET" in line for line in logged)


@pytest.mark.parametrize(
    "answers_for",
    [
        pytest.param(lambda base: {"/discovery": (500, b"oops")}, id="discovery 500"),
        pytest.param(lambda base: {"/discovery": [1, 2]}, id="discovery not an object"),
        pytest.param(
            lambda base: {"/discovery": _discovery(base, id_token_signing_alg_values_supported=5)},
            id="algorithms not a list",
        ),
        pytest.param(
            lambda base: {"/discovery": _discovery(base, token_endpoint="http://[::1")},
            id="token endpoint not a URL",
        ),
        pytest.param(
            lambda base: {"/discovery": _discovery(base), "/token": (502, b"<html>")},
            id="token endpoint 502",
        ),
        pytest.param(
            lambda base: {"/discovery": _discovery(base), "/token": (200, b"[" * 100_000)},
            id="token answer nested deep",
        ),
        pytest.param(
            lambda base: {
                "/discovery": iter([b" " * 65536] * 20 + [json.dumps(_discovery(base)).encode()])
            },
            id="discovery past 1 MiB",
        ),
    ],
)
def test_a_provider_answering_garbage_is_503(answers_for):
    response, _ = _login_with(answers_for)
    assert response.status_code == 503, response.text
    assert "identity provider" in response.json()["detail"]


def test_a_trickling_provider_meets_a_deadline(monkeypatch):
    import tiled.authenticators

    monkeypatch.setattr(tiled.authenticators, "PROVIDER_DEADLINE_SECONDS", 1.0)

    def trickle():
        for _ in range(30):
            yield b" "
            time.sleep(0.2)  # each read well within httpx's timeout

    response, _ = _login_with(lambda base: {"/discovery": lambda environ: trickle()})
    assert response.status_code == 503


def _signed(key, algorithm: str, base: str, **claims) -> str:
    import jwt

    now = int(time.time())
    payload = {"iss": base, "aud": CLIENT_ID, "sub": "erin", "iat": now, "exp": now + 60,
               **claims}  # fmt: skip
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": "k1"})


@pytest.fixture(scope="module")
def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _checked(rsa_key, algorithm: str, jwk_changes: dict = (), **claims):
    import jwt

    from tiled.authenticators import InvalidIDToken

    entry = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "k1",
             **dict(jwk_changes)}  # fmt: skip
    answers: dict = {}
    with wsgi_server(_misbehaving(answers)) as base:
        answers["/discovery"] = _discovery(
            base, id_token_signing_alg_values_supported=["RS256", "PS256"]
        )
        answers["/jwks"] = {"keys": [entry]}
        checker = OIDCAuthenticator(**{**oidc_args(base), "well_known_uri": f"{base}/discovery"})
        try:
            return verify(checker, _signed(rsa_key, algorithm, base, **claims))
        except InvalidIDToken as error:
            return error


def test_ps256_with_a_key_that_names_no_algorithm(rsa_key):
    assert _checked(rsa_key, "PS256")["sub"] == "erin"
    assert _checked(rsa_key, "RS256")["sub"] == "erin"
    # A key that names its algorithm is used for that one only.
    refused = _checked(rsa_key, "PS256", {"alg": "RS256"})
    assert "not a key for PS256" in str(refused) and not isinstance(refused, dict)


def test_a_token_issued_to_another_client_is_refused(rsa_key):
    from tiled.authenticators import InvalidIDToken

    refused = _checked(rsa_key, "RS256", azp="another-client")
    assert isinstance(refused, InvalidIDToken) and "azp" in str(refused)
    assert _checked(rsa_key, "RS256", azp=CLIENT_ID)["sub"] == "erin"


def test_wrong_user_codes_hold_no_database_connection(provider, tmp_path, monkeypatch):
    """Each wrong code waits (longer and longer) before its answer, with no connection of
    the authentication database's pool held meanwhile: guesses cannot use the pool up."""
    import concurrent.futures
    import threading

    from tiled.server import failure_delays

    # Every wait lasts until the pool has been looked at, not its delay (at most 2 s, which a
    # loaded machine may let run out before it looks); the delays asked for are recorded.
    delays: list[float] = []
    release = threading.Event()

    async def held(seconds: float) -> None:
        delays.append(seconds)
        while not release.is_set():
            await asyncio.sleep(0.01)

    monkeypatch.setattr(failure_delays, "sleep", held)
    database = tmp_path / "authn.db"
    app = build_app(
        MapAdapter({}),
        {"providers": [{"provider": "example", "authenticator": OIDCAuthenticator(
            **oidc_args(provider))}],
         "secret_keys": ["0123456789abcdef0123456789abcdef"]},
        server_settings={"database": {"uri": f"sqlite:///{database}",
                                      "init_if_not_exists": True}},
    )  # fmt: skip
    with serve(app) as live:
        authenticator = app.state.tiled.authenticator
        url = f"{live.url}/api/v1/auth/provider/example/device_code?code=same"
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            try:
                guesses = [
                    pool.submit(httpx.post, url, data={"user_code": f"0000-{i:04d}"}, timeout=60)
                    for i in range(24)
                ]
                deadline = time.monotonic() + 60
                while len(delays) < 24:
                    assert time.monotonic() < deadline, f"{len(delays)} of 24 failed"
                    time.sleep(0.01)
                # All 24 have failed, and all wait their delay.
                assert not any(guess.done() for guess in guesses)
                assert authenticator.database.engine.pool.checkedout() == 0
            finally:
                release.set()
            assert {guess.result().status_code for guess in guesses} == {401}
    # From one address: each failure waits twice as long as the one before, up to the cap.
    assert delays == [min(0.05 * 2**n, 2.0) for n in range(24)]


def test_the_code_form_sent_twice_is_a_login_not_a_failure(server):
    import concurrent.futures

    def submit(back: str, user_code: str) -> int:
        return httpx.post(back, data={"user_code": user_code}).status_code

    for together in (False, True):
        verification = start_device_login(server)
        back = log_in_at_provider(verification["authorization_uri"])
        if together:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                sent = [pool.submit(submit, back, verification["user_code"]) for _ in range(2)]
                statuses = [future.result() for future in sent]
        else:
            statuses = [submit(back, verification["user_code"]) for _ in range(2)]
        assert statuses == [200, 200], together
        assert poll(verification).json()["identity"] == {"id": USER, "provider": "example"}

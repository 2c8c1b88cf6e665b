"""A connection to a Tiled server: base URL, credentials, one HTTP client, retries, errors.

Every node client holds the :class:`Context` it was read through. Requests go through
:meth:`Context.request`, which retries on connection errors, 429 and 502/503/504 (with backoff,
see :func:`~tiled.client.utils.retry_context`), at most ``max_connections`` at a time, and
turns error answers into :class:`~tiled.client.utils.ClientError` with the server's ``detail``.
Bulk array bytes travel through the zarr routes (``/zarr/v3``) concurrently; see
:meth:`Context.zarr_store`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from .._version import __version__
from .auth import CannotRefreshAuthentication, TiledAuth, token_directory
from .logger import log_request, log_response
from .transport import Transport
from .utils import (
    DEFAULT_TIMEOUT_PARAMS,
    DOCUMENT_TYPES,
    AttributeDict,
    ProgressState,
    StandaloneRetryIndicator,
    decode_document,
    detail_of,
    handle_error,
    with_retries,
)

if TYPE_CHECKING:
    from .cache import Cache

UNSET: Any = object()
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
APP_BASE = "http://local-tiled-app"
DEFAULT_TIMEOUT = httpx.Timeout(**DEFAULT_TIMEOUT_PARAMS)


class PasswordRejected(RuntimeError):
    """The server did not accept the username and password."""


def username_input() -> str:
    """Ask for a username (on standard error, so that standard output stays clean)."""
    import sys

    sys.stderr.write("Username: ")
    sys.stderr.flush()
    return input()


def password_input() -> str:
    import getpass

    return getpass.getpass("Password: ", stream=None)


# Every context's chunk sessions still open, closed at exit by _close_all_at_exit.
_OPEN_SESSIONS: dict[int, dict[int, tuple[Any, Any]]] = {}
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _close_all_at_exit() -> None:
    for sessions in list(_OPEN_SESSIONS.values()):
        _close_sessions(sessions)


def _register_exit_hook() -> None:
    """Close open sessions at exit, before zarr-python stops the loop they live on: atexit
    runs the last registered first, and this is registered after zarr is imported."""
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            import atexit

            atexit.register(_close_all_at_exit)
            _exit_hook_registered = True


def _close_sessions(sessions: dict[int, tuple[Any, Any]]) -> None:
    """Close the chunk sessions on their own loops (when the context is closed or freed)."""
    import asyncio

    _OPEN_SESSIONS.pop(id(sessions), None)

    for loop, session in list(sessions.values()):
        if session.closed or loop.is_closed():
            continue
        try:
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if current is loop:  # freed on the session's own loop: it cannot be waited for here
                loop.create_task(session.close())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
            else:
                loop.run_until_complete(session.close())
        except Exception:  # a loop shutting down at exit: nothing left to release
            pass
    sessions.clear()


def password_grant(
    http_client: httpx.Client, auth_endpoint: str, provider: str, username: str, password: str
) -> dict[str, Any]:
    """The tokens of a login (OAuth2 password grant) at ``auth_endpoint``; raises
    :class:`PasswordRejected` on a 401."""
    response = http_client.post(auth_endpoint, data={"username": username, "password": password})
    if response.status_code == 401:
        raise PasswordRejected(f"Username or password not recognized: {detail_of(response)}")
    handle_error(response)
    return response.json()


def print_device_login(verification: Mapping[str, Any]) -> None:
    """Tell the user where to log in for a device-code login, and open it in a browser
    where there is one (a terminal without one shows the URL to copy)."""
    import webbrowser

    minutes = int(verification["expires_in"]) // 60
    print(
        f"\nYou have {minutes} minutes to visit this URL\n\n{verification['authorization_uri']}"
        f"\n\nand enter the code:\n\n{verification['user_code']}\n"
    )
    webbrowser.open(verification["authorization_uri"])


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def device_code_grant(
    http_client: httpx.Client,
    auth_endpoint: str,
    show: Callable[[Mapping[str, Any]], None] = print_device_login,
    client_id: str | None = None,
    token_endpoint: str | None = None,
    scopes: str = "openid offline_access",
    verify: bool | str = True,
) -> dict[str, Any]:
    """The tokens of a device-code login started at ``auth_endpoint``: ``show`` tells the
    user where to log in, then the token endpoint is polled until the login is finished,
    refused or expired.

    Without ``client_id``, the login is the server's own (it logs the user in at its
    provider in the browser); with ``client_id`` and ``token_endpoint``, it is the identity
    provider's device flow (RFC 8628), as that public client, for the ``scopes``: a server
    whose provider is a ``ProxiedOIDCAuthenticator`` takes the provider's tokens (``verify``:
    how to check the provider's TLS certificate, as httpx takes it)."""
    if client_id and token_endpoint:
        # A client of its own: the identity provider gets none of this server's credentials.
        with httpx.Client(timeout=30, verify=verify) as provider:
            return _provider_device_grant(
                provider, auth_endpoint, show, client_id, token_endpoint, scopes
            )
    import time

    start = http_client.post(auth_endpoint)
    handle_error(start)
    verification = start.json()
    show(verification)
    deadline = time.monotonic() + float(verification["expires_in"])
    interval = float(verification.get("interval", 5))
    while time.monotonic() < deadline:
        time.sleep(interval)
        response = http_client.post(
            verification["verification_uri"],
            json={
                "device_code": verification["device_code"],
                "grant_type": DEVICE_GRANT,
            },
            auth=None,
        )
        if response.status_code == 400:
            detail = (response.json() or {}).get("detail")
            if isinstance(detail, dict) and detail.get("error") == "authorization_pending":
                continue
        handle_error(response)
        return response.json()
    raise TimeoutError("The login was not finished in time; start again")


def _provider_scopes(provider: Mapping[str, Any]) -> str:
    """The scopes a login at an identity provider asks for (the about document's entry)."""
    return " ".join(sorted({"openid", "offline_access", *(provider.get("extra_scopes") or ())}))


class DeviceLoginRefused(RuntimeError):
    """The identity provider ended a device-code login (refused, expired, or an error)."""


def _provider_device_grant(
    provider: httpx.Client,
    auth_endpoint: str,
    show: Callable[[Mapping[str, Any]], None],
    client_id: str,
    token_endpoint: str,
    scopes: str,
) -> dict[str, Any]:
    import time

    start = provider.post(auth_endpoint, data={"client_id": client_id, "scope": scopes})
    if start.status_code != 200:
        raise DeviceLoginRefused(f"The identity provider refused the login: {start.text}")
    verification = dict(start.json())
    for key in ("verification_uri_complete", "verification_uri", "verification_url"):
        if verification.get(key):  # verification_url: Entra's name
            verification.setdefault("authorization_uri", verification[key])
            break
    else:
        raise DeviceLoginRefused(f"The identity provider named no URL to visit: {verification}")
    show(verification)
    deadline = time.monotonic() + float(verification.get("expires_in", 600))
    interval = float(verification.get("interval", 5))
    form = {"grant_type": DEVICE_GRANT, "client_id": client_id}
    form["device_code"] = verification["device_code"]
    while time.monotonic() < deadline:
        time.sleep(interval)
        response = provider.post(token_endpoint, data=form)
        if response.status_code == 200:
            return response.json()
        try:
            error = response.json().get("error")
        except ValueError:
            error = None
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5  # as RFC 8628 asks
            continue
        raise DeviceLoginRefused(f"The identity provider ended the login: {response.text}")
    raise TimeoutError("The login was not finished in time; start again")


def _split_api_key(uri: str) -> tuple[str, str | None]:
    """``uri`` without an ``api_key`` query parameter, and that key."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [value for name, value in query if name == "api_key"]
    rest = urlencode([(name, value) for name, value in query if name != "api_key"])
    return urlunsplit(parts._replace(query=rest)), (keys[0] if keys else None)


def api_root_and_path(uri: str) -> tuple[str, list[str]]:
    """The API root (``.../api/v1``) of any Tiled URI and the node path it names.

    ``http://host:8000`` -> ``http://host:8000/api/v1``; ``.../api`` -> ``.../api/v1``;
    ``.../api/v1/metadata/a/b`` -> (``.../api/v1``, ``["a", "b"]``).
    """
    from urllib.parse import unquote

    parts = urlsplit(uri)
    path = parts.path.rstrip("/")
    node: list[str] = []
    if "/api/v1/" in f"{path}/":
        root, _, rest = f"{path}/".partition("/api/v1/")
        segments = [unquote(s) for s in rest.strip("/").split("/") if s]
        if segments and segments[0] in ("metadata", "search", "array", "table", "node"):
            segments = segments[1:] if segments[0] in ("metadata", "search") else segments[2:]
        node = segments
        path = f"{root}/api/v1"
    elif path.endswith("/api"):
        path = f"{path}/v1"
    else:
        path = f"{path}/api/v1"
    return urlunsplit(parts._replace(path=path, query="", fragment="")), node


class Context:
    """Credentials and an HTTP client for one Tiled server, shared by the nodes read from it.

    ``uri`` is the server (``http://host:8000``) or its API root (``.../api/v1``). The API
    key comes from ``api_key``, an ``?api_key=`` in ``uri``, or ``TILED_API_KEY``.
    """

    def __init__(
        self,
        uri: str,
        *,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        cache: Any = UNSET,
        timeout: httpx.Timeout | float | None = None,
        verify: bool | str = True,
        app: Any = None,
        raise_server_exceptions: bool = True,
        max_connections: int = 8,
        show_progress: bool | None = None,
    ):
        uri, key_in_uri = _split_api_key(uri)
        if cache is UNSET:
            cache = None  # as upstream: answers are cached only when a Cache is given
        root, _ = api_root_and_path(uri)
        self.api_uri = f"{root}/"  # upstream's form: requests are ``api_uri + path``
        self.app = app
        self.max_connections = max_connections
        if show_progress is None:
            setting = os.environ.get("TILED_SHOW_PROGRESS", "1").strip().lower()
            show_progress = setting not in ("0", "false", "no", "off", "")
        # Whether reads may show progress bars; they appear only on a terminal (is_interactive).
        self.show_progress = show_progress
        self._timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        self._verify = verify
        self._headers = {
            "user-agent": f"python-tiled/{__version__}",
            **dict(headers or {}),
        }
        if app is not None:
            import warnings

            with warnings.catch_warnings():
                # Starlette would rather see httpx2; the test client works the same with httpx.
                warnings.simplefilter("ignore")
                from starlette.testclient import TestClient

                self.http_client: httpx.Client = TestClient(
                    app, base_url=APP_BASE, raise_server_exceptions=raise_server_exceptions
                )
            self.http_client.headers.update(self._headers)
            self.http_client.timeout = self._timeout
            # Cached answers of the app too: the in-process transport is wrapped.
            self.http_client._transport = Transport(
                transport=self.http_client._transport, cache=cache
            )
            self.http_client.__enter__()  # runs the app's startup
        else:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            # Our transport (response cache, environment's proxies) carries verify and limits.
            self.http_client = httpx.Client(
                headers=self._headers, timeout=self._timeout,
                transport=Transport(cache=cache, limits=limits, verify=verify),
            )  # fmt: skip
        self.http_client.event_hooks = {"request": [log_request], "response": [log_response]}
        # At most max_connections requests in flight from this context, whatever the
        # transport (an in-process app has no connection pool to hold dask's threads back).
        self._concurrent_request_semaphore: Any = threading.Semaphore(max_connections)
        # The progress bar being shown (tracking_progress), and the retry notice shown
        # when there is none (signal_retry); read by worker threads, set by the main one.
        self._progress_state: Any = None
        self._retry_indicator: StandaloneRetryIndicator | None = None
        self._api_key: str | None = None
        # Event loop id -> (loop, aiohttp session) fetching zarr chunks on that loop.
        self._chunk_sessions: dict[int, tuple[Any, Any]] = {}
        self._finalizer = weakref.finalize(self, _close_sessions, self._chunk_sessions)
        self._lock = threading.Lock()
        self.api_key = api_key or key_in_uri or os.environ.get("TILED_API_KEY") or None
        # Read by key (``server_info["formats"]``) or by attribute, as upstream's model is.
        try:
            self.server_info: AttributeDict = AttributeDict(self._about())
        except BaseException:
            self.close()  # not left open (nor an app's lifespan running) for a failed context
            raise

    def _about(self) -> dict[str, Any]:
        """The server's about document; a ValueError naming the URL when what answers there
        is not a Tiled server (a web page, some other JSON)."""
        response = self.request("GET", "", headers={"Accept": DOCUMENT_TYPES})
        try:
            about = decode_document(response)
        except Exception:  # JSON or msgpack that does not decode: a web page, say
            about = None
        if not isinstance(about, dict) or "api_version" not in about:
            kind = response.headers.get("content-type") or "no content type"
            raise ValueError(
                f"{self.api_uri} is not a Tiled server's API (it answered {kind}: "
                f"{response.text[:80]!r}); give the server's address, e.g. http://host:8000"
            )
        return about

    # --- construction ---

    @classmethod
    def from_any_uri(cls, uri: str, **kwargs: Any) -> tuple[Context, list[str]]:
        """A context for the server of ``uri`` and the path of the node ``uri`` names."""
        plain, key = _split_api_key(uri)
        api, path = api_root_and_path(plain)
        if key is not None and kwargs.get("api_key") is None:
            kwargs["api_key"] = key
        return cls(api, **kwargs), path

    @classmethod
    def from_app(
        cls,
        app: Any,
        *,
        api_key: Any = UNSET,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        raise_server_exceptions: bool = True,
        uri: str | None = None,
        **kwargs: Any,
    ) -> Context:
        """A context that calls an ASGI app in this process (tests, notebooks).

        Left unset, ``api_key`` is the app's own single-user key, so that
        ``Context.from_app(build_app(tree))`` just works.
        """
        if api_key is UNSET:
            # The app's state, read without importing the server (see tiled.server.state).
            server_state = getattr(getattr(app, "state", None), "tiled", None)
            api_key = getattr(getattr(server_state, "authenticator", None), "api_key", None)
        return cls(
            uri or f"{APP_BASE}/api/v1", app=app, api_key=api_key, headers=headers,
            timeout=timeout, raise_server_exceptions=raise_server_exceptions, **kwargs,
        )  # fmt: skip

    # --- response cache ---

    @property
    def cache(self) -> Cache | None:
        """The :class:`~tiled.client.cache.Cache` answers are kept in (None: not kept); may
        be replaced or set to None at any time."""
        return self.http_client._transport.cache

    @cache.setter
    def cache(self, cache: Cache | None) -> None:
        self.http_client._transport.cache = cache

    # --- credentials ---

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._api_key = value
        if value:
            self.http_client.headers["Authorization"] = f"Apikey {value}"
        elif self.http_client.headers.get("Authorization", "").startswith("Apikey "):
            # Only a key is withdrawn: credentials given in ``headers=`` stay.
            del self.http_client.headers["Authorization"]

    def auth_headers(self) -> dict[str, str]:
        """The headers that carry this context's credentials."""
        value = self.http_client.headers.get("Authorization")
        return {"Authorization": value} if value else {}

    @property
    def base_url(self) -> str:
        return self.api_uri.rsplit("/api/v1/", 1)[0]

    @property
    def authentication_providers(self) -> list[dict[str, Any]]:
        return list(self.server_info.get("authentication", {}).get("providers", []))

    @property
    def authentication_required(self) -> bool:
        return bool(self.server_info.get("authentication", {}).get("required"))

    # --- logins (multi-user servers) ---

    @property
    def authenticated(self) -> bool:
        """Whether requests carry credentials (an API key or a login)."""
        return self.api_key is not None or self.http_client.auth is not None

    @property
    def tokens(self) -> dict[str, Any] | None:
        """The access and refresh tokens of a login (None with an API key or anonymous)."""
        auth = self.http_client.auth
        return dict(auth.tokens) if isinstance(auth, TiledAuth) else None

    def _password_providers(self) -> list[str]:
        return [p["provider"] for p in self.authentication_providers if p.get("mode") in
                ("internal", "password")]  # fmt: skip

    def _external_providers(self) -> dict[str, dict[str, Any]]:
        return {p["provider"]: p for p in self.authentication_providers
                if p.get("mode") == "external"}  # fmt: skip

    def _token_directory(self) -> Any:
        return token_directory(self.api_uri)

    def _new_auth(self, remember: bool, provider: Mapping[str, Any] | None = None) -> TiledAuth:
        """An auth for the tokens of a login with ``provider`` (its entry in the about
        document; by default the server's one provider, as remembered tokens name none).
        Tokens of a provider that has clients log in at the identity provider (a
        ``ProxiedOIDCAuthenticator``) are refreshed there, as its public client."""
        if provider is None:
            providers = self.authentication_providers
            provider = providers[0] if len(providers) == 1 else {}
        links = provider.get("links") or {}
        client_id, scopes = None, None
        if links.get("client_id") and links.get("token_endpoint"):
            client_id, refresh_url = links["client_id"], links["token_endpoint"]
            # A refresh asks again for the extra scopes only, as upstream's client does.
            scopes = _provider_scopes(provider) if provider.get("extra_scopes") else None
        else:
            links = self.server_info.get("authentication", {}).get("links") or {}
            refresh_url = links.get("refresh_session") or self.url("auth/session/refresh")
        return TiledAuth(
            refresh_url, self.http_client.cookies.get("tiled_csrf"),
            self._token_directory() if remember else None, client_id, scopes,
        )  # fmt: skip

    def configure_auth(
        self,
        tokens: Mapping[str, Any],
        remember_me: bool = True,
        provider: Mapping[str, Any] | None = None,
    ) -> None:
        """Use the tokens of a login (``access_token``, ``refresh_token``, as
        :func:`password_grant` returns them) for the requests of this context, refreshing
        them when they expire. With ``remember_me`` they are kept on disk for this server
        (see :meth:`use_cached_tokens`); without, any remembered ones are forgotten.
        ``provider``: the about document's entry of the provider of the login (by default
        the server's one provider)."""
        if not remember_me:
            self._new_auth(remember=True).clear()
        auth = self._new_auth(remember_me, provider)
        auth.sync_tokens(tokens)
        self.api_key = None  # a login replaces a key
        self.http_client.auth = auth

    def authenticate(
        self,
        remember_me: bool = True,
        *,
        provider: str | None = None,
        username: str | None = None,
        password: str | None = None,
        show_device_login: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """Log in: with a username and password (prompted for when not given), or, with an
        OpenID Connect provider, in a browser (a device-code login: the URL and a code to
        type are shown by ``show_device_login``, printed by default). With ``remember_me``
        the session is remembered for this server until :meth:`logout`."""
        external = self._external_providers()
        # In the server's order: the first is the default, as the server lists it.
        offered = [p["provider"] for p in self.authentication_providers
                   if p.get("mode") in ("internal", "password", "external")]  # fmt: skip
        if not offered:
            raise RuntimeError("This server offers no login; use an API key")
        if provider is not None and provider not in offered:
            raise ValueError(f"No provider {provider!r}; this server has {offered}")
        provider = provider or offered[0]
        if provider in external:
            if username is not None or password is not None:
                raise ValueError(f"Provider {provider!r} logs in in a browser, not by password")
            links = external[provider]["links"]
            show = show_device_login or print_device_login
            tokens = device_code_grant(
                self.http_client, links["auth_endpoint"], show, links.get("client_id"),
                links.get("token_endpoint"), _provider_scopes(external[provider]),
                self._verify,
            )  # fmt: skip
        else:
            username = username if username is not None else username_input()
            password = password if password is not None else password_input()
            endpoint = self.url(f"auth/provider/{provider}/token")
            tokens = password_grant(self.http_client, endpoint, provider, username, password)
        entry = next(p for p in self.authentication_providers if p["provider"] == provider)
        self.configure_auth(tokens, remember_me, entry)

    login = authenticate

    def use_cached_tokens(self) -> bool:
        """Resume the session remembered for this server; False if there is none (or it
        has ended). The server is asked, so that an ended session is found out now rather
        than on the next request."""
        auth = self._new_auth(remember=True)
        if auth.sync_get_token("refresh_token") is None:
            return False
        previous, self.http_client.auth = self.http_client.auth, auth
        try:
            response = self.request("GET", "auth/whoami", check=False)
        except CannotRefreshAuthentication:
            self.http_client.auth = previous
            return False
        if response.status_code == 401:
            self.http_client.auth = previous
            return False
        self.api_key = None
        return True

    def force_auth_refresh(self) -> dict[str, Any]:
        """Trade the refresh token for new tokens now (this happens by itself when the access
        token expires); raises CannotRefreshAuthentication if the session has ended."""
        auth = self.http_client.auth
        if not isinstance(auth, TiledAuth):
            raise RuntimeError("There is no login to refresh")
        request = auth.refresh_request()
        response = with_retries(lambda: self.http_client.send(request, auth=None),
                                context=self, idempotent=False)  # fmt: skip
        return auth.accept_refresh(response)

    def logout(self) -> None:
        """End the login: revoke the session on the server and forget its tokens (in memory
        and remembered on disk). Doing it twice does no harm."""
        auth = self.http_client.auth
        if isinstance(auth, TiledAuth) and auth.client_id:
            # The identity provider's session: ended there (its end_session_endpoint).
            links = self.server_info.get("authentication", {}).get("links") or {}
            # The about document names the provider's logout when it is the one provider
            # (its refresh link is then the provider's too); with several, none is known.
            logout = (
                links.get("logout") if links.get("refresh_session") == auth.refresh_url else None
            )
            id_token = auth.sync_get_token("id_token")
            try:
                if logout:
                    params = {"client_id": auth.client_id}
                    if id_token:
                        params["id_token_hint"] = id_token
                    with httpx.Client(timeout=30, verify=self._verify) as provider:
                        provider.get(logout, params=params)
            except httpx.HTTPError as error:
                import warnings

                warnings.warn(f"The identity provider's logout failed: {error}", stacklevel=2)
            finally:
                auth.clear()  # the tokens are forgotten here whatever the provider said
        elif isinstance(auth, TiledAuth):
            refresh_token = auth.sync_get_token("refresh_token")
            if refresh_token is not None:
                # The refresh token is the proof here, not an Authorization header.
                self.request("POST", "auth/session/revoke", auth=None,
                             json={"refresh_token": refresh_token}, check=False)  # fmt: skip
            auth.clear()
        self._new_auth(remember=True).clear()
        self.http_client.auth = None

    def revoke_session(self, session_id: str) -> None:
        self.request("DELETE", f"auth/session/revoke/{session_id}")

    def whoami(self) -> dict[str, Any] | None:
        """The principal these credentials act as (None when anonymous)."""
        response = self.request("GET", "auth/whoami", check=False)
        if response.status_code == 404:  # a server without logins
            import warnings

            warnings.warn(
                "Authentication providers were not configured on the server.", stacklevel=2
            )
            return None
        if response.status_code == 401 and not self.credential_headers():
            return None  # anonymous
        handle_error(response)  # credentials the server refuses (a revoked key) raise
        return response.json()

    def which_api_key(self) -> dict[str, Any]:
        """What the server knows of the API key in use (scopes, expiry, note)."""
        if not self.api_key:
            raise RuntimeError("No API key is set on this context")
        return self.get_json("auth/apikey")

    def create_api_key(
        self,
        scopes: list[str] | None = None,
        expires_in: int | None = None,
        note: str | None = None,
        access_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new API key for the current principal; its ``secret`` is shown only now."""
        body = {"scopes": scopes, "expires_in": expires_in, "note": note}
        if access_tags is not None:
            body["access_tags"] = access_tags
        return self.request("POST", "auth/apikey", json=body).json()

    def revoke_api_key(self, first_eight: str) -> None:
        self.request("DELETE", "auth/apikey", params={"first_eight": first_eight})

    @property
    def admin(self) -> Admin:
        """Administration of principals (needs an administrator's credentials)."""
        return Admin(self)

    # --- requests ---

    def url(self, path: str) -> str:
        return f"{self.api_uri}{path}"

    def request(
        self, method: str, path: str, *, check: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send a request to ``{api root}/{path}``, retrying what may succeed on a second try;
        error answers raise :class:`ClientError` unless ``check`` is false."""
        url = path if path.startswith(("http://", "https://")) else self.url(path)

        def send() -> httpx.Response:
            # Held per attempt, not across the waits between attempts.
            with self._concurrent_request_semaphore:
                return self.http_client.request(method, url, **kwargs)

        response = with_retries(send, context=self, idempotent=method.upper() in IDEMPOTENT_METHODS)
        return handle_error(response) if check else response

    def get_json(self, path: str, params: Any = None) -> Any:
        """A document (metadata, listings) of the API, asked for as msgpack as upstream's
        client does: it carries what JSON cannot (NaN and infinities, bytes, timestamps)."""
        response = self.request("GET", path, params=params, headers={"Accept": DOCUMENT_TYPES})
        return decode_document(response)

    def get_content(self, path: str, params: Any = None, accept: str | None = None) -> bytes:
        headers = {"Accept": accept} if accept else {}
        return self.request("GET", path, params=params, headers=headers).content

    def get_large_content(self, path: str, params: Any = None, accept: str | None = None) -> bytes:
        """:meth:`get_content` for large bodies (array data): through the aiohttp session on
        zarr-python's I/O loop, which reads a large body at several times httpx's speed. An
        app in this process, or a response cache, is asked the usual way."""
        if self.app is not None or self.cache is not None:
            return self.get_content(path, params=params, accept=accept)
        from .zarr import fetch_blocking

        url = str(httpx.URL(self.url(path), params=params))
        response = fetch_blocking(self, url, {"Accept": accept} if accept else {})
        return handle_error(response).content

    # --- progress and retries, shown to the user ---

    def throttle(self) -> Any:
        """The semaphore capping this context's requests in flight (``with
        context.throttle(): ...``)."""
        return self._concurrent_request_semaphore

    @property
    def progress_state(self) -> ProgressState | None:
        """The progress bar being shown by :meth:`tracking_progress`, if any."""
        return self._progress_state

    @contextlib.contextmanager
    def tracking_progress(self, total: int) -> Iterator[ProgressState | None]:
        """Show a progress bar of ``total`` fetches while the block runs (fetches call
        ``context.progress_state.advance()``). Only with ``show_progress``, more than one
        fetch and someone watching (``utils.is_interactive``); a block inside another shows
        nothing of its own."""
        from . import utils  # looked up at each call, so that it can be patched in tests

        if total <= 1 or not self.show_progress or self._progress_state is not None:
            yield self._progress_state
            return
        if not utils.is_interactive():
            yield None
            return
        from rich.console import Console
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
        from rich.spinner import Spinner

        console = Console(stderr=True)
        progress = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=console,
        )  # fmt: skip
        task_id = progress.add_task("Fetching data…", total=total)
        state = ProgressState(progress, task_id, Spinner("dots", text="[yellow]Retrying…"))
        with Live(progress, console=console, transient=True) as live:
            state._live = live
            self._progress_state = state
            try:
                yield state
            finally:
                self._progress_state = None

    @property
    def retry_indicator(self) -> StandaloneRetryIndicator | None:
        """The retry notice being shown outside any progress bar, if any."""
        return self._retry_indicator

    def signal_retry(self) -> None:
        """Tell the user that requests are being retried: under the progress bar if one is
        shown, else by a notice of its own (whatever ``show_progress`` says: silent retries
        look like a hang)."""
        state = self._progress_state
        if state is not None:
            state.show_retrying()
            return
        if self._retry_indicator is None:
            self._retry_indicator = StandaloneRetryIndicator()
        self._retry_indicator.show()

    def signal_retry_resolved(self) -> None:
        """The retries are over: take the notice down."""
        state = self._progress_state
        if state is not None:
            state.hide_retrying()
        indicator, self._retry_indicator = self._retry_indicator, None
        if indicator is not None:
            indicator.reset()

    # --- zarr ---

    def zarr_store(self, path_parts: list[str] | tuple[str, ...] = (), format: int = 3) -> Any:
        """A read-only zarr-python store of the node at ``path_parts``, through ``/zarr/v{format}``,
        carrying this context's credentials."""
        from .zarr import TiledZarrStore

        return TiledZarrStore(self, list(path_parts), format)

    def credential_headers(self) -> dict[str, str]:
        """The headers that authenticate a request now (a login's current access token)."""
        auth = self.http_client.auth
        if isinstance(auth, TiledAuth):
            token = auth.sync_get_token("access_token")
            return {"Authorization": f"Bearer {token}"} if token else {}
        return self.auth_headers()

    def chunk_session(self) -> Any:
        """The aiohttp session that fetches zarr chunks on the running event loop (a session
        belongs to one loop). aiohttp rather than httpx: it costs a third of the CPU per
        chunk, which on a small machine the server needs."""
        import asyncio
        import ssl

        import aiohttp

        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._chunk_sessions.get(id(loop))
            if found is not None and found[0] is loop and not found[1].closed:
                return found[1]
            if self._verify is False:
                tls: Any = False
            elif isinstance(self._verify, str):
                tls = ssl.create_default_context(cafile=self._verify)
            else:
                tls = None
            connector = aiohttp.TCPConnector(limit=self.max_connections * 2, ssl=tls)
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self._timeout.connect, sock_read=self._timeout.read
            )
            session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=timeout,
                auto_decompress=True,
            )  # fmt: skip
            self._chunk_sessions[id(loop)] = (loop, session)
            _OPEN_SESSIONS[id(self._chunk_sessions)] = self._chunk_sessions
            _register_exit_hook()
            return session

    # --- lifetime ---

    def close(self) -> None:
        if self.app is not None:
            self.http_client.__exit__(None, None, None)
        else:
            self.http_client.close()
        self._finalizer()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _principal_repr(self) -> str | None:
        """``as 'alice'`` (or ``as service '<uuid>'``) on a multi-user server, asking it; None
        when it cannot say (a repr must not fail)."""
        if not self.server_info.get("authentication", {}).get("links"):
            return None  # single-user: there is no one to name
        try:
            response = self.request("GET", "auth/whoami", check=False)
            who = response.json() if response.status_code == 200 else None
        except Exception:
            return None
        if not isinstance(who, dict):
            return None
        if who.get("type") == "service":
            return f"as service '{who.get('uuid')}'"
        names = ",".join(f"'{identity['id']}'" for identity in who.get("identities", []))
        return f"as {names}" if names else None

    def __repr__(self) -> str:
        if not self.authenticated:
            return f"<Context {self.api_uri} (unauthenticated)>"
        words = ["authenticated"]
        principal = self._principal_repr()
        if principal:
            words.append(principal)
        if self.api_key:
            shown = self.api_key[: min(len(self.api_key) // 2, 8)]  # never most of a short key
            words.append(f"with API key '{shown}...'")
        return f"<Context {self.api_uri} {' '.join(words)}>"

    def __getstate__(self) -> dict[str, Any]:
        if self.app is not None:
            raise TypeError("A context of an in-process app cannot be pickled")
        return {
            "uri": self.api_uri, "api_key": self.api_key, "headers": self._headers,
            "timeout": self._timeout, "verify": self._verify,
            "max_connections": self.max_connections, "show_progress": self.show_progress,
            "cache": self.cache,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        uri = state.pop("uri")
        self.__init__(uri, **state)  # type: ignore[misc]


class Admin:
    """The principals of a multi-user server: ``context.admin.list_principals()``, ..."""

    def __init__(self, context: Context):
        self.context = context

    def list_principals(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.context.get_json(
            "auth/principal", params={"page[offset]": offset, "page[limit]": limit}
        )["data"]

    def show_principal(self, uuid: str) -> dict[str, Any]:
        return self.context.get_json(f"auth/principal/{uuid}")

    def create_service_principal(self, role: str) -> dict[str, Any]:
        """A new principal for a service (no login), with ``role`` (``user``, ``admin``)."""
        return self.context.request("POST", "auth/principal", params={"role": role}).json()

    def create_api_key(
        self,
        uuid: str,
        scopes: list[str] | None = None,
        expires_in: int | None = None,
        note: str | None = None,
        access_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new API key of principal ``uuid`` (a service principal, say)."""
        body: dict[str, Any] = {"scopes": scopes, "expires_in": expires_in, "note": note}
        if access_tags is not None:
            body["access_tags"] = access_tags
        return self.context.request("POST", f"auth/principal/{uuid}/apikey", json=body).json()

    def revoke_api_key(self, uuid: str, first_eight: str) -> None:
        self.context.request(
            "DELETE", f"auth/principal/{uuid}/apikey", params={"first_eight": first_eight}
        )


__all__ = [
    "Admin",
    "Context",
    "PasswordRejected",
    "api_root_and_path",
    "password_grant",
    "password_input",
    "username_input",
]

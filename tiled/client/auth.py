"""Logins with a username and password: bearer tokens, refreshed when they expire, and kept
per server (``remember_me``) in the user's cache directory.

Tokens are stored as upstream's client stores them, one file per token
(``access_token``, ``refresh_token``) in ``{cache}/tokens/{quoted API URI}/``, so that a
session remembered by either client is resumed by the other.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import httpx

# The tokens a login yields that are kept (``id_token`` comes from OpenID providers).
TOKEN_NAMES = ("access_token", "refresh_token", "id_token")


class CannotRefreshAuthentication(Exception):
    """The session has ended (the refresh token expired or was revoked): log in again."""


def cache_directory() -> Path:
    base = os.environ.get("TILED_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiled"


def token_directory(api_uri: str) -> Path:
    """Where the tokens of a login to the server at ``api_uri`` are remembered."""
    return cache_directory() / "tokens" / urllib.parse.quote_plus(api_uri)


def build_refresh_request(
    refresh_url: str,
    refresh_token: str,
    csrf_token: str | None = None,
    client_id: str | None = None,
    scopes: str | None = None,
) -> httpx.Request:
    """The request that trades a refresh token for new tokens. The CSRF cookie's value goes
    in ``x-csrf`` too: servers that check the double-submitted cookie want it.

    With a ``client_id``, the tokens are an identity provider's (a server whose provider is
    a ``ProxiedOIDCAuthenticator``): the OAuth2 refresh grant at the provider's token
    endpoint, as that public client."""
    if client_id:
        form = {"client_id": client_id, "grant_type": "refresh_token"}
        form["refresh_token"] = refresh_token
        if scopes:
            form["scope"] = scopes
        return httpx.Request("POST", refresh_url, data=form)
    headers = {"x-csrf": csrf_token} if csrf_token else {}
    return httpx.Request(
        "POST", refresh_url, json={"refresh_token": refresh_token}, headers=headers
    )


class TiledAuth(httpx.Auth):
    """Sends the access token; on a 401 refreshes it with the refresh token and sends again.

    With a ``token_directory`` the tokens are kept on disk (readable by the user only) as
    well as in memory, so that other processes of the user share the session; without one,
    in memory only.
    """

    requires_response_body = True

    def __init__(
        self,
        refresh_url: str,
        csrf_token: str | None = None,
        token_directory: str | Path | None = None,
        client_id: str | None = None,
        scopes: str | None = None,
    ):
        self.refresh_url = refresh_url
        self.csrf_token = csrf_token
        # An identity provider's public client (its tokens are refreshed there), if any.
        self.client_id = client_id
        self.scopes = scopes
        if token_directory is not None:
            token_directory = Path(token_directory)
            token_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(token_directory, os.W_OK | os.X_OK):
                raise ValueError(f"The token directory {token_directory} is not writable")
        self.token_directory: Path | None = token_directory
        self.tokens: dict[str, str] = {}
        self._lock = threading.RLock()

    # --- tokens ---

    def sync_get_token(self, key: str, reload_from_disk: bool = False) -> str | None:
        """The token ``key`` (``access_token``, ``refresh_token``): from memory, else (or with
        ``reload_from_disk``) from the token directory; None if there is none."""
        with self._lock:
            if self.token_directory is None:  # memory is all there is
                return self.tokens.get(key)
            if not reload_from_disk and key in self.tokens:
                return self.tokens[key]
            try:
                value = (self.token_directory / key).read_text()
            except FileNotFoundError:
                return None
            self.tokens[key] = value
            return value

    def sync_set_token(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise ValueError(f"A token is a string, not {value!r}")
        with self._lock:
            if self.token_directory is not None:
                path = self.token_directory / key
                # Created readable by the user only, before the secret is written.
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "w") as file:
                    file.write(value)
            self.tokens[key] = value

    def sync_clear_token(self, key: str) -> None:
        with self._lock:
            if self.token_directory is not None:
                (self.token_directory / key).unlink(missing_ok=True)
            self.tokens.pop(key, None)

    def sync_tokens(self, tokens: Mapping[str, Any]) -> None:
        """Keep the tokens of a login or a refresh."""
        for key in TOKEN_NAMES:
            if tokens.get(key):
                self.sync_set_token(key, tokens[key])

    def clear(self) -> None:
        for key in TOKEN_NAMES:
            self.sync_clear_token(key)

    # --- the flow ---

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self.sync_get_token("access_token")
        if sent is not None:
            request.headers["Authorization"] = f"Bearer {sent}"
            response = yield request
            if response.status_code != 401:
                return
            # Another process sharing the token directory may have refreshed already.
            on_disk = self.sync_get_token("access_token", reload_from_disk=True)
            if on_disk is not None and on_disk != sent:
                request.headers["Authorization"] = f"Bearer {on_disk}"
                response = yield request
                if response.status_code != 401:
                    return
        self.accept_refresh((yield self.refresh_request()))
        request.headers["Authorization"] = f"Bearer {self.tokens['access_token']}"
        yield request

    def refresh_request(self) -> httpx.Request:
        refresh_token = self.sync_get_token("refresh_token", reload_from_disk=True)
        if refresh_token is None:
            raise CannotRefreshAuthentication(
                "There is no refresh token: log in (context.authenticate())"
            )
        return build_refresh_request(
            self.refresh_url, refresh_token, self.csrf_token, self.client_id, self.scopes
        )

    def accept_refresh(self, response: httpx.Response) -> dict[str, Any]:
        """Keep the tokens a refresh answered; a refused refresh ends the session."""
        response.read()
        if response.status_code in (400, 401):
            self.sync_clear_token("access_token")
            self.sync_clear_token("refresh_token")
            raise CannotRefreshAuthentication(
                "The session has expired or was revoked; log in again (context.authenticate())"
            )
        from .utils import handle_error

        handle_error(response)
        tokens = response.json()
        self.sync_tokens(tokens)
        return tokens

    # --- pickling: the tokens stay behind (pickles get stored and shared carelessly) ---

    def __getstate__(self) -> dict[str, Any]:
        return {
            "refresh_url": self.refresh_url, "csrf_token": self.csrf_token,
            "token_directory": self.token_directory, "client_id": self.client_id,
            "scopes": self.scopes,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


__all__ = [
    "CannotRefreshAuthentication",
    "TiledAuth",
    "build_refresh_request",
    "cache_directory",
    "token_directory",
]

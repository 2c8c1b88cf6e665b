"""Logins with a username and password: bearer tokens, refreshed when they expire, and the
refresh token remembered per server (``remember_me``) in the user's cache directory."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx


class CannotRefreshAuthentication(Exception):
    """The session has ended (the refresh token expired or was revoked): log in again."""


def cache_directory() -> Path:
    base = os.environ.get("TILED_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiled"


class TokenCache:
    """Refresh tokens on disk, one file per server, readable by the user only."""

    def __init__(self, api_uri: str, directory: Path | None = None):
        name = hashlib.sha256(api_uri.encode()).hexdigest()[:32]
        self.path = (directory or cache_directory()) / "tokens" / f"{name}.json"
        self.api_uri = api_uri

    def load(self) -> dict[str, Any] | None:
        try:
            content = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return content if content.get("api_uri") == self.api_uri else None

    def save(self, tokens: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"api_uri": self.api_uri, **tokens}, file)
        os.replace(temporary, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class TiledAuth(httpx.Auth):
    """Sends the access token; on a 401 refreshes it once with the refresh token and retries."""

    requires_response_body = True

    def __init__(self, refresh_url: str, tokens: dict[str, Any], cache: TokenCache | None):
        self.refresh_url = refresh_url
        self.tokens = dict(tokens)
        self.cache = cache

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self.tokens["access_token"]
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code != 401:
            return
        if self.tokens["access_token"] == sent:  # nobody has refreshed it meanwhile
            self.accept_refresh((yield self.refresh_request()))
        request.headers["Authorization"] = f"Bearer {self.tokens['access_token']}"
        yield request

    def refresh_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", self.refresh_url, json={"refresh_token": self.tokens["refresh_token"]}
        )

    def accept_refresh(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code != 200:
            if self.cache is not None:
                self.cache.clear()
            raise CannotRefreshAuthentication(
                "The session has expired or was revoked; log in again (context.authenticate())"
            )
        self.tokens = response.json()
        if self.cache is not None:
            self.cache.save(self.tokens)


__all__ = ["CannotRefreshAuthentication", "TiledAuth", "TokenCache", "cache_directory"]

"""Configuration models shared by ``build_app``, the YAML config and the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class AuthenticationProviderSpec(BaseModel):
    provider: str
    authenticator: Any
    args: dict[str, Any] = {}


class Authentication(BaseModel):
    """How a server authenticates requests (upstream's ``tiled.config.Authentication``).

    With no providers the server is single-user: ``single_user_api_key`` (or a random key)
    grants every scope, and ``allow_anonymous_access`` lets requests without credentials read.
    """

    model_config = ConfigDict(frozen=True)

    providers: list[AuthenticationProviderSpec] = []
    tiled_admins: list[dict[str, str]] = []
    secret_keys: list[str] = []
    allow_anonymous_access: bool = False
    single_user_api_key: str | None = None
    access_token_max_age: timedelta = timedelta(minutes=15)
    refresh_token_max_age: timedelta = timedelta(days=7)
    session_max_age: timedelta = timedelta(days=365)

    @field_validator("single_user_api_key")
    @classmethod
    def _alphanumeric(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]+", value):
            raise ValueError("single_user_api_key must be a non-empty alphanumeric string")
        return value

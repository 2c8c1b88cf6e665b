"""Configuration models shared by ``build_app``, the YAML config and the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AuthenticationProviderSpec(BaseModel):
    """One identity provider: a name, an authenticator (import string, class or object), args."""

    provider: str
    authenticator: Any
    args: dict[str, Any] = {}

    @field_validator("provider")
    @classmethod
    def _url_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError("provider names may use letters, digits, '_', '.' and '-' only")
        return value

    def build(self) -> Any:
        """The authenticator object: import it if named, instantiate it if it is a class."""
        from .utils import import_object

        target = self.authenticator
        if isinstance(target, str):
            target = import_object(target)
        if isinstance(target, type):
            return target(**self.args)
        if self.args:
            raise ValueError(
                f"Provider {self.provider!r}: 'args' are given but the authenticator is "
                "already an object, not an import path or a class"
            )
        return target


class Authentication(BaseModel):
    """How a server authenticates requests (upstream's ``tiled.config.Authentication``).

    With no providers the server is single-user: ``single_user_api_key`` (or a random key)
    grants every scope, and ``allow_anonymous_access`` lets requests without credentials read.
    With providers it is multi-user: users log in to get JWT sessions and create API keys,
    which are kept in the authentication database (see :class:`Database`).
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

    @field_validator("tiled_admins")
    @classmethod
    def _admin_entries(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for entry in value:
            if set(entry) != {"provider", "id"}:
                raise ValueError("each tiled_admins entry needs exactly 'provider' and 'id'")
        return value

    @model_validator(mode="after")
    def _providers_consistent(self) -> Authentication:
        names = [spec.provider for spec in self.providers]
        if len(names) != len(set(names)):
            raise ValueError(f"provider names must be unique, got {names}")
        unknown = {entry["provider"] for entry in self.tiled_admins} - set(names)
        if unknown:
            raise ValueError(f"tiled_admins name providers that are not configured: {unknown}")
        return self

    @property
    def authenticators(self) -> dict[str, Any]:
        """Provider name -> authenticator object (built anew on each access)."""
        return {spec.provider: spec.build() for spec in self.providers}


class Database(BaseModel):
    """The authentication database (principals, API keys, sessions): the YAML ``database:``.

    ``uri`` may be ``sqlite:///path.db`` / ``sqlite+aiosqlite:///path.db``, or
    ``postgresql://...`` / ``postgresql+asyncpg://...``; None means an in-memory SQLite
    database, lost when the server stops. ``schema`` (PostgreSQL only) keeps the tables in a
    schema of their own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str | None = None
    init_if_not_exists: bool = False
    pool_size: int = Field(5, ge=2)
    pool_pre_ping: bool = True
    max_overflow: int = Field(5, ge=0)
    schema_: str | None = Field(None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("schema must be a plain SQL identifier")
        return value

"""Upstream's models of principals, as extension code receives and imports them
(``from tiled.server.schemas import Principal, PrincipalType``).

An access policy written for upstream (:mod:`tiled.access_control.protocols`) is handed the
requesting :class:`Principal`, or None for an anonymous request and for the single user of a
server without authentication providers.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any

import pydantic
from pydantic import Field, SecretStr, StringConstraints

Name = Annotated[str, StringConstraints(max_length=255)]


class PrincipalType(str, enum.Enum):
    user = "user"
    service = "service"


class Identity(pydantic.BaseModel):
    """One login of a principal: its id with an authentication provider."""

    model_config = pydantic.ConfigDict(from_attributes=True)
    id: Name
    provider: Name
    latest_login: datetime | None = None


class Role(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    name: str
    scopes: list[str]


class APIKey(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    first_eight: Annotated[str, StringConstraints(min_length=8, max_length=8)]
    expiration_time: datetime | None = None
    note: Name | None = None
    scopes: list[str]
    access_tags: list[str] | None = None
    latest_activity: datetime | None = None


class Session(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    uuid: uuid.UUID
    expiration_time: datetime
    revoked: bool
    state: dict[Any, Any] | None = None


class Principal(pydantic.BaseModel):
    """A user or a service."""

    model_config = pydantic.ConfigDict(from_attributes=True)
    uuid: uuid.UUID
    type: PrincipalType
    identities: list[Identity] = []
    roles: list[Role] = []
    api_keys: list[APIKey] = []
    sessions: list[Session] = []
    latest_activity: datetime | None = None
    # The bearer token the request carried, where a policy may pass it on (not serialized).
    access_token: SecretStr | None = Field(exclude=True, default=None)


__all__ = ["APIKey", "Identity", "Principal", "PrincipalType", "Role", "Session"]

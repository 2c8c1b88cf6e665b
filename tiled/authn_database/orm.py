"""Tables of the authentication database, in upstream Tiled 0.2.20's schema.

A site running upstream Tiled can point this server at its authentication database (and
back): table, column, index and constraint names and the column types are upstream's, so
``create_all`` here emits the same DDL as upstream's on SQLite and on PostgreSQL.

Python sees:

- times as timezone-aware UTC datetimes (SQLite keeps them as naive UTC text, PostgreSQL as
  ``timestamp with time zone``);
- ``principals.uuid`` and ``sessions.uuid`` as :class:`uuid.UUID` (stored as the 36-character
  text form, as upstream stores them);
- scope and access-tag lists as lists (stored as JSON text in ``VARCHAR(511)``).

API key secrets are never stored: only their SHA-256 digest and the first eight characters of
their hex form, which let a user tell their keys apart.
"""

from __future__ import annotations

import json
import uuid as uuid_module
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    Table,
    Unicode,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql import func
from sqlalchemy.types import TypeDecorator

PRINCIPAL_TYPES = ("user", "service")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always hands Python an aware UTC datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite has no time zones: the text is naive UTC, as upstream writes it.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONList(TypeDecorator):
    """A list kept as JSON text in a ``VARCHAR(length)`` column."""

    impl = Unicode
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, list):
            raise TypeError(f"expected a list, not {type(value).__name__}")
        return json.dumps(value)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


class UUIDText(TypeDecorator):
    """A :class:`uuid.UUID` kept as its 36-character text form, on every database."""

    impl = Unicode(36)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, uuid_module.UUID):
            raise TypeError(f"expected a uuid.UUID, not {type(value).__name__}")
        return str(value)

    def process_result_value(self, value, dialect):
        return None if value is None else uuid_module.UUID(value)


JSONVariant = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Timestamped:
    """``time_created`` / ``time_updated`` (forensics only), after each table's own columns.

    The server default is the DDL upstream declares; the Python-side values spare the ORM a
    round trip to read them back.
    """

    time_created: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), default=utcnow, nullable=False, sort_order=1
    )
    time_updated: Mapped[datetime | None] = mapped_column(
        UTCDateTime, onupdate=utcnow, nullable=True, sort_order=1
    )


principal_role_association = Table(
    "principal_role_association",
    Base.metadata,
    Column("principal_id", Integer, ForeignKey("principals.id"), primary_key=True),
    Column("role_id", Integer, ForeignKey("roles.id"), primary_key=True),
)


class Principal(Timestamped, Base):
    """A user or a service account; identities (logins) and API keys belong to one."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True, autoincrement=True)
    uuid: Mapped[uuid_module.UUID] = mapped_column(
        UUIDText, index=True, nullable=False, default=uuid_module.uuid4
    )
    type: Mapped[str] = mapped_column(Enum(*PRINCIPAL_TYPES, name="principaltype"), nullable=False)
    identities: Mapped[list[Identity]] = relationship(back_populates="principal", lazy="selectin")
    roles: Mapped[list[Role]] = relationship(secondary=principal_role_association, lazy="selectin")


class Identity(Timestamped, Base):
    """A login name at one provider, e.g. ("toy", "alice")."""

    __tablename__ = "identities"

    id: Mapped[str] = mapped_column(Unicode(255), primary_key=True, nullable=False)
    provider: Mapped[str] = mapped_column(Unicode(255), primary_key=True, nullable=False)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), nullable=False)
    latest_login: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    principal: Mapped[Principal] = relationship(back_populates="identities")


class Role(Timestamped, Base):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Unicode(255), index=True, unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(Unicode(1023), nullable=True)
    scopes: Mapped[list[str]] = mapped_column(JSONList(511), nullable=False)


class APIKey(Timestamped, Base):
    """Found by ``(first_eight, hashed_secret)``: the key's primary key."""

    __tablename__ = "api_keys"

    first_eight: Mapped[str] = mapped_column(
        Unicode(8), primary_key=True, index=True, nullable=False
    )
    hashed_secret: Mapped[bytes] = mapped_column(
        LargeBinary(32), primary_key=True, index=True, nullable=False
    )
    expiration_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    latest_activity: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str | None] = mapped_column(Unicode(1023), nullable=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSONList(511), nullable=False)
    access_tags: Mapped[list[str] | None] = mapped_column(JSONList(511), nullable=True)
    principal: Mapped[Principal] = relationship(lazy="joined")


class Session(Timestamped, Base):
    """A login session: refresh tokens name one, and revoking it ends every refresh."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True, autoincrement=True)
    uuid: Mapped[uuid_module.UUID] = mapped_column(
        UUIDText, index=True, nullable=False, default=uuid_module.uuid4
    )
    time_last_refreshed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refresh_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    expiration_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    state: Mapped[dict] = mapped_column(JSONVariant, nullable=False, default=dict)
    principal: Mapped[Principal] = relationship(lazy="joined")


class PendingSession(Base):
    """A device-code login waiting for its user (upstream's device code flow)."""

    __tablename__ = "pending_sessions"

    hashed_device_code: Mapped[bytes] = mapped_column(
        LargeBinary(32), primary_key=True, index=True, nullable=False
    )
    user_code: Mapped[str] = mapped_column(Unicode(8), index=True, nullable=False)
    expiration_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), nullable=True
    )

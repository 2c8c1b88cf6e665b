"""Tables of the authentication database.

Times are naive UTC datetimes (SQLite has no time zones); ``schemas`` marks them UTC on the
way out. API key secrets are never stored: only their SHA-256 digest and first eight hex
characters, which let a user tell their keys apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Unicode,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


principal_roles = Table(
    "principal_roles",
    Base.metadata,
    Column("principal_id", ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)


class Principal(Base):
    """A user or a service account; identities (logins) and API keys belong to one."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    type: Mapped[str] = mapped_column(String(16))  # "user" or "service"
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    identities: Mapped[list[Identity]] = relationship(
        back_populates="principal", lazy="selectin", cascade="all, delete-orphan"
    )
    roles: Mapped[list[Role]] = relationship(secondary=principal_roles, lazy="selectin")


class Identity(Base):
    """A login name at one provider, e.g. ("toy", "alice")."""

    __tablename__ = "identities"

    id: Mapped[str] = mapped_column(Unicode(255), primary_key=True)
    provider: Mapped[str] = mapped_column(Unicode(255), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    latest_login: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    principal: Mapped[Principal] = relationship(back_populates="identities")


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Unicode(255), unique=True)
    description: Mapped[str | None] = mapped_column(Unicode(1023), nullable=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)


class APIKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_eight: Mapped[str] = mapped_column(String(8), index=True)
    hashed_secret: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expiration_time: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    latest_activity: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    note: Mapped[str | None] = mapped_column(Unicode(1023), nullable=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    access_tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    principal: Mapped[Principal] = relationship(lazy="joined")


class Session(Base):
    """A login session: refresh tokens name one, and revoking it ends every refresh."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expiration_time: Mapped[datetime] = mapped_column(DateTime)
    time_last_refreshed: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    refresh_count: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    principal: Mapped[Principal] = relationship(lazy="joined")

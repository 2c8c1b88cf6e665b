"""Every query of the authentication database; callers pass an ``AsyncSession``.

API keys are hashed as upstream hashes them (SHA-256 of the secret's bytes; the first eight
characters of the secret's hex form kept beside it), so keys made by either server work on
both. Principals and sessions are named by the hex form of their UUID, as in upstream's
tokens; either form of a UUID is accepted where one is looked up.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import BadRequest
from . import orm
from .orm import utcnow

INHERIT = "inherit"  # meta-scope of API keys: the owner's scopes at the time of use
API_KEY_SECRET_BYTES = 36  # 72 hex characters, as upstream makes them
ACTIVITY_RESOLUTION = timedelta(seconds=1)  # latest_activity is written at most this often
LIST_COLUMN_LENGTH = 511  # scopes and access tags are JSON text in VARCHAR(511)
DEVICE_CODE_MAX_AGE = timedelta(minutes=15)  # how long a device-code login waits for its user


def hash_secret(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def parse_uuid(text: str | uuid.UUID) -> uuid.UUID | None:
    """A UUID from its hex or dashed form; None if ``text`` is neither."""
    if isinstance(text, uuid.UUID):
        return text
    try:
        return uuid.UUID(str(text))
    except ValueError:
        return None


def principal_scopes(principal: orm.Principal) -> frozenset[str]:
    return frozenset(scope for role in principal.roles for scope in role.scopes)


def api_key_scopes(key: orm.APIKey) -> frozenset[str]:
    """What a key grants now: its scopes (``inherit`` expanded) within its owner's scopes."""
    owned = principal_scopes(key.principal)
    granted = set(key.scopes)
    if INHERIT in granted:
        granted = (granted - {INHERIT}) | owned
    return frozenset(granted & owned)


async def roles_named(db: AsyncSession, names: Iterable[str]) -> list[orm.Role]:
    names = list(names)
    roles = (await db.scalars(select(orm.Role).where(orm.Role.name.in_(names)))).all()
    missing = set(names) - {role.name for role in roles}
    if missing:
        raise ValueError(f"No such roles: {sorted(missing)}")
    return sorted(roles, key=lambda role: names.index(role.name))


async def find_identity(db: AsyncSession, provider: str, user_id: str) -> orm.Identity | None:
    statement = select(orm.Identity).where(
        orm.Identity.provider == provider, orm.Identity.id == user_id
    )
    return (await db.scalars(statement)).first()


async def _user_principal(db: AsyncSession, provider: str, user_id: str, admin: bool):
    """The principal of a login, created (with the user role) on first sight."""
    identity = await find_identity(db, provider, user_id)
    if identity is None:
        principal = orm.Principal(uuid=uuid.uuid4(), type="user")
        principal.roles = await roles_named(db, ["user", "admin"] if admin else ["user"])
        identity = orm.Identity(id=user_id, provider=provider)
        principal.identities = [identity]
        db.add(principal)
        return principal, identity
    principal = await principal_by_id(db, identity.principal_id)
    if admin and "admin" not in {role.name for role in principal.roles}:
        principal.roles.extend(await roles_named(db, ["admin"]))
    return principal, identity


async def login(db: AsyncSession, provider: str, user_id: str, admin: bool) -> orm.Principal:
    principal, identity = await _user_principal(db, provider, user_id, admin)
    identity.latest_login = utcnow()
    await db.commit()
    return principal


async def principal_of_identity(
    db: AsyncSession, provider: str, user_id: str, admin: bool
) -> orm.Principal:
    """The principal of ``user_id`` at ``provider``, created (with the user role, and admin's
    if ``admin``) on first sight; unlike :func:`login`, no login is recorded."""
    from sqlalchemy.exc import IntegrityError

    try:
        principal, _ = await _user_principal(db, provider, user_id, admin)
        if db.new or db.dirty:  # a commit tells every server process to drop kept identities
            await db.commit()
    except IntegrityError:
        # Another request created it first (two requests of a new user at once).
        await db.rollback()
        principal, _ = await _user_principal(db, provider, user_id, admin)
        await db.commit()
    return principal


async def ensure_admins(db: AsyncSession, admins: Iterable[tuple[str, str]]) -> None:
    """Give the configured admins the admin role, creating their principals if need be."""
    for provider, user_id in admins:
        await _user_principal(db, provider, user_id, admin=True)
    await db.commit()


async def principal_by_id(db: AsyncSession, principal_id: int) -> orm.Principal:
    return (await db.scalars(select(orm.Principal).where(orm.Principal.id == principal_id))).one()


async def principal_by_uuid(db: AsyncSession, principal_uuid: str) -> orm.Principal | None:
    parsed = parse_uuid(principal_uuid)
    if parsed is None:
        return None
    statement = select(orm.Principal).where(orm.Principal.uuid == parsed)
    return (await db.scalars(statement)).first()


async def list_principals(
    db: AsyncSession, offset: int, limit: int
) -> tuple[list[orm.Principal], int]:
    count = await db.scalar(select(func.count()).select_from(orm.Principal))
    statement = select(orm.Principal).order_by(orm.Principal.id).offset(offset).limit(limit)
    return list((await db.scalars(statement)).all()), count or 0


async def create_service_principal(db: AsyncSession, role: str) -> orm.Principal:
    principal = orm.Principal(uuid=uuid.uuid4(), type="service")
    principal.roles = await roles_named(db, [role])
    principal.identities = []
    db.add(principal)
    await db.commit()
    return principal


async def create_session(
    db: AsyncSession, principal: orm.Principal, max_age: timedelta, state: dict
) -> orm.Session:
    session = orm.Session(
        uuid=uuid.uuid4(),
        principal_id=principal.id,
        expiration_time=utcnow() + max_age,
        state=dict(state),
    )
    db.add(session)
    await db.commit()
    return session


async def session_by_uuid(db: AsyncSession, session_uuid: str) -> orm.Session | None:
    parsed = parse_uuid(session_uuid)
    if parsed is None:
        return None
    statement = select(orm.Session).where(orm.Session.uuid == parsed)
    return (await db.scalars(statement)).first()


async def mark_refreshed(db: AsyncSession, session: orm.Session) -> None:
    session.time_last_refreshed = utcnow()
    session.refresh_count += 1
    await db.commit()


async def revoke_session(
    db: AsyncSession, session_uuid: str, principal_id: int | None = None
) -> bool:
    """Revoke a session (only the given principal's, if one is given); False if none."""
    session = await session_by_uuid(db, session_uuid)
    if session is None or (principal_id is not None and session.principal_id != principal_id):
        return False
    session.revoked = True
    await db.commit()
    return True


async def live_sessions(db: AsyncSession, principal_id: int) -> list[orm.Session]:
    statement = (
        select(orm.Session)
        .where(orm.Session.principal_id == principal_id, orm.Session.expiration_time > utcnow())
        .order_by(orm.Session.id)
    )
    return list((await db.scalars(statement)).all())


async def create_pending_session(db: AsyncSession) -> tuple[str, str]:
    """A device-code login waiting for its user: its device code (hex, which only the
    device learns) and user code (``ABCD-1234``, which the user types in a browser)."""
    now = utcnow()
    # Pending logins nobody finished would otherwise stay forever.
    await db.execute(delete(orm.PendingSession).where(orm.PendingSession.expiration_time <= now))
    while True:
        user_code = secrets.token_hex(4).upper()
        if await pending_session(db, user_code=user_code) is None:
            break
    device_code = secrets.token_bytes(32)
    db.add(
        orm.PendingSession(
            hashed_device_code=hash_secret(device_code),
            user_code=user_code,
            expiration_time=now + DEVICE_CODE_MAX_AGE,
        )
    )
    await db.commit()
    return device_code.hex(), f"{user_code[:4]}-{user_code[4:]}"


async def pending_session(
    db: AsyncSession, *, user_code: str | None = None, device_code: bytes | None = None
) -> orm.PendingSession | None:
    """The unexpired pending login with this user code (any case, dashes ignored) or
    device code; None if there is none."""
    statement = select(orm.PendingSession).where(orm.PendingSession.expiration_time > utcnow())
    if user_code is not None:
        normalized = user_code.replace("-", "").strip().upper()
        statement = statement.where(orm.PendingSession.user_code == normalized)
    else:
        statement = statement.where(
            orm.PendingSession.hashed_device_code == hash_secret(device_code)
        )
    return (await db.scalars(statement)).first()


async def finish_pending_session(
    db: AsyncSession, hashed_device_code: bytes, session_id: int
) -> bool:
    """Give an unfinished, unexpired pending login its session; False if it is finished
    (by another request) or expired meanwhile."""
    result = await db.execute(
        update(orm.PendingSession)
        .where(
            orm.PendingSession.hashed_device_code == hashed_device_code,
            orm.PendingSession.session_id.is_(None),
            orm.PendingSession.expiration_time > utcnow(),
        )
        .values(session_id=session_id)
    )
    await db.commit()
    return result.rowcount == 1


async def pending_session_finished(db: AsyncSession, hashed_device_code: bytes) -> bool:
    """Whether an unexpired pending login has its session."""
    statement = select(orm.PendingSession.session_id).where(
        orm.PendingSession.hashed_device_code == hashed_device_code,
        orm.PendingSession.expiration_time > utcnow(),
    )
    return (await db.scalar(statement)) is not None


async def claim_pending_session(db: AsyncSession, pending: orm.PendingSession) -> bool:
    """Delete a finished pending login, once: False if another request claimed it first."""
    result = await db.execute(
        delete(orm.PendingSession).where(
            orm.PendingSession.hashed_device_code == pending.hashed_device_code,
            orm.PendingSession.session_id == pending.session_id,
        )
    )
    await db.commit()
    return result.rowcount == 1


def _fits(name: str, values: list[str] | None) -> None:
    if values is not None and len(json.dumps(values)) > LIST_COLUMN_LENGTH:
        raise BadRequest(
            f"Too many {name}: their JSON list exceeds {LIST_COLUMN_LENGTH} characters"
        )


async def create_api_key(
    db: AsyncSession,
    principal: orm.Principal,
    scopes: list[str],
    expires_in: float | None = None,
    note: str | None = None,
    access_tags: list[str] | None = None,
) -> tuple[str, orm.APIKey]:
    """A new key for ``principal``: returns its secret (hex, shown once) and its record."""
    scopes = list(scopes)
    access_tags = list(access_tags) if access_tags is not None else None
    _fits("scopes", scopes)
    _fits("access tags", access_tags)
    secret = secrets.token_bytes(API_KEY_SECRET_BYTES)
    key = orm.APIKey(
        first_eight=secret.hex()[:8],
        hashed_secret=hash_secret(secret),
        principal_id=principal.id,
        expiration_time=utcnow() + timedelta(seconds=expires_in) if expires_in else None,
        scopes=scopes,
        access_tags=access_tags,
        note=note,
    )
    db.add(key)
    await db.commit()
    return secret.hex(), key


async def lookup_api_key(db: AsyncSession, secret_hex: str) -> orm.APIKey | None:
    """The key whose secret this is (expired or not), or None."""
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        return None
    if len(secret) < 4:
        return None
    statement = select(orm.APIKey).where(
        orm.APIKey.first_eight == secret.hex()[:8],
        orm.APIKey.hashed_secret == hash_secret(secret),
    )
    return (await db.scalars(statement)).first()


async def touch_api_key(db: AsyncSession, key: orm.APIKey) -> None:
    now = utcnow()
    if key.latest_activity is None or now - key.latest_activity > ACTIVITY_RESOLUTION:
        key.latest_activity = now
        await db.commit()


async def principal_api_keys(db: AsyncSession, principal_id: int) -> list[orm.APIKey]:
    statement = (
        select(orm.APIKey)
        .where(orm.APIKey.principal_id == principal_id)
        .order_by(orm.APIKey.time_created, orm.APIKey.first_eight)
    )
    return list((await db.scalars(statement)).all())


async def delete_api_keys(db: AsyncSession, principal_id: int, first_eight: str) -> int:
    statement = delete(orm.APIKey).where(
        orm.APIKey.principal_id == principal_id, orm.APIKey.first_eight == first_eight
    )
    result = await db.execute(statement)
    await db.commit()
    return result.rowcount

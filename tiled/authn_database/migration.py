"""Schema revisions of the authentication database: create, check, upgrade, downgrade.

The revisions are upstream Tiled's alembic revisions, with the same identifiers and chain, so a
database moves between upstream and this server in either direction. The migration scripts
(``migrations/versions``) are this project's own.

- A new database is created from the ORM (:mod:`.orm`), given upstream's default roles and
  stamped at :data:`HEAD`.
- Revisions from :data:`OLDEST_SUPPORTED` (upstream 0.2.0's head) to :data:`HEAD` (upstream
  0.2.20's head) are migrated in place, both ways, on SQLite and PostgreSQL.
- Older revisions (upstream's pre-0.2 releases) are refused with :class:`UnsupportedRevision`:
  such a database is first upgraded with upstream Tiled 0.2.0 or later.

The functions taking ``connection`` run on a synchronous connection (in the server, through
``AsyncConnection.run_sync``); alembic drives that connection in the caller's transaction.

::

    TiledError
    └── AuthnDatabaseError
        ├── UninitializedDatabase    no revision stamp and no tables
        ├── DatabaseUpgradeNeeded    stamped with a known revision older than HEAD
        ├── UnrecognizedDatabase     tables without a stamp, or a revision Tiled does not know
        └── UnsupportedRevision      a revision this server does not migrate from or to
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect

from ..errors import TiledError
from . import orm

MIGRATIONS = Path(__file__).parent / "migrations"

# Newest first, as upstream lists them.
ALL_REVISIONS = (
    "0a017b76d0d0",  # head of upstream 0.2.20: pending_sessions.session_id ON DELETE SET NULL
    "2d1b550e12e0",  # admin role: read:webhooks, write:webhooks
    "d829476bc173",  # scopes 'create' -> 'create:node', 'apikeys' -> 'create:/revoke:apikeys'
    "27e069ba3bf5",  # user and admin roles: delete:revision, delete:node
    "a806cc635ab2",  # head of upstream 0.2.0: api_keys.access_tags
    "0c705a02954c",
    "d88e91ea03f9",
    "13024b8a6b74",
    "769180ce732e",
    "c7bd2573716d",
    "4a9dfaba4a98",
    "56809bcbfcb0",
    "722ff4e4fcc7",
    "481830dd6c11",
)
HEAD = ALL_REVISIONS[0]
OLDEST_SUPPORTED = "a806cc635ab2"
SUPPORTED_REVISIONS = ALL_REVISIONS[: ALL_REVISIONS.index(OLDEST_SUPPORTED) + 1]
AUTHN_TABLES = tuple(orm.Base.metadata.tables)

# Upstream's default roles (0.2.20), in the order upstream creates them.
DEFAULT_ROLES = (
    {
        "name": "user",
        "description": "Default Role for users.",
        "scopes": [
            "read:metadata", "read:data", "create:node", "write:metadata", "write:data",
            "delete:revision", "delete:node", "create:apikeys", "revoke:apikeys",
        ],
    },
    {
        "name": "admin",
        "description": "Role with elevated privileges.",
        "scopes": [
            "read:metadata", "read:data", "create:node", "register", "write:metadata",
            "write:data", "delete:revision", "delete:node", "admin:apikeys", "read:principals",
            "write:principals", "metrics", "read:webhooks", "write:webhooks",
        ],
    },
)  # fmt: skip


class AuthnDatabaseError(TiledError, RuntimeError):
    """The authentication database cannot be used as it is."""


class UninitializedDatabase(AuthnDatabaseError):
    pass


class DatabaseUpgradeNeeded(AuthnDatabaseError):
    pass


class UnrecognizedDatabase(AuthnDatabaseError):
    pass


class UnsupportedRevision(AuthnDatabaseError):
    pass


def older_than_supported(revision: str) -> UnsupportedRevision:
    return UnsupportedRevision(
        f"The authentication database is at revision {revision}, from a release of upstream "
        f"Tiled older than 0.2.0. This server migrates databases from revision "
        f"{OLDEST_SUPPORTED} (upstream Tiled 0.2.0) onward. Upgrade it first with upstream "
        f"Tiled 0.2.0 or later (pip install 'tiled[server]>=0.2.0', then "
        f"`tiled admin upgrade-database URI`); this server takes it from there."
    )


# --- reading the state of a database -----------------------------------------------------------


def current_revision(connection: Any) -> str | None:
    """The revision a database is stamped with (None if unstamped)."""
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(connection).get_current_heads()
    if not heads:
        return None
    if len(heads) > 1:
        raise UnrecognizedDatabase(
            f"The database is stamped with several alembic revisions {sorted(heads)}: it was "
            "not made by Tiled, or it is damaged."
        )
    revision = heads[0]
    if revision not in ALL_REVISIONS:
        raise UnrecognizedDatabase(
            f"The database has the revision {revision}, which is not a revision of Tiled's "
            "authentication database: it may have been made by a newer version of Tiled, or "
            "by another application."
        )
    return revision


def has_authn_tables(connection: Any) -> bool:
    return bool(set(AUTHN_TABLES) & set(inspect(connection).get_table_names()))


# --- changing it -------------------------------------------------------------------------------


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def initialize(connection: Any) -> None:
    """Create the tables and default roles in an empty database; stamp it at HEAD."""
    from alembic import command

    orm.Base.metadata.create_all(connection)
    connection.execute(insert(orm.Role.__table__), [dict(role) for role in DEFAULT_ROLES])
    command.stamp(_alembic_config(connection), HEAD)


def _position(revision: str) -> int:
    """Larger is newer."""
    return len(ALL_REVISIONS) - ALL_REVISIONS.index(revision)


def _require_known(revision: str) -> str:
    if revision == "head":
        return HEAD
    if revision not in ALL_REVISIONS:
        raise UnsupportedRevision(
            f"Unknown revision {revision!r}. The revisions of the authentication database "
            f"this server migrates, newest first: {', '.join(SUPPORTED_REVISIONS)}."
        )
    if revision not in SUPPORTED_REVISIONS:
        raise UnsupportedRevision(
            f"Revision {revision} predates upstream Tiled 0.2.0; this server migrates only "
            f"between {OLDEST_SUPPORTED} and {HEAD}."
        )
    return revision


def _stamped(connection: Any) -> str:
    revision = current_revision(connection)
    if revision is None:
        raise UninitializedDatabase(
            "The database has not been initialized (it has no revision stamp): use "
            "`tiled admin initialize-database URI`."
        )
    if revision not in SUPPORTED_REVISIONS:
        raise older_than_supported(revision)
    return revision


def upgrade(connection: Any, target: str = "head") -> tuple[str, str]:
    """Migrate from the stamped revision up to ``target``; returns (from, to)."""
    from alembic import command

    target = _require_known(target)
    revision = _stamped(connection)
    if _position(target) < _position(revision):
        raise UnsupportedRevision(
            f"The database is at revision {revision}, newer than {target}: use "
            "`tiled admin downgrade-database URI REVISION` to go back."
        )
    if target != revision:
        command.upgrade(_alembic_config(connection), target)
    return revision, target


def downgrade(connection: Any, target: str) -> tuple[str, str]:
    """Migrate from the stamped revision down to ``target``; returns (from, to)."""
    from alembic import command

    target = _require_known(target)
    revision = _stamped(connection)
    if _position(target) > _position(revision):
        raise UnsupportedRevision(
            f"The database is at revision {revision}, older than {target}: use "
            "`tiled admin upgrade-database URI REVISION` to go forward."
        )
    if target != revision:
        command.downgrade(_alembic_config(connection), target)
    return revision, target


def check(connection: Any, display_url: str, init_if_not_exists: bool) -> bool:
    """Make sure the database is at HEAD, creating it if empty and allowed to.

    Returns True if it was created. Raises an :class:`AuthnDatabaseError` whose message
    tells the operator what to do otherwise.
    """
    revision = current_revision(connection)
    if revision is None:
        if has_authn_tables(connection):
            raise UnrecognizedDatabase(
                f"The database {display_url} has authentication tables but no alembic "
                "revision stamp: it was not made by Tiled (or by a version that is too old)."
            )
        if not init_if_not_exists:
            raise uninitialized(display_url)
        initialize(connection)
        return True
    if revision != HEAD:
        if revision not in SUPPORTED_REVISIONS:
            raise older_than_supported(revision)
        raise DatabaseUpgradeNeeded(
            f"The authentication database {display_url} is at revision {revision}: it was "
            f"made by an older version of Tiled and needs to be upgraded to revision {HEAD} "
            "for this version. Back it up, then run:\n\n"
            f"    tiled admin upgrade-database {display_url}\n"
        )
    return False


def uninitialized(display_url: str) -> UninitializedDatabase:
    return UninitializedDatabase(
        f"No authentication database found at {display_url}. Create one with "
        f"`tiled admin initialize-database {display_url}`, or set "
        "'init_if_not_exists: true' under 'database' in the configuration."
    )

"""Exceptions of the SQL catalog, placed in the tree of :mod:`tiled.errors`.

::

    BadRequest
    └── InvalidKey              a child key that is empty, has '/', '..', control characters
    Conflict
    └── WouldDeleteData         deleting would remove server-managed (writable) data
    TiledError
    ├── DatabaseNotInitialized  the database has no catalog schema (run `tiled catalog init`)
    └── MigrationRefused        an upgrade step this server cannot apply (too old a database)
"""

from __future__ import annotations

from ..errors import Conflict, InvalidKey, TiledError

__all__ = ["DatabaseNotInitialized", "InvalidKey", "MigrationRefused", "WouldDeleteData"]


class WouldDeleteData(Conflict):
    """Deleting would remove data the server manages; pass ``external_only=False`` to allow it."""


class DatabaseNotInitialized(TiledError):
    """The database holds no catalog schema, or one at an older revision."""


class MigrationRefused(TiledError):
    """An upgrade or downgrade step this server does not apply; the message says what to do."""

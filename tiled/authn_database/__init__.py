"""The authentication database of multi-user servers: principals, identities, roles,
API keys and login sessions (SQLAlchemy 2, async; SQLite via aiosqlite or PostgreSQL via
asyncpg), in upstream Tiled 0.2.20's schema, so that upstream and this server can share one.

``connection`` opens it (:class:`AuthnDatabase`), ``orm`` declares the tables, ``migration``
creates, checks and migrates it (upstream's alembic revisions, scripts in ``migrations``),
``crud`` holds every query, and ``schemas`` the JSON shapes the ``/api/v1/auth`` routes return.
"""

"""The authentication database of multi-user servers: principals, identities, roles,
API keys and login sessions (SQLAlchemy 2, async; SQLite via aiosqlite or PostgreSQL via
asyncpg).

``connection`` opens it (:class:`AuthnDatabase`), ``orm`` declares the tables, ``crud`` holds
every query, and ``schemas`` the JSON shapes the ``/api/v1/auth`` routes return.
"""

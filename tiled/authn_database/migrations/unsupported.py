"""The revisions of upstream's pre-0.2 releases: present so that alembic knows the whole chain,
refused when asked to migrate (see :func:`tiled.authn_database.migration.older_than_supported`).
"""

from __future__ import annotations


def refuse(revision: str) -> None:
    from tiled.authn_database.migration import older_than_supported

    raise older_than_supported(revision)

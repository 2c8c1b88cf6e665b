"""Edits of the scope lists of roles and API keys, shared by the data migrations.

Scopes are JSON lists kept as text; the tables are described here as they stand at the
revisions that use these helpers, never through the ORM (which follows the newest schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa

Edit = Callable[[list[str]], list[str]]

roles = sa.table(
    "roles", sa.column("id", sa.Integer), sa.column("name", sa.Unicode), sa.column("scopes")
)
api_keys = sa.table(
    "api_keys",
    sa.column("first_eight", sa.Unicode),
    sa.column("hashed_secret", sa.LargeBinary),
    sa.column("scopes"),
)


def adding(new: Iterable[str]) -> Edit:
    """Append the scopes not already there."""
    new = list(new)
    return lambda scopes: scopes + [scope for scope in new if scope not in scopes]


def removing(old: Iterable[str]) -> Edit:
    old = set(old)
    return lambda scopes: [scope for scope in scopes if scope not in old]


def replacing(mapping: Mapping[str, Iterable[str]]) -> Edit:
    """Put each scope's replacements in its place (dropping duplicates, keeping order)."""

    def edit(scopes: list[str]) -> list[str]:
        expanded = [new for scope in scopes for new in mapping.get(scope, [scope])]
        return list(dict.fromkeys(expanded))

    return edit


def edit_roles(connection, names: Iterable[str], edit: Edit) -> None:
    """Edit the scopes of the named roles (a role that was deleted is left alone)."""
    rows = connection.execute(
        sa.select(roles.c.id, roles.c.scopes).where(roles.c.name.in_(list(names)))
    ).all()
    for role_id, text in rows:
        scopes = json.loads(text)
        edited = edit(scopes)
        if edited != scopes:
            connection.execute(
                roles.update().where(roles.c.id == role_id).values(scopes=json.dumps(edited))
            )


def edit_api_keys(connection, edit: Edit) -> None:
    """Edit the scopes of every API key."""
    rows = connection.execute(
        sa.select(api_keys.c.first_eight, api_keys.c.hashed_secret, api_keys.c.scopes)
    ).all()
    for first_eight, hashed_secret, text in rows:
        scopes = json.loads(text)
        edited = edit(scopes)
        if edited != scopes:
            connection.execute(
                api_keys.update()
                .where(
                    api_keys.c.first_eight == first_eight,
                    api_keys.c.hashed_secret == hashed_secret,
                )
                .values(scopes=json.dumps(edited))
            )

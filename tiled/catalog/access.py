"""Access blobs kept as upstream keeps them: rows of ``access_tags`` linked to nodes.

This server's policies speak of a node's *access blob* (``{"tags": [...]}`` for the tag
policy, ``{"user": name}`` for an owner); upstream 0.2.20 stores both as tags, the owner as
the principal tag ``user:<name>``. The two spellings map one to one, so either server reads
what the other wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, exists, select

from .orm import access_tags, node_access_tags_association, nodes

USER_PREFIX = "user:"
PUBLIC_TAG = "public"


def tags_of_blob(blob: dict[str, Any] | None) -> list[str]:
    """The tag names that store ``blob`` (empty: no blob)."""
    if not blob:
        return []
    names = [str(tag) for tag in blob.get("tags") or []]
    if blob.get("user") is not None:
        names.append(USER_PREFIX + str(blob["user"]))
    return list(dict.fromkeys(names))


def blob_of_tags(names: Iterable[str]) -> dict[str, Any] | None:
    """The access blob that ``names`` store (None for a node with no tags)."""
    names = sorted(set(names))
    if not names:
        return None
    users = [name[len(USER_PREFIX) :] for name in names if name.startswith(USER_PREFIX)]
    tags = [name for name in names if not name.startswith(USER_PREFIX)]
    blob: dict[str, Any] = {}
    if users:
        blob["user"] = users[0]
    if tags or not users:
        blob["tags"] = tags
    return blob


async def set_node_tags(connection: Any, node_id: int, blob: dict[str, Any] | None) -> None:
    """Make the node's tags those of ``blob``, creating tag rows that do not exist yet."""
    await connection.execute(
        delete(node_access_tags_association).where(
            node_access_tags_association.c.node_id == node_id
        )
    )
    names = tags_of_blob(blob)
    if not names:
        return
    found = await connection.execute(
        select(access_tags.c.name, access_tags.c.id).where(access_tags.c.name.in_(names))
    )
    ids = dict(found.all())
    for name in names:
        if name not in ids:
            inserted = await connection.execute(
                access_tags.insert()
                .values(name=name, is_public=name == PUBLIC_TAG)
                .returning(access_tags.c.id)
            )
            ids[name] = inserted.scalar_one()
    await connection.execute(
        node_access_tags_association.insert(),
        [{"node_id": node_id, "tag_id": ids[name]} for name in names],
    )


def has_any_tag(names: list[str]) -> Any:
    """SQL: the node (a row of ``nodes``) carries one of the tags ``names``."""
    association = node_access_tags_association
    return exists(
        select(1)
        .select_from(association.join(access_tags, access_tags.c.id == association.c.tag_id))
        .where(and_(association.c.node_id == nodes.c.id, access_tags.c.name.in_(names)))
    )


def owned_by(user: str) -> Any:
    """SQL: the node's owner is ``user``."""
    return has_any_tag([USER_PREFIX + user])

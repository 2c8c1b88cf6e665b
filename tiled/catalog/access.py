"""Access blobs kept as upstream keeps them: rows of ``access_tags`` linked to nodes.

This server's policies speak of a node's *access blob* (``{"tags": [...]}`` for the tag
policy, ``{"user": name}`` for an owner); upstream 0.2.20 stores both as tags, the owner as
the principal tag ``user:<name>``. The two spellings map one to one, so either server reads
what the other wrote.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..access.blobs import PUBLIC_TAG, USER_PREFIX, tags_of_blob
from .orm import access_tags, node_access_tags_association, nodes


def tags_of_node(blob: dict[str, Any] | None) -> frozenset[str]:
    """The tag names of a catalog node whose access blob is ``blob`` (as policies read them)."""
    return frozenset(tags_of_blob(blob))


async def set_node_tags(connection: Any, node_id: int, blob: dict[str, Any] | None) -> None:
    """Make the node's tags those of ``blob``, creating tag rows that do not exist yet."""
    await connection.execute(
        delete(node_access_tags_association).where(
            node_access_tags_association.c.node_id == node_id
        )
    )
    await set_tags_of_new_nodes(connection, [(node_id, blob)])


async def set_tags_of_new_nodes(
    connection: Any, blobs: list[tuple[int, dict[str, Any] | None]]
) -> None:
    """Give nodes that have no tags yet the tags of their blobs, ``(node_id, blob)`` pairs."""
    wanted = [(node_id, tags_of_blob(blob)) for node_id, blob in blobs]
    names = sorted({name for _, tags in wanted for name in tags})
    if not names:
        return
    # Insert-or-keep, so that two servers adding the same new tag at once both succeed.
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    await connection.execute(
        insert(access_tags)
        .values([{"name": name, "is_public": name == PUBLIC_TAG} for name in names])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    found = await connection.execute(
        select(access_tags.c.name, access_tags.c.id).where(access_tags.c.name.in_(names))
    )
    ids = dict(found.all())
    await connection.execute(
        node_access_tags_association.insert(),
        [{"node_id": node_id, "tag_id": ids[name]} for node_id, tags in wanted for name in tags],
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

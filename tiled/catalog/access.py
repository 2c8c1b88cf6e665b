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
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import BadRequest
from .orm import access_tags, node_access_tags_association, nodes

USER_PREFIX = "user:"
PUBLIC_TAG = "public"


MAX_TAG_LENGTH = 255  # access_tags.name


def tags_of_blob(blob: Any) -> list[str]:
    """The tag names that store ``blob`` (empty: no blob); :class:`BadRequest` for a blob that
    tags cannot store: other keys than ``tags`` and ``user``, tags that are not a list of
    strings, a tag spelling an owner (``user:...``), names too long."""
    if not blob:
        return []
    if not isinstance(blob, dict) or not set(blob) <= {"tags", "user"}:
        raise BadRequest(
            'An access blob is {"tags": [names...]} and/or {"user": name}, not ' + repr(blob)
        )
    tags = blob.get("tags") or []
    user = blob.get("user")
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
        raise BadRequest(f"access_blob.tags must be a list of names, not {tags!r}")
    if any(tag.startswith(USER_PREFIX) for tag in tags):
        raise BadRequest(f"A tag may not start with {USER_PREFIX!r}: owners are given as 'user'")
    if user is not None and (not isinstance(user, str) or not user):
        raise BadRequest(f"access_blob.user must be a name, not {user!r}")
    names = [*tags, *([USER_PREFIX + user] if user is not None else [])]
    if any(len(name) > MAX_TAG_LENGTH for name in names):
        raise BadRequest(f"Access tags have at most {MAX_TAG_LENGTH} characters")
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

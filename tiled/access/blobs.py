"""Access blobs and access tags, the two spellings of who may see a node.

This server's own policies speak of a node's *access blob* (``{"tags": [...]}`` for the tag
policy, ``{"user": name}`` for an owner); upstream 0.2.20 speaks of *access tags*, the owner
being the principal tag ``user:<name>``. The two map one to one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import BadRequest

USER_PREFIX = "user:"
# Tags naming one principal (``user:<id>``, ``service:<uuid>``): given by policies, not by hand.
PRINCIPAL_TAG_PREFIXES = (USER_PREFIX, "service:")
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


def tags_in_blob(blob: dict[str, Any]) -> list[str]:
    """The tag names a node's access blob gives, as :func:`tags_of_blob` reads them, without
    its refusals (for showing a blob that is already stored)."""
    tags = [tag for tag in blob.get("tags") or () if isinstance(tag, str)]
    user = blob.get("user")
    return [*tags, *([USER_PREFIX + user] if isinstance(user, str) and user else [])]


def legacy_access_blob(tags: Iterable[str] | None) -> dict[str, Any] | None:
    """``tags`` as Python clients before upstream 0.2.19 read them: ``{"user": id}`` for a node
    owned by one principal (a ``user:`` or ``service:`` tag), else ``{"tags": [...]}``; None for
    a node that carries no tags."""
    if tags is None:
        return None
    names = sorted(tags)
    for name in names:
        for prefix in PRINCIPAL_TAG_PREFIXES:
            if name.startswith(prefix):
                return {"user": name[len(prefix) :]}
    return {"tags": names}

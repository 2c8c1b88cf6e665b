"""Upstream's access-policy names (``tiled.access_control.access_policies:...``).

Configurations written for upstream Tiled name policies by these paths. Each name here is this
server's policy (:mod:`tiled.access.policies`) taking upstream's constructor arguments where
they mean something here, and refusing, with the argument's name and why, where they do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..access import policies
from ..access.policies import ALL_ACCESS, SimpleAccessPolicy
from ..access.scopes import ALL_SCOPES
from ..config.errors import UnsupportedSetting

__all__ = [
    "ALL_ACCESS",
    "AllowAllAccessPolicy",
    "DummyAccessPolicy",
    "SimpleAccessPolicy",
    "TagBasedAccessPolicy",
]

_TAGS_IN_DATABASE = (
    "tag definitions compiled into a database (upstream's access-tags parser and tags "
    "database) are not read by this server; give the definitions themselves as args.tags "
    "(a mapping or a YAML file, see the access-control guide)"
)


class AllowAllAccessPolicy(policies.AllowAll):
    """No restrictions beyond what the request's credentials carry (upstream's AllowAll)."""


DummyAccessPolicy = AllowAllAccessPolicy  # upstream 0.2.20's name for the same policy


class TagBasedAccessPolicy(policies.TagBasedAccessPolicy):
    """Access by tags, with upstream's arguments: ``provider`` and ``scopes`` (the most any tag
    may grant) are honoured; ``access_tags_parser`` and ``tags_db`` are refused."""

    def __init__(
        self,
        *,
        tags: Mapping[str, Any] | str | Path | None = None,
        provider: str | None = None,
        scopes: Iterable[str] | None = None,
        admins: Iterable[str] = (),
        access_tags_parser: Any = None,
        tags_db: Any = None,
    ):
        if access_tags_parser is not None:
            raise UnsupportedSetting("access_tags_parser", _TAGS_IN_DATABASE)
        if tags_db is not None:
            raise UnsupportedSetting("tags_db", _TAGS_IN_DATABASE)
        if tags is None:
            raise TypeError("TagBasedAccessPolicy needs args.tags (the tag definitions)")
        unknown = set(scopes or ()) - ALL_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}")
        super().__init__(tags, admins=admins, provider=provider)
        self.scopes = ALL_SCOPES if scopes is None else frozenset(scopes)

    def _scopes_for_tags(self, identity, tags) -> frozenset[str]:
        return super()._scopes_for_tags(identity, tags) & self.scopes

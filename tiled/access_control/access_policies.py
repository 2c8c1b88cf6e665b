"""Upstream's access-policy names (``tiled.access_control.access_policies:...``).

Configurations written for upstream Tiled name policies by these paths. Each name here is this
server's policy (:mod:`tiled.access.policies`) taking upstream's constructor arguments where
they mean something here, and refusing, with the argument's name and why, where they do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..access import policies
from ..access.catalog_tags import CatalogTagPolicy
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

_TAGS_DB = (
    "the separate tags database of earlier upstream releases is not read; compile the tag "
    "definitions into the catalog database (AccessTagsCompiler) and give access_tags_parser"
)


class AllowAllAccessPolicy(policies.AllowAll):
    """No restrictions beyond what the request's credentials carry (upstream's AllowAll)."""


DummyAccessPolicy = AllowAllAccessPolicy  # upstream 0.2.20's name for the same policy


class _TagsFromYaml(policies.TagBasedAccessPolicy):
    """This server's tag policy with the definitions given in the configuration (``tags``)."""

    def __init__(self, *, tags, provider=None, scopes=None, admins=()):
        unknown = set(scopes or ()) - ALL_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}")
        super().__init__(tags, admins=admins, provider=provider)
        self.scopes = ALL_SCOPES if scopes is None else frozenset(scopes)

    def _scopes_for_tags(self, identity, tags) -> frozenset[str]:
        return super()._scopes_for_tags(identity, tags) & self.scopes


class TagBasedAccessPolicy(CatalogTagPolicy):
    """Access by tags, with upstream's arguments.

    With ``access_tags_parser`` (upstream 0.2.20's form), tag definitions are read from the
    catalog database, where ``AccessTagsCompiler`` writes them: :class:`CatalogTagPolicy`.
    With ``tags`` (this server's form), they are given in the configuration and inherited down
    the tree: :class:`tiled.access.policies.TagBasedAccessPolicy`.
    """

    def __new__(cls, *args: Any, tags: Any = None, **kwargs: Any):
        if tags is not None:
            if kwargs.get("access_tags_parser") is not None:
                raise ValueError("TagBasedAccessPolicy takes tags or access_tags_parser, not both")
            if kwargs.get("tags_db") is not None:
                raise UnsupportedSetting("tags_db", _TAGS_DB)
            return _TagsFromYaml(tags=tags, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        provider: str,
        access_tags_parser: Any = None,
        scopes: Iterable[str] | None = None,
        refresh_seconds: float = 1.0,
        tags_db: Any = None,
        tags: None = None,
    ):
        if tags_db is not None:
            raise UnsupportedSetting("tags_db", _TAGS_DB)
        if access_tags_parser is None:
            raise TypeError(
                "TagBasedAccessPolicy needs access_tags_parser (tag definitions compiled into "
                "the catalog database) or tags (the definitions themselves)"
            )
        super().__init__(
            provider=provider, access_tags_parser=access_tags_parser, scopes=scopes,
            refresh_seconds=refresh_seconds,
        )  # fmt: skip

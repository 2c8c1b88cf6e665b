"""Upstream's access-policy names (``tiled.access_control.access_policies:...``).

Configurations written for upstream Tiled name policies by these paths. Most names here are
this server's policies (:mod:`tiled.access.policies`) taking upstream's constructor arguments
where they mean something here, and refusing, with the argument's name and why, where they do
not. :class:`ExternalPolicyDecisionPoint` is upstream's kind of policy
(:mod:`tiled.access_control.protocols`), which this server runs through
:class:`tiled.access.upstream_policies.UpstreamPolicy`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, HttpUrl, TypeAdapter, ValidationError

from ..access import policies
from ..access.catalog_tags import CatalogTagPolicy
from ..access.policies import ALL_ACCESS, SimpleAccessPolicy
from ..access.scopes import ALL_SCOPES, NO_SCOPES
from ..access.upstream_policies import NO_ACCESS
from ..config.errors import UnsupportedSetting
from ..queries import AccessTagsFilter
from ..type_aliases import AccessTags, Scopes
from .protocols import AccessPolicy as UpstreamAccessPolicy
from .protocols import normalize_access_tags

__all__ = [
    "ALL_ACCESS",
    "NO_ACCESS",
    "AllowAllAccessPolicy",
    "DummyAccessPolicy",
    "ExternalPolicyDecisionPoint",
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


T = TypeVar("T")


class ResultHolder(BaseModel, Generic[T]):
    """A decision service's answer: ``{"result": ...}`` (Open Policy Agent's shape)."""

    result: T


class ExternalPolicyDecisionPoint(UpstreamAccessPolicy, ABC):
    """Upstream's policy that asks an external decision service (such as Open Policy Agent)
    over HTTP. A site subclasses it with :meth:`build_input`, the request body (JSON text) its
    service reads; each decision is a POST of that input to one endpoint below
    ``authorization_provider``, answered ``{"result": ...}``:

    - ``create_node_endpoint`` (and ``modify_node_endpoint``, by default the same): a bool. An
      answer that does not parse refuses the write (403), as an undefined OPA rule; a parsed
      answer admits it, ``result`` telling whether the tags were changed (upstream's meaning).
    - ``allowed_tags_endpoint``: the tags whose nodes the principal may see (children are
      narrowed to them); no parsed answer: none.
    - ``scopes_endpoint``: the principal's scopes on a node; no parsed answer: none.

    ``empty_access_tags_public``: a node created without tags is allowed (True) or refused
    (False) without asking; None asks the service.
    """

    def __init__(
        self,
        authorization_provider: HttpUrl | str,
        create_node_endpoint: str,
        allowed_tags_endpoint: str,
        scopes_endpoint: str,
        modify_node_endpoint: str | None = None,
        provider: str | None = None,
        empty_access_tags_public: bool | None = None,
    ):
        base = str(authorization_provider)
        self._create_node = base + create_node_endpoint
        self._modify_node = base + (modify_node_endpoint or create_node_endpoint)
        self._user_tags = base + allowed_tags_endpoint
        self._node_scopes = base + scopes_endpoint
        self._provider = provider
        self._empty_access_tags_public = empty_access_tags_public

    @abstractmethod
    def build_input(
        self,
        principal: Any,
        authn_access_tags: AccessTags | None,
        authn_scopes: Scopes,
        access_tags: AccessTags | None = None,
    ) -> str:
        """The body of each decision request."""

    async def _decision(self, endpoint: str, body: str, kind: Any) -> Any | None:
        """The service's ``result`` read as ``kind``, or None for an answer that is not."""
        import httpx

        async with httpx.AsyncClient() as client:
            response = await client.post(endpoint, content=body)
        response.raise_for_status()
        try:
            return TypeAdapter(ResultHolder[kind]).validate_json(response.text).result
        except ValidationError:
            return None

    async def _write_decision(self, endpoint: str, body: str, access_tags: Any) -> tuple:
        changed = await self._decision(endpoint, body, bool)
        if changed is None:
            raise ValueError("Permission denied not able to add the node")
        return changed, access_tags or normalize_access_tags()

    async def init_node(self, principal, authn_access_tags, authn_scopes, access_tags=None):
        if access_tags is None and self._empty_access_tags_public is not None:
            return self._empty_access_tags_public, normalize_access_tags()
        body = self.build_input(principal, authn_access_tags, authn_scopes, access_tags)
        return await self._write_decision(self._create_node, body, access_tags)

    async def modify_node(self, node, principal, authn_access_tags, authn_scopes, access_tags):
        if access_tags == node.access_tags:
            return False, node.access_tags
        body = self.build_input(principal, authn_access_tags, authn_scopes, access_tags)
        return await self._write_decision(self._modify_node, body, access_tags)

    async def filters(self, node, principal, authn_access_tags, authn_scopes, scopes):
        body = self.build_input(principal, authn_access_tags, authn_scopes)
        tags = await self._decision(self._user_tags, body, list[str])
        if tags is None:
            return NO_ACCESS
        return [AccessTagsFilter(sorted(normalize_access_tags(tags)))]

    async def allowed_scopes(self, node, principal, authn_access_tags, authn_scopes):
        tags = getattr(node, "access_tags", None)
        body = self.build_input(principal, authn_access_tags, authn_scopes, tags)
        scopes = await self._decision(self._node_scopes, body, set[str])
        return scopes if scopes is not None else NO_SCOPES

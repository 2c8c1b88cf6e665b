"""Access policies: which scopes an identity has on a node, and which children it may see.

A policy sees the chain of ``(key, adapter)`` pairs from the root (key ``""``) to the node, so
rules may depend on ancestors. Every route, /api/v1 and /zarr alike, asks the same two questions through
``tiled.server.dependencies``:

- ``allowed_scopes(identity, chain)``: the scopes the identity holds on ``chain[-1]``; a node
  without ``read:metadata`` is invisible (404), one lacking the route's scope is forbidden (403);
- ``visible(identity, chain, key, child)``: whether a child appears in listings, search results and
  consolidated zarr metadata.

Policies are configured in YAML as ``access_control: {access_policy: "pkg.mod:Class", args: {...}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import Forbidden
from .identity import Identity
from .scopes import ALL_SCOPES

ALL_ACCESS = "tiled.access.policies:ALL_ACCESS"  # upstream's spelling of "every top-level node"
READ = frozenset({"read:metadata", "read:data"})


Chain = Sequence[tuple[str, Any]]
TAGS_REFUSED = "Access policy rejects the provided access tags: "


@runtime_checkable
class AccessPolicy(Protocol):
    def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]: ...

    def visible(self, identity: Identity, chain: Chain, key: str, child: Any) -> bool: ...


# Optional parts of a policy, asked for with ``tiled.adapters.protocols.supports``.
@runtime_checkable
class StartsWithTree(Protocol):
    async def startup(self, tree: Any) -> None:
        """Run once when the server starts, after the tree (e.g. connect to its catalog)."""
        ...


@runtime_checkable
class PreparesRequests(Protocol):
    async def prepare(self, root: Any) -> None:
        """Bring the policy's state up to date before a request on the tree ``root``."""
        ...


@runtime_checkable
class QueriesVisibleChildren(Protocol):
    def child_query(self, identity: Identity, chain: Chain) -> Any | None:
        """The rule of ``visible`` for the children of ``chain[-1]`` as a query the container
        evaluates (SQL in a catalog); None where the policy has no query form there."""
        ...


@runtime_checkable
class ApprovesTags(Protocol):
    def approve_tags(
        self,
        identity: Identity,
        current: frozenset[str] | None,
        requested: list[str] | None,
        granted: frozenset[str] | None = None,
    ) -> frozenset[str]:
        """The access tags to store on a node created (``current`` None) or updated; may
        refuse (403) or change the request. ``granted``: the identity's scopes on the node
        being updated (None on creation)."""
        ...


def _names(identity: Identity) -> set[str]:
    """Every name an identity may be listed under: its principal and its login ids."""
    return {n for n in (identity.principal, *identity.identity_ids) if n}


class AllowAll:
    """Every authenticated request may do what its credentials allow, everywhere."""

    def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]:
        return identity.scopes

    def visible(self, identity: Identity, chain: Chain, key: str, child: Any) -> bool:
        return True


class SimpleAccessPolicy:
    """Per-user lists of the top-level nodes each user may read (upstream's simple policy).

    ``access_lists`` maps a user (principal or login id) to top-level keys, or to
    ``ALL_ACCESS``; ``public`` lists top-level keys anyone may read, even anonymously;
    ``admins`` see everything. Below the top level, access is inherited.
    """

    def __init__(
        self,
        access_lists: Mapping[str, Iterable[str] | str],
        *,
        public: Iterable[str] = (),
        admins: Iterable[str] = (),
        scopes: Iterable[str] | None = None,
        provider: str | None = None,
    ):
        self.access_lists = {user: _access_list(user, keys) for user, keys in access_lists.items()}
        self.public = frozenset(public)
        self.admins = frozenset(admins)
        self.scopes = frozenset(scopes) if scopes is not None else None

    def _top_level_allowed(self, identity: Identity, key: str) -> bool:
        if key in self.public:
            return True
        for name in _names(identity):
            keys = self.access_lists.get(name)
            if keys == ALL_ACCESS or (keys is not None and key in keys):
                return True
        return False

    def _granted(self, identity: Identity) -> frozenset[str]:
        return identity.scopes if self.scopes is None else identity.scopes & self.scopes

    def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]:
        if _names(identity) & self.admins or len(chain) == 1:
            return identity.scopes  # the root is listable; its children are filtered
        return (
            self._granted(identity)
            if self._top_level_allowed(identity, chain[1][0])
            else frozenset()
        )

    def visible(self, identity: Identity, chain: Chain, key: str, child: Any) -> bool:
        if len(chain) > 1 or _names(identity) & self.admins:
            return True
        return self._top_level_allowed(identity, key)

    def child_query(self, identity: Identity, chain: Chain) -> Any | None:
        """The rule of :meth:`visible` as a query on the root's children (SQL in a catalog)."""
        if len(chain) > 1 or _names(identity) & self.admins:
            return None
        keys = set(self.public)
        for name in _names(identity):
            listed = self.access_lists.get(name)
            if listed == ALL_ACCESS:
                return None
            keys |= set(listed or ())
        from ..queries import KeysFilter

        return KeysFilter(sorted(keys))


def _access_list(user: str, keys: Iterable[str] | str) -> frozenset[str] | str:
    if isinstance(keys, str):
        if keys in (ALL_ACCESS, "tiled.access_policies:ALL_ACCESS"):  # upstream's spelling too
            return ALL_ACCESS
        raise ValueError(
            f"The access list of {user!r} must be a list of keys or ALL_ACCESS, not {keys!r}"
        )
    return frozenset(keys)


class TagBasedAccessPolicy:
    """Access by tags: nodes carry ``access_blob = {"tags": [...]}``; tags grant scopes.

    ``tags`` (a mapping, or the path of a YAML file holding ``tags:``) defines each tag as
    ``{"users": {name: [scopes]}, "public": [scopes]}``. A node's effective tags are its own,
    or else its nearest tagged ancestor's; a node with no effective tags is visible to admins
    only. The root is always listable; its children are filtered.
    """

    def __init__(
        self,
        tags: Mapping[str, Any] | str | Path,
        *,
        admins: Iterable[str] = (),
        provider: str | None = None,
    ):
        if isinstance(tags, str | Path):
            import yaml

            tags = yaml.safe_load(Path(tags).read_text())["tags"]
        self.tags = {name: _tag_definition(name, spec) for name, spec in dict(tags).items()}
        self.admins = frozenset(admins)

    def _scopes_for_tags(self, identity: Identity, tags: Iterable[str]) -> frozenset[str]:
        names = _names(identity)
        granted: set[str] = set()
        for tag in _within_key(identity, tags):
            definition = self.tags.get(tag)
            if definition is not None:
                granted |= definition["public"]
                for name in names:
                    granted |= definition["users"].get(name, frozenset())
        # Tags grant at most what the credentials carry (an API key may be narrower).
        return frozenset(granted) & identity.scopes

    def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]:
        if len(chain) == 1:
            return identity.scopes  # the root is listable; its children are filtered
        tags = _effective_tags(chain)
        if _names(identity) & self.admins:
            # An admin's key limited to some tags reaches only nodes under those tags.
            limited = identity.access_tags is not None and not _within_key(identity, tags)
            return frozenset() if limited else identity.scopes
        return self._scopes_for_tags(identity, tags) if tags else frozenset()

    def visible(self, identity: Identity, chain: Chain, key: str, child: Any) -> bool:
        return "read:metadata" in self.allowed_scopes(identity, [*chain, (key, child)])

    def approve_tags(
        self,
        identity: Identity,
        current: frozenset[str] | None,
        requested: Iterable[str] | None,
        granted: frozenset[str] | None = None,
    ) -> frozenset[str]:
        """The tags a node is created (``current`` None) or updated with, or 403.

        Tags decide who may do what, so changing them is an access decision, not a metadata
        edit: admins may set any defined tags; anyone else may tag a new node with defined
        tags, and may change an existing node's tags only when they may read its data (they
        cannot expose data they could not read) and the new tags grant them nothing that they
        do not hold on it already (``granted``: they cannot widen their own access).
        """
        if requested is None:
            return current if current is not None else frozenset()
        tags = frozenset(requested)
        undefined = sorted(tags - set(self.tags))
        if undefined:
            raise Forbidden(f"{TAGS_REFUSED}no tag is defined as {undefined}")
        if _names(identity) & self.admins or (current is not None and tags == current):
            return tags
        if current is None:
            return tags
        held = granted if granted is not None else frozenset()
        if "read:data" not in held:
            raise Forbidden(
                f"{TAGS_REFUSED}changing a node's tags needs read:data on it (admins excepted)"
            )
        widened = sorted(self._scopes_for_tags(identity, tags) - held)
        if widened:
            raise Forbidden(f"{TAGS_REFUSED}the new tags would grant you {widened} on this node")
        return tags

    def child_query(self, identity: Identity, chain: Chain) -> Any | None:
        """Under an untagged parent a child is visible exactly when its own tags grant
        ``read:metadata``: a tags-intersection query (SQL in a catalog). Under a tagged parent,
        untagged children inherit, which that query cannot say: None (the predicate applies)."""
        if _effective_tags(chain):
            return None
        if _names(identity) & self.admins:
            if identity.access_tags is None:
                return None
            readable = sorted(identity.access_tags)
        else:
            readable = [
                t for t in self.tags if "read:metadata" in self._scopes_for_tags(identity, [t])
            ]
        from ..queries import AccessBlobFilter

        return AccessBlobFilter(None, readable)


def _tag_definition(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(spec) - {"users", "public"}
    if unknown:
        raise ValueError(f"Tag {name!r} has unknown keys {sorted(unknown)}; allowed: users, public")
    for scopes in [spec.get("public", []), *dict(spec.get("users", {})).values()]:
        bad = set(scopes) - ALL_SCOPES
        if bad:
            raise ValueError(f"Tag {name!r} grants unknown scopes {sorted(bad)}")
    return {
        "public": frozenset(spec.get("public", [])),
        "users": {user: frozenset(scopes) for user, scopes in dict(spec.get("users", {})).items()},
    }


def _within_key(identity: Identity, tags: Iterable[str]) -> tuple[str, ...]:
    """The tags the identity's credentials reach: an API key limited to some tags (its
    ``access_tags``) narrows its principal's access to nodes under those tags, never widens it."""
    if identity.access_tags is None:
        return tuple(tags)
    return tuple(tag for tag in tags if tag in identity.access_tags)


def _own_tags(adapter: Any) -> tuple[str, ...]:
    blob = getattr(adapter, "access_blob", None) or {}
    return tuple(blob.get("tags", ()))


def _effective_tags(chain: Chain) -> tuple[str, ...]:
    for _, adapter in reversed(chain[1:]):
        tags = _own_tags(adapter)
        if tags:
            return tags
    return ()

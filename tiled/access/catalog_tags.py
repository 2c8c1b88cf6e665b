"""The tag policy of upstream Tiled 0.2.20: tag definitions compiled into the catalog database.

Sites define tags in YAML (who may do what on data carrying a tag, who owns a tag) and compile
them (:class:`tiled.access_control.access_tags.AccessTagsCompiler`) into four tables of the
catalog database: ``access_tags`` (names, ``is_public``), ``access_tags_principals`` (names of
users and services), ``access_grants`` (tag, principal, scope) and
``access_tag_owners_association``. Nodes carry tags through ``node_access_tags_association``.

:class:`AccessTagsParser` reads those tables into a :class:`TagDefinitions` snapshot;
:class:`CatalogTagPolicy` answers this server's policy questions from the newest snapshot, which
it reloads when it is older than ``refresh_seconds``, so a recompilation shows within that time
in every process. The rules are upstream's:

- a node's scopes are the union over its own tags (no inheritance from ancestors): a public
  tag grants reading, a defined tag grants what the tag's grants name for the principal, and the
  principal's own tag (``user:<id>``, or ``service:<uuid>``) grants everything its credentials
  carry; the result is clamped to the policy's ``scopes``;
- a principal holding ``admin:apikeys`` (a Tiled admin) has every policy scope everywhere;
- an API key limited to some tags sees only through those tags;
- a node without tags is visible to admins only; the root stays listable;
- a new node without requested tags gets its creator's own tag; requested tags must be defined
  and owned by the principal (admins excepted), ``public`` and empty lists are for admins,
  principal tags are never given by hand, and a non-admin may not leave themselves without
  ``read:metadata`` and ``write:metadata`` on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Forbidden
from .blobs import PRINCIPAL_TAG_PREFIXES, PUBLIC_TAG
from .identity import Identity
from .policies import Chain
from .scopes import ALL_SCOPES, PUBLIC_SCOPES

logger = logging.getLogger(__name__)

ADMIN_SCOPES = frozenset({"admin:apikeys"})
UNREMOVABLE_SCOPES = frozenset({"read:metadata", "write:metadata"})
REJECTED = "Access policy rejects the provided access tags.\n"


@dataclass(frozen=True)
class TagDefinitions:
    """One reading of the compiled tag tables."""

    defined: frozenset[str] = frozenset()
    public: frozenset[str] = frozenset()
    # principal name -> tag -> scopes that tag grants the principal
    grants: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    owners: frozenset[tuple[str, str]] = frozenset()  # (tag, principal name)

    def is_public(self, tag: str) -> bool:
        return tag == PUBLIC_TAG or tag in self.public

    def scopes(self, tag: str, who: str | None) -> frozenset[str]:
        if who is None:
            return frozenset()
        return self.grants.get(who, {}).get(tag, frozenset())

    def tags_granting(self, scope: str, who: str | None) -> set[str]:
        if who is None:
            return set()
        return {tag for tag, scopes in self.grants.get(who, {}).items() if scope in scopes}

    def is_owner(self, tag: str, who: str | None) -> bool:
        return who is not None and (tag, who) in self.owners


async def read_tag_definitions(connection: Any) -> TagDefinitions:
    """Read the compiled tables through an open (async) connection to the catalog database."""
    from sqlalchemy import select

    from ..catalog.orm import (
        access_grants,
        access_tag_owners_association,
        access_tags,
        access_tags_principals,
    )

    tags = (await connection.execute(select(access_tags.c.name, access_tags.c.is_public))).all()
    named_grants = access_grants.join(access_tags, access_tags.c.id == access_grants.c.tag_id).join(
        access_tags_principals, access_tags_principals.c.id == access_grants.c.principal_id
    )
    grant_rows = await connection.execute(
        select(access_tags_principals.c.name, access_tags.c.name, access_grants.c.scope)
        .select_from(named_grants)
    )  # fmt: skip
    grants: dict[str, dict[str, set[str]]] = {}
    for who, tag, scope in grant_rows:
        grants.setdefault(who, {}).setdefault(tag, set()).add(str(getattr(scope, "value", scope)))
    owners = access_tag_owners_association
    owner_rows = await connection.execute(
        select(access_tags.c.name, access_tags_principals.c.name).select_from(
            owners.join(access_tags, access_tags.c.id == owners.c.tag_id).join(
                access_tags_principals, access_tags_principals.c.id == owners.c.principal_id
            )
        )
    )
    return TagDefinitions(
        defined=frozenset(name for name, _ in tags),
        public=frozenset(name for name, is_public in tags if is_public),
        grants={
            who: {tag: frozenset(scopes) for tag, scopes in by_tag.items()}
            for who, by_tag in grants.items()
        },
        owners=frozenset(tuple(row) for row in owner_rows),
    )


async def read_enforced_scopes(connection: Any) -> set[str]:
    """The scopes the catalog database accepts in ``access_grants.scope`` (empty: unknown)."""
    from sqlalchemy import inspect

    from ..catalog.orm import access_grants

    name = access_grants.c.scope.type.name

    def read(sync_connection: Any) -> set[str]:
        inspector = inspect(sync_connection)
        if sync_connection.dialect.name == "postgresql":
            for enum in inspector.get_enums():
                if enum["name"] == name:
                    return set(enum["labels"])
            return set()
        for constraint in inspector.get_check_constraints(access_grants.name):
            if constraint.get("name") == name:
                # SQLite keeps only the text: scope IN ('read:data', 'write:data', ...)
                inside = constraint["sqltext"].split("(", 1)[1].rsplit(")", 1)[0]
                return {value.strip().strip("'") for value in inside.split(",")}
        return set()

    return await connection.run_sync(read)


class AccessTagsParser:
    """Reads the compiled tag tables of a catalog database (upstream's name and methods).

    Connected at server startup to the catalog the tree serves (:meth:`connect`); each method
    reads the tables afresh. :class:`CatalogTagPolicy` uses :meth:`definitions` and keeps the
    snapshot it returns for ``refresh_seconds``.
    """

    def __init__(self, engine: Any = None):
        self._connect: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
        if engine is not None:
            self._connect = engine.connect

    async def connect(self, target: Any) -> None:
        """Read from ``target``: a catalog (:class:`tiled.catalog.core.Catalog`), an async
        engine, or database settings / a URI (an engine from the shared pool)."""
        if self._connect is not None:
            return
        if hasattr(target, "connect") and hasattr(target, "current_engine"):  # a Catalog
            self._connect = target.connect
        elif hasattr(target, "connect") and hasattr(target, "dispose"):  # an AsyncEngine
            self._connect = target.connect
        else:
            from ..server.connection_pool import get_database_engine
            from ..server.settings import DatabaseSettings

            settings = target if hasattr(target, "uri") else DatabaseSettings(uri=str(target))
            self._connect = get_database_engine(settings).connect

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._connect is None:
            raise RuntimeError("AccessTagsParser is not connected to a catalog database")
        async with self._connect() as connection:
            yield connection

    async def definitions(self) -> TagDefinitions:
        async with self._connection() as connection:
            return await read_tag_definitions(connection)

    async def get_enforced_scopes(self) -> set[str]:
        async with self._connection() as connection:
            return await read_enforced_scopes(connection)

    async def is_tag_defined(self, name: str) -> bool:
        return name in (await self.definitions()).defined

    async def is_tag_public(self, name: str) -> bool:
        return name in (await self.definitions()).public

    async def get_public_tags(self) -> set[str]:
        return set((await self.definitions()).public)

    async def get_scopes_from_tag(self, tagname: str, username: str) -> set[str]:
        return set((await self.definitions()).scopes(tagname, username))

    async def is_tag_owner(self, tagname: str, username: str) -> bool:
        return (await self.definitions()).is_owner(tagname, username)

    async def get_tags_from_scope(self, scope: str, username: str) -> set[str]:
        return (await self.definitions()).tags_granting(scope, username)


def node_tags(adapter: Any) -> frozenset[str] | None:
    """The tags a node carries; None for a node that cannot carry tags (not a catalog node)."""
    tags = getattr(adapter, "access_tags", None)
    return None if tags is None else frozenset(tags)


class CatalogTagPolicy:
    """Upstream 0.2.20's ``TagBasedAccessPolicy``: see the module's docstring for the rules."""

    def __init__(
        self,
        *,
        provider: str,
        access_tags_parser: Any = AccessTagsParser,
        scopes: Iterable[str] | None = None,
        refresh_seconds: float = 1.0,
    ):
        if isinstance(access_tags_parser, str):
            from ..utils import import_object

            access_tags_parser = import_object(access_tags_parser)
        if isinstance(access_tags_parser, type):
            access_tags_parser = access_tags_parser()
        self.parser = access_tags_parser
        self.provider = provider
        self.scopes = ALL_SCOPES if scopes is None else frozenset(scopes)
        unknown = self.scopes - ALL_SCOPES
        if unknown:
            raise ValueError(f"TagBasedAccessPolicy 'scopes': unknown scopes {sorted(unknown)}")
        self.refresh_seconds = refresh_seconds
        self.definitions = TagDefinitions()
        self._loaded_at: float | None = None
        self._reloading: asyncio.Lock | None = None

    # upstream's attribute name for the parser
    @property
    def access_tags_parser(self) -> Any:
        return self.parser

    async def startup(self, tree: Any) -> None:
        """Connect the parser to the catalog that ``tree`` serves and read the definitions."""
        catalog = find_catalog(tree)
        if catalog is None:
            raise ValueError(
                "TagBasedAccessPolicy with access_tags_parser reads the tag definitions from the "
                "catalog database, so the tree must be (or mount) an SQL catalog"
            )
        await self.parser.connect(catalog)
        enforced = await self.parser.get_enforced_scopes()
        unstorable = self.scopes - enforced
        if enforced and unstorable:
            logger.warning(
                "The catalog database cannot store the scopes %s, which the access policy may "
                "grant: no tag can grant them.",
                sorted(unstorable),
            )
        await self._reload()

    async def _reload(self) -> None:
        self.definitions = await self.parser.definitions()
        self._loaded_at = time.monotonic()

    async def prepare(self, tree: Any) -> None:
        """Reload the definitions if they are older than ``refresh_seconds`` (once per request;
        concurrent requests keep the current snapshot while one reloads). An application run
        without its lifespan (so without :meth:`startup`) starts here, on its first request."""
        if self._fresh():
            return
        if self._reloading is None:
            self._reloading = asyncio.Lock()
        if self._reloading.locked() and self._loaded_at is not None:
            return
        async with self._reloading:
            if self._loaded_at is None:
                await self.startup(tree)
            elif not self._fresh():
                await self._reload()

    def _fresh(self) -> bool:
        loaded_at = self._loaded_at
        return loaded_at is not None and time.monotonic() - loaded_at < self.refresh_seconds

    # --- who is asking ------------------------------------------------------------------------

    def _is_admin(self, identity: Identity) -> bool:
        return ADMIN_SCOPES <= identity.scopes

    def _who(self, identity: Identity) -> str | None:
        """The name tag grants use for this principal: its login id with the policy's provider,
        or a service's uuid."""
        if identity.is_anonymous:
            return None
        if identity.principal_type == "service":
            return identity.principal_uuid
        return identity.id_from(self.provider)

    def _own_tags(self, identity: Identity) -> frozenset[str]:
        who = self._who(identity)
        if who is None:
            return frozenset()
        if identity.principal_type == "service":
            return frozenset({f"user:{who}", f"service:{who}"})
        return frozenset({f"user:{who}"})

    # --- reading ------------------------------------------------------------------------------

    def _scopes_from_tags(self, identity: Identity, tags: Iterable[str]) -> frozenset[str]:
        definitions, who, own = self.definitions, self._who(identity), self._own_tags(identity)
        allowed: set[str] = set()
        for tag in tags:
            if identity.access_tags is not None and tag not in identity.access_tags:
                continue
            if tag in own:
                allowed |= identity.scopes
            if definitions.is_public(tag):
                allowed |= PUBLIC_SCOPES
            if tag in definitions.defined:
                allowed |= definitions.scopes(tag, who)
        return frozenset(allowed) & self.scopes & identity.scopes

    def _readable_root(self, identity: Identity, root: Any) -> bool:
        tags = node_tags(root)
        return (
            tags is None
            or self._is_admin(identity)
            or "read:metadata" in self._scopes_from_tags(identity, tags)
        )

    def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]:
        node = chain[-1][1]
        tags = node_tags(node)
        if tags is None or self._is_admin(identity):
            return self.scopes & identity.scopes
        if len(chain) == 1 and not self._readable_root(identity, node):
            # The root stays listable (its members are filtered out), as upstream's empty node.
            return PUBLIC_SCOPES & identity.scopes
        return self._scopes_from_tags(identity, tags)

    def visible(self, identity: Identity, chain: Chain, key: str, child: Any) -> bool:
        if len(chain) == 1 and not self._readable_root(identity, chain[0][1]):
            return False
        tags = node_tags(child)
        if tags is None or self._is_admin(identity):
            return True
        return "read:metadata" in self._scopes_from_tags(identity, tags)

    def readable_tags(self, identity: Identity) -> set[str]:
        """The tags that let this identity see a node (what :meth:`visible` accepts)."""
        if not {"read:metadata"} <= self.scopes & identity.scopes:
            return set()
        definitions = self.definitions
        tags = definitions.tags_granting("read:metadata", self._who(identity))
        tags |= set(self._own_tags(identity)) | set(definitions.public) | {PUBLIC_TAG}
        if identity.access_tags is not None:
            tags &= identity.access_tags
        return tags

    def child_query(self, identity: Identity, chain: Chain) -> Any | None:
        """The members of a catalog container as a query on their tags (SQL in a catalog)."""
        parent = chain[-1][1]
        if node_tags(parent) is None or self._is_admin(identity):
            return None
        from ..queries import AccessTagsFilter

        if len(chain) == 1 and not self._readable_root(identity, parent):
            return AccessTagsFilter([])
        return AccessTagsFilter(sorted(self.readable_tags(identity)))

    # --- writing ------------------------------------------------------------------------------

    def approve_tags(
        self,
        identity: Identity,
        current: frozenset[str] | None,
        requested: Iterable[str] | None,
        granted: frozenset[str] | None = None,
    ) -> frozenset[str]:
        """The tags a node is created (``current`` None) or updated with; :class:`Forbidden`
        (403) naming the rule when the request breaks one. (``granted``, the identity's scopes
        on the node, is not needed here: tag ownership decides.)"""
        try:
            if current is None:
                return self._tags_for_new_node(identity, requested)
            return self._tags_for_update(identity, current, requested)
        except ValueError as error:
            raise Forbidden(REJECTED + str(error)) from None

    def _tags_for_new_node(self, identity: Identity, requested: Iterable[str] | None):
        who = self._who(identity)
        if requested is None:
            if who is None:
                raise ValueError("Cannot create a node owned by a principal without a name")
            own = f"{identity.principal_type}:{who}"
            if identity.access_tags is not None and own not in identity.access_tags:
                raise ValueError(
                    "Cannot init node as user-tagged node.\nCurrent API key does not permit "
                    f"action on user-owned nodes; give only tags allowed by this API key: "
                    f"{sorted(identity.access_tags)}"
                )
            return frozenset({own})
        tags = _tag_set(requested)
        self._check_added(identity, tags, frozenset())
        self._check_keeps_access(identity, tags)
        return tags

    def _tags_for_update(self, identity: Identity, current: frozenset[str], requested):
        if requested is None:
            return current
        tags = _tag_set(requested)
        if tags == current:
            return current
        self._check_added(identity, tags, current)
        own = self._own_tags(identity)
        for tag in sorted(current - tags):
            if identity.access_tags is not None and tag not in identity.access_tags:
                raise ValueError(
                    "Cannot remove tag from node: API key is restricted to access tags: "
                    f"{sorted(identity.access_tags)}."
                )
            if tag in own:
                continue  # a principal may always drop its own tag
            self._check_may_apply(identity, tag, "remove")
        self._check_keeps_access(identity, tags)
        return tags

    def _check_added(self, identity: Identity, tags: frozenset[str], current: frozenset[str]):
        if not tags and not self._is_admin(identity):
            raise ValueError(
                "Cannot apply empty tag list to node: only Tiled admins can apply an empty "
                "tag list."
            )
        if any(tag.startswith(PRINCIPAL_TAG_PREFIXES) for tag in tags - current):
            raise ValueError(f"Cannot manually tag node with user tags.\nReceived {sorted(tags)}")
        for tag in sorted(tags - current):
            if identity.access_tags is not None and tag not in identity.access_tags:
                raise ValueError(
                    "Cannot apply tag to node: API key is restricted to access tags: "
                    f"{sorted(identity.access_tags)}."
                )
            self._check_may_apply(identity, tag, "apply")

    def _check_may_apply(self, identity: Identity, tag: str, verb: str) -> None:
        if self._is_admin(identity):
            if tag != PUBLIC_TAG and tag not in self.definitions.defined:
                raise ValueError(f"Cannot {verb} tag: {tag!r} is not defined")
            return
        if tag == PUBLIC_TAG:
            raise ValueError(f"Cannot {verb} the 'public' tag: only Tiled admins can.")
        if tag not in self.definitions.defined:
            raise ValueError(f"Cannot {verb} tag: {tag!r} is not defined")
        if not self.definitions.is_owner(tag, self._who(identity)):
            raise ValueError(
                f"Cannot {verb} tag: user {self._who(identity)!r} is not an owner of {tag!r}"
            )

    def _check_keeps_access(self, identity: Identity, tags: frozenset[str]) -> None:
        if self._is_admin(identity):
            return
        who = self._who(identity)
        granted = set().union(*(self.definitions.scopes(tag, who) for tag in tags))
        if not UNREMOVABLE_SCOPES <= granted:
            raise ValueError(
                f"Cannot give the node the tags {sorted(tags)}: they would not grant you "
                f"{sorted(UNREMOVABLE_SCOPES)}"
            )


def _tag_set(requested: Iterable[str]) -> frozenset[str]:
    if isinstance(requested, str) or not all(isinstance(tag, str) for tag in requested):
        raise ValueError(f"access_tags must be a list of tag names, not {requested!r}")
    return frozenset(requested)


def find_catalog(tree: Any, depth: int = 2) -> Any | None:
    """The SQL catalog that ``tree`` is, or mounts within ``depth`` levels."""
    catalog = getattr(tree, "catalog", None)
    if catalog is not None and hasattr(catalog, "current_engine"):
        return catalog
    if depth == 0:
        return None
    mapping = getattr(tree, "_mapping", None) or getattr(tree, "mapping", None)
    if isinstance(mapping, Mapping):
        for child in mapping.values():
            found = find_catalog(child, depth - 1)
            if found is not None:
                return found
    return None

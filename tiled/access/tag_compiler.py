"""Turn access-tag definitions into the catalog database's access-tag tables.

A site describes its tags in YAML (or a dict of the same shape)::

    roles:                      # named sets of scopes
      reader: {scopes: [read:data, read:metadata]}
    tags:
      beamline_x:
        users:  [{name: alice, role: reader}, {name: bob, scopes: [read:metadata]}]
        groups: [{name: staff, role: reader}]    # members come from the group parser
        auto_tags: [{name: admins}]              # everything "admins" grants, too
      open_data:
        auto_tags: [{name: public}]              # readable by anyone: a public tag
    tag_owners:
      beamline_x: {users: [{name: alice}], groups: [{name: staff}]}

:class:`AccessTagsCompiler` (upstream Tiled's name and interface) resolves those definitions
into, for every tag, the scopes each principal holds on data carrying it, whether the tag is
public, and who owns it; optionally adds a *principal tag* per principal of the authentication
database (``user:<login>``, ``service:<uuid>``); and writes the outcome into the catalog
database's ``access_tags``, ``access_tags_principals``, ``access_grants`` and
``access_tag_owners_association`` tables, where the tag-based access policy reads it.

Writing is a synchronization, in one transaction: rows already there keep their ids (the
catalog refers to tags by id), what changed is inserted or deleted, and a tag that disappeared
from the definitions but is still assigned to data is kept, stripped of its grants, rather
than deleted (deleting it would silently drop it from that data).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..catalog.orm import (
    access_grants,
    access_tag_owners_association,
    access_tags,
    access_tags_principals,
    entity_access_tags_association,
    link_access_tags_association,
    metadata_obj,
    node_access_tags_association,
)
from .blobs import PRINCIPAL_TAG_PREFIXES, PUBLIC_TAG
from .scopes import ALL_SCOPES

# The longest chain of auto_tags allowed (a tag that auto-tags one more tag is one level).
MAX_AUTO_TAG_DEPTH = 5
# Key of the PostgreSQL advisory lock that makes concurrent compilations take turns.
ADVISORY_LOCK_KEY = 746

# What the compiler writes (and creates when missing: a catalog database need not exist yet).
TAG_TABLES = (access_tags, access_tags_principals, access_grants, access_tag_owners_association)
# Where data is tagged: a tag referenced here is never deleted.
ASSIGNMENT_TABLES = (
    node_access_tags_association,
    entity_access_tags_association,
    link_access_tags_association,
)
_BATCH = 500  # ids per IN (...) list

GroupParser = Callable[[str], Iterable[str]]
Grants = dict[str, dict[str, frozenset[str]]]  # tag -> principal -> scopes


class TagCompilationError(RuntimeError, ValueError):
    """A tag's definition cannot be compiled; the message names the tag and says why."""

    def __init__(self, tag: str, reason: str):
        super().__init__(f"Tag compilation failed at tag: {tag}: {reason}")
        self.tag = tag
        self.reason = reason


@dataclass(frozen=True)
class CompiledTags:
    """The outcome of a compilation, as the tables will hold it (by name)."""

    grants: Grants
    public: frozenset[str]
    owners: dict[str, frozenset[str]]

    @property
    def tag_names(self) -> set[str]:
        return set(self.grants) | set(self.owners)

    @property
    def principal_names(self) -> set[str]:
        names = {name for holders in self.grants.values() for name in holders}
        return names.union(*self.owners.values())


@dataclass
class _TagSpec:
    """One tag's definition, validated: direct grants and the tags it pulls in."""

    direct: dict[str, set[str]] = field(default_factory=dict)
    auto_tags: list[str] = field(default_factory=list)
    auto_public: bool = False

    def grant(self, principal: str, scopes: Iterable[str]) -> None:
        self.direct.setdefault(principal, set()).update(scopes)


def _is_public_name(name: str) -> bool:
    return name.casefold() == PUBLIC_TAG


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string (quote it in YAML), not {value!r}")
    return value


def _entries(definition: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    entries = definition.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ValueError(f"{what}: '{key}' must be a list of mappings")
    return entries


def _chunks(values: list, size: int = _BATCH) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class AccessTagsCompiler:
    """Compile access-tag definitions into the catalog database (upstream Tiled's interface).

    ``scopes``: the scopes definitions may grant (the access policy's scopes).
    ``tag_config``: the path of a YAML file, or a dict, with ``roles``, ``tags`` and
    ``tag_owners``. ``database_settings``: the catalog database
    (:class:`~tiled.server.settings.DatabaseSettings`). ``group_parser``: a group's name ->
    the names of its members; a ``KeyError`` means there is no such group (warned about and
    skipped). With ``authn_database_settings`` and ``provider`` (both or neither),
    :meth:`load_principal_tags` adds a tag per principal of that authentication database.

    Usage: :meth:`load_tag_config`, optionally ``await`` :meth:`load_principal_tags`, then
    ``await`` :meth:`compile`. To pick up changed definitions in a long-lived process:
    :meth:`clear_raw_tags`, load again, ``await`` :meth:`recompile`.
    """

    def __init__(
        self,
        scopes: Iterable[Any],
        tag_config: str | Path | Mapping[str, Any],
        database_settings: Any,
        group_parser: GroupParser,
        *,
        authn_database_settings: Any = None,
        provider: str | None = None,
    ):
        from ..server.connection_pool import get_database_engine

        names = {getattr(scope, "value", scope) for scope in (scopes or ())}
        unknown = names - ALL_SCOPES
        if unknown:
            raise ValueError(
                f"Unknown scopes {sorted(map(str, unknown))} given to AccessTagsCompiler; "
                f"the scopes are {sorted(ALL_SCOPES)}."
            )
        if (authn_database_settings is None) != (provider is None):
            raise ValueError(
                "Give authn_database_settings and provider together: principal tags name "
                "users by their identity at that provider."
            )
        self.scopes: frozenset[str] = frozenset(names)
        self.tag_config = tag_config
        self.group_parser = group_parser
        self.provider = provider
        self._engine: AsyncEngine | None = get_database_engine(database_settings)
        if self._engine is None:
            raise ValueError("database_settings name no database (its uri is None)")
        self._authn_engine: AsyncEngine | None = (
            None
            if authn_database_settings is None
            else get_database_engine(authn_database_settings)
        )
        # The raw definitions, as loaded (see clear_raw_tags).
        self.roles: dict[str, Any] = {}
        self.config_tags: dict[str, Any] = {}
        self.tag_owners: dict[str, Any] = {}
        # Principal tag -> (principal name, scopes), from the authentication database.
        self.principal_tags: dict[str, tuple[str, frozenset[str]]] = {}
        # The outcome of the latest compilation.
        self.compiled: CompiledTags | None = None

    # --- the definitions -----------------------------------------------------------------------

    def load_tag_config(self) -> None:
        """Read ``tag_config`` and add its roles, tags and tag owners to those already loaded."""
        config = self.tag_config
        if isinstance(config, (str, Path)):
            import yaml

            try:
                with open(config) as file:
                    config = yaml.safe_load(file)
            except FileNotFoundError:
                raise ValueError(f"The tag config file {str(config)!r} does not exist.") from None
        if not isinstance(config, Mapping):
            raise TypeError(
                f"tag_config must be a YAML file's path or a mapping, not {type(config).__name__}"
            )
        if not isinstance(config.get("tags"), Mapping):
            raise ValueError("The tag config needs a 'tags' mapping (tag name -> definition).")
        for section, target in (
            ("roles", self.roles),
            ("tags", self.config_tags),
            ("tag_owners", self.tag_owners),
        ):
            value = config.get(section) or {}
            if not isinstance(value, Mapping):
                raise ValueError(f"The tag config's '{section}' must be a mapping.")
            target.update(value)

    def clear_raw_tags(self) -> None:
        """Forget every loaded definition (config and principal tags) before loading anew."""
        self.roles = {}
        self.config_tags = {}
        self.tag_owners = {}
        self.principal_tags = {}

    async def load_principal_tags(self) -> None:
        """Define a tag per principal of the authentication database, granting it its scopes.

        A user is named by its identity at ``provider`` (tag ``user:<id>``), a service by its
        uuid (tags ``service:<uuid>`` and ``user:<uuid>``). The scopes are those its roles
        give, narrowed to the compiler's scopes; a principal with none still gets its tag.
        If the database is missing, not initialized or cannot be read, this warns and leaves
        the principal tags as they were: the compilation goes ahead with the config's tags.
        """
        from ..authn_database.connection import sqlite_file_missing

        if self._authn_engine is None:
            raise RuntimeError(
                "No authentication database to read principals from: construct the compiler "
                "with authn_database_settings and provider."
            )
        # Connecting would create a missing SQLite file; the compiler only ever reads it.
        if sqlite_file_missing(self._authn_engine.url):
            self._warn_no_principals("the authentication database does not exist yet")
            return
        try:
            async with self._authn_engine.connect() as connection:
                principal_tags = await self._read_principal_tags(connection)
        except Exception as err:  # noqa: BLE001 - any failure: carry on with the config's tags
            self._warn_no_principals(
                f"the authentication database could not be read ({type(err).__name__}: {err})"
            )
            return
        if principal_tags is None:
            self._warn_no_principals("the authentication database is not initialized")
            return
        self.principal_tags = principal_tags

    @staticmethod
    def _warn_no_principals(why: str) -> None:
        warnings.warn(
            f"No principal tags were generated: {why}. Compiling the configured tags only.",
            UserWarning,
            stacklevel=3,
        )

    async def _read_principal_tags(
        self, connection: AsyncConnection
    ) -> dict[str, tuple[str, frozenset[str]]] | None:
        from ..authn_database.orm import Identity, Principal, Role, principal_role_association

        needed = (Principal.__tablename__, Identity.__tablename__, Role.__tablename__)
        existing = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        if not existing.issuperset(needed + (principal_role_association.name,)):
            return None
        role_scopes = {
            role_id: frozenset(scopes or ()) & self.scopes
            for role_id, scopes in await connection.execute(select(Role.id, Role.scopes))
        }
        held: dict[int, frozenset[str]] = {}
        links = select(
            principal_role_association.c.principal_id, principal_role_association.c.role_id
        )
        for principal_id, role_id in await connection.execute(links):
            held[principal_id] = held.get(principal_id, frozenset()) | role_scopes[role_id]
        tags: dict[str, tuple[str, frozenset[str]]] = {}
        users = (
            select(Principal.id, Identity.id)
            .join(Identity, Identity.principal_id == Principal.id)
            .where(Principal.type == "user", Identity.provider == self.provider)
        )
        for principal_id, login in await connection.execute(users):
            tags[f"user:{login}"] = (login, held.get(principal_id, frozenset()))
        services = select(Principal.id, Principal.uuid).where(Principal.type == "service")
        for principal_id, uuid in await connection.execute(services):
            name, scopes = str(uuid), held.get(principal_id, frozenset())
            tags[f"service:{name}"] = tags[f"user:{name}"] = (name, scopes)
        return tags

    # --- compiling -----------------------------------------------------------------------------

    async def compile(self) -> CompiledTags:
        """Compile the loaded definitions and write them into the catalog database."""
        compiled = self.resolve()
        await self.write(compiled)
        self.compiled = compiled
        return compiled

    async def recompile(self) -> CompiledTags:
        """Compile from scratch (each compilation does: the same as :meth:`compile`)."""
        return await self.compile()

    # Upstream's names for the outcome of the latest compilation.
    @property
    def compiled_tags(self) -> Grants:
        return dict(self.compiled.grants) if self.compiled else {PUBLIC_TAG: {}}

    @property
    def compiled_public(self) -> set[str]:
        return set(self.compiled.public) if self.compiled else {PUBLIC_TAG}

    @property
    def compiled_tag_owners(self) -> dict[str, frozenset[str]]:
        return dict(self.compiled.owners) if self.compiled else {}

    def resolve(self) -> CompiledTags:
        """The loaded definitions, compiled, without touching any database."""
        self._check_roles()
        for tag in self.tag_owners:
            _text(tag, "A tag name in 'tag_owners'")
            if tag.casefold().startswith(PRINCIPAL_TAG_PREFIXES):
                raise ValueError(
                    f"Tag {tag!r} in 'tag_owners' is a principal tag (it starts with one of "
                    f"{PRINCIPAL_TAG_PREFIXES}): principal tags cannot have owners."
                )
        members = _GroupMembers(self.group_parser)
        specs = self._specs(members)
        grants, public = _Resolver(specs).resolve_all()
        owners = self._owners(members)
        return CompiledTags(grants=grants, public=frozenset(public), owners=owners)

    def _check_roles(self) -> None:
        for name, role in self.roles.items():
            _text(name, "A role name")
            scopes = role.get("scopes") if isinstance(role, Mapping) else None
            if not scopes:
                raise ValueError(f"Role {name!r} must define a non-empty list of 'scopes'.")
            self._check_scopes(scopes, f"role {name!r}")

    def _check_scopes(self, scopes: Any, what: str) -> set[str]:
        if isinstance(scopes, str) or not isinstance(scopes, Iterable):
            raise ValueError(f"The scopes of {what} must be a list, not {scopes!r}")
        scopes = set(scopes)
        if not scopes:
            raise ValueError(f"The scopes of {what} must not be empty.")
        invalid = scopes - self.scopes
        if invalid:
            raise ValueError(
                f"The scopes of {what} include {sorted(map(str, invalid))}, which are not "
                f"among the compiler's scopes {sorted(self.scopes)}."
            )
        return scopes

    def _entry_scopes(self, entry: Mapping[str, Any], what: str) -> set[str]:
        """The scopes a user or group entry grants: its own 'scopes' or its role's."""
        if ("scopes" in entry) == ("role" in entry):
            raise ValueError(f"{what} must have exactly one of 'scopes' and 'role'.")
        if "role" in entry:
            role = entry["role"]
            if role not in self.roles:
                raise ValueError(f"{what} has the role {role!r}, which is not defined.")
            return set(self.roles[role]["scopes"])
        return self._check_scopes(entry["scopes"] or [], what)

    def _specs(self, members: _GroupMembers) -> dict[str, _TagSpec]:
        specs: dict[str, _TagSpec] = {}
        for tag, definition in self.config_tags.items():
            _text(tag, "A tag name")
            if _is_public_name(tag):
                raise ValueError(
                    f"The tag {tag!r} is built in (always public) and cannot be redefined."
                )
            try:
                specs[tag] = self._spec(tag, definition or {}, members)
            except ValueError as err:
                raise TagCompilationError(tag, str(err)) from err
        for tag, (principal, scopes) in self.principal_tags.items():
            spec = specs.setdefault(tag, _TagSpec())
            if scopes:  # a principal whose roles give nothing: its tag, without a grant
                spec.grant(principal, scopes)
        return specs

    def _spec(self, tag: str, definition: Any, members: _GroupMembers) -> _TagSpec:
        if not isinstance(definition, Mapping):
            raise ValueError("a tag's definition must be a mapping")
        spec = _TagSpec()
        for entry in _entries(definition, "users", tag):
            name = _text(entry.get("name"), "A user's name")
            spec.grant(name, self._entry_scopes(entry, f"User {name!r}"))
        for entry in _entries(definition, "groups", tag):
            name = _text(entry.get("name"), "A group's name")
            scopes = self._entry_scopes(entry, f"Group {name!r}")
            for member in members(name):
                spec.grant(member, scopes)
        for entry in _entries(definition, "auto_tags", tag):
            name = _text(entry.get("name"), "An auto_tag's name")
            if _is_public_name(name):
                spec.auto_public = True
            elif name not in self.config_tags and name not in self.principal_tags:
                raise ValueError(f"its auto_tag {name!r} is not defined")
            elif name not in spec.auto_tags:
                spec.auto_tags.append(name)
        return spec

    def _owners(self, members: _GroupMembers) -> dict[str, frozenset[str]]:
        owners: dict[str, frozenset[str]] = {}
        for tag, definition in self.tag_owners.items():
            if not isinstance(definition or {}, Mapping):
                raise ValueError(f"The owners of tag {tag!r} must be a mapping.")
            names: set[str] = set()
            for entry in _entries(definition or {}, "users", f"owners of {tag!r}"):
                names.add(_text(entry.get("name"), "An owner's name"))
            for entry in _entries(definition or {}, "groups", f"owners of {tag!r}"):
                names.update(members(_text(entry.get("name"), "A group's name")))
            owners[tag] = frozenset(names)
        return owners

    # --- writing -------------------------------------------------------------------------------

    async def write(self, compiled: CompiledTags) -> None:
        """Make the catalog's tag tables hold ``compiled``, in one transaction."""
        engine = self._engine
        retained: list[str] = []
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
            await connection.run_sync(metadata_obj.create_all, tables=TAG_TABLES, checkfirst=True)
            retained = await _synchronize(connection, compiled)
        if retained:
            warnings.warn(
                "These tags are no longer defined but are still assigned to data, so they were "
                f"kept, without any grant and not public: {retained}",
                UserWarning,
                stacklevel=3,
            )


class _GroupMembers:
    """The group parser, asked once per group per compilation; unknown groups are skipped."""

    def __init__(self, parser: GroupParser):
        self._parser = parser
        self._known: dict[str, list[str]] = {}

    def __call__(self, group: str) -> list[str]:
        if group not in self._known:
            try:
                found = self._parser(group)
            except KeyError:
                warnings.warn(
                    f"Group {group!r} does not exist; skipping it.", UserWarning, stacklevel=2
                )
                found = ()
            self._known[group] = [_text(name, f"A member of group {group!r}") for name in found]
        return self._known[group]


class _Resolver:
    """Follows auto_tags depth first: each tag's grants include its auto_tags' grants."""

    def __init__(self, specs: dict[str, _TagSpec]):
        self.specs = specs
        self.grants: Grants = {PUBLIC_TAG: {}}
        self.public: set[str] = {PUBLIC_TAG}
        self.height: dict[str, int] = {}  # the longest auto_tag chain below a tag

    def resolve_all(self) -> tuple[Grants, set[str]]:
        for tag in self.specs:
            self._visit(tag, ())
        return self.grants, self.public

    def _visit(self, tag: str, path: tuple[str, ...]) -> None:
        if tag in self.height:
            return
        if tag in path:
            cycle = " -> ".join((*path[path.index(tag) :], tag))
            raise TagCompilationError(tag, f"its auto_tags form a cycle: {cycle}")
        if len(path) > MAX_AUTO_TAG_DEPTH:
            chain = " -> ".join((*path, tag))
            raise TagCompilationError(
                path[0], f"auto_tags nest deeper than {MAX_AUTO_TAG_DEPTH} levels: {chain}"
            )
        spec = self.specs[tag]
        merged = {principal: set(scopes) for principal, scopes in spec.direct.items()}
        is_public = spec.auto_public
        height = 0
        for child in spec.auto_tags:
            self._visit(child, (*path, tag))
            for principal, scopes in self.grants[child].items():
                merged.setdefault(principal, set()).update(scopes)
            is_public = is_public or child in self.public
            height = max(height, self.height[child] + 1)
        if height > MAX_AUTO_TAG_DEPTH:
            raise TagCompilationError(
                tag, f"auto_tags nest deeper than {MAX_AUTO_TAG_DEPTH} levels below it"
            )
        self.height[tag] = height
        self.grants[tag] = {principal: frozenset(scopes) for principal, scopes in merged.items()}
        if is_public:
            self.public.add(tag)


# --- the synchronization of the tables -----------------------------------------------------------


def _insert(connection: AsyncConnection):
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


async def _synchronize(connection: AsyncConnection, compiled: CompiledTags) -> list[str]:
    """Bring the four tag tables to ``compiled``; return the names of retained stale tags.

    The first statement writes, so on SQLite the transaction holds the write lock before it
    reads anything it will act on.
    """
    insert = _insert(connection)
    wanted_tags = {name: name in compiled.public for name in compiled.tag_names}
    upsert = insert(access_tags)
    upsert = upsert.on_conflict_do_update(
        index_elements=[access_tags.c.name],
        set_={"is_public": upsert.excluded.is_public, "time_updated": func.now()},
        where=access_tags.c.is_public != upsert.excluded.is_public,
    )
    await connection.execute(
        upsert, [{"name": name, "is_public": public} for name, public in wanted_tags.items()]
    )
    wanted_principals = compiled.principal_names
    if wanted_principals:
        await connection.execute(
            insert(access_tags_principals).on_conflict_do_nothing(index_elements=["name"]),
            [{"name": name} for name in sorted(wanted_principals)],
        )

    tag_ids = dict((await connection.execute(select(access_tags.c.name, access_tags.c.id))).all())
    stale = {name: tag_id for name, tag_id in tag_ids.items() if name not in wanted_tags}
    assigned = await _assigned(connection, list(stale.values()))
    retained = sorted(name for name, tag_id in stale.items() if tag_id in assigned)
    for batch in _chunks(sorted(assigned)):
        await connection.execute(
            update(access_tags)
            .where(access_tags.c.id.in_(batch), access_tags.c.is_public)
            .values(is_public=False, time_updated=func.now())
        )
    await _delete_ids(connection, access_tags, [i for i in stale.values() if i not in assigned])
    principal_ids = dict(
        (
            await connection.execute(
                select(access_tags_principals.c.name, access_tags_principals.c.id)
            )
        ).all()
    )
    await _delete_ids(
        connection,
        access_tags_principals,
        [i for name, i in principal_ids.items() if name not in wanted_principals],
    )

    grants = {
        (tag_ids[tag], principal_ids[principal], scope)
        for tag, holders in compiled.grants.items()
        for principal, scopes in holders.items()
        for scope in scopes
    }
    await _mirror(connection, access_grants, ("tag_id", "principal_id", "scope"), grants)
    owners = {
        (tag_ids[tag], principal_ids[principal])
        for tag, names in compiled.owners.items()
        for principal in names
    }
    await _mirror(connection, access_tag_owners_association, ("tag_id", "principal_id"), owners)
    return retained


async def _assigned(connection: AsyncConnection, tag_ids: list[int]) -> set[int]:
    """Those of ``tag_ids`` some node, entity or link carries."""
    if not tag_ids:
        return set()
    existing = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    found: set[int] = set()
    for table in ASSIGNMENT_TABLES:
        if table.name not in existing:  # a catalog not created yet tags nothing
            continue
        for batch in _chunks(tag_ids):
            query = select(table.c.tag_id).where(table.c.tag_id.in_(batch)).distinct()
            found.update((await connection.execute(query)).scalars())
    return found


async def _delete_ids(connection: AsyncConnection, table: Any, ids: list[int]) -> None:
    # Deleting a tag or a principal deletes its grants and ownerships (ON DELETE CASCADE).
    for batch in _chunks(sorted(ids)):
        await connection.execute(table.delete().where(table.c.id.in_(batch)))


async def _mirror(
    connection: AsyncConnection, table: Any, columns: tuple[str, ...], wanted: set[tuple]
) -> None:
    """Make ``table`` hold exactly the rows ``wanted``: insert the missing, delete the rest."""
    selected = select(*(table.c[name] for name in columns))
    existing = {tuple(row) for row in await connection.execute(selected)}
    missing = wanted - existing
    if missing:
        await connection.execute(
            table.insert(), [dict(zip(columns, row, strict=True)) for row in sorted(missing)]
        )
    extra = existing - wanted
    if extra:
        match = [table.c[name] == bindparam(f"old_{name}") for name in columns]
        await connection.execute(
            table.delete().where(*match),
            [
                {f"old_{name}": value for name, value in zip(columns, row, strict=True)}
                for row in extra
            ],
        )

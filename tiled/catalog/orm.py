"""The catalog's tables: upstream Tiled 0.2.20's schema, on SQLite and PostgreSQL.

The schema is a fact of the interface: a database written by upstream's server opens here
with no step, and what this server writes upstream reads back. Table, column, constraint and
index names, column types and the PostgreSQL enum types are therefore upstream's; the
triggers that keep derived tables in step (the closure table, SQLite's full-text index, the
parent of an access-tag association) are in :mod:`tiled.catalog.ddl`.

The tree: every node is a row of ``nodes`` whose ``parent`` is its parent's id; the root is
the row with id 0 and no parent. ``nodes_closure`` holds every (ancestor, descendant, depth)
pair, so a subtree is one indexed lookup. A data source's structure lives in ``structures``,
keyed by the MD5 of its canonical JSON, so equal structures are stored once.

Access blobs are not a column: a node's tags are rows of ``node_access_tags_association``
pointing at ``access_tags`` by id (see :mod:`tiled.catalog.access`). Webhooks, the graph of
entities and links, namespaces and the access-grant tables exist so that upstream's data
survives a round trip through this server; this server does not use them.

Times are naive UTC (``timestamp without time zone``), as upstream writes them.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Unicode,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata_obj = MetaData()

JSONVariant = JSON().with_variant(JSONB(), "postgresql")

ROOT_ID = 0

STRUCTURE_FAMILIES = ("array", "awkward", "bytes", "container", "ragged", "sparse", "table")
MANAGEMENT_MODES = ("external", "immutable", "locked", "writable")
GRANT_SCOPES = (
    "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
    "delete:node", "create:node", "register", "metrics", "create:apikeys", "revoke:apikeys",
    "admin:apikeys", "read:principals", "write:principals", "read:webhooks", "write:webhooks",
)  # fmt: skip

structure_family_type = Enum(*STRUCTURE_FAMILIES, name="structurefamily")
management_type = Enum(*MANAGEMENT_MODES, name="management")
scope_name_type = Enum(*GRANT_SCOPES, name="scope_name", create_constraint=True)


def utcnow() -> datetime:
    """Now, as the naive UTC time the catalog's columns hold."""
    return datetime.now(UTC).replace(tzinfo=None)


def _timestamps() -> list[Column]:
    return [
        Column("time_created", DateTime(timezone=False), server_default=func.now()),
        Column("time_updated", DateTime(timezone=False), server_default=func.now()),
    ]


def _cascade(target: str, **options) -> ForeignKey:
    return ForeignKey(target, ondelete="CASCADE", **options)


nodes = Table(
    "nodes",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent", Integer, ForeignKey("nodes.id", ondelete="CASCADE", name="fk_nodes_parent")),
    Column("key", Unicode(1023), nullable=False),
    Column("structure_family", structure_family_type, nullable=False),
    Column("metadata", JSONVariant, nullable=False),
    Column("specs", JSONVariant, nullable=False),
    *_timestamps(),
    UniqueConstraint("key", "parent", name="key_parent_unique_constraint"),
    Index("ix_nodes_parent", "parent"),
    Index("ix_nodes_parent_id", "parent", "id"),
    Index(
        "ix_nodes_metadata",
        "metadata",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    ).ddl_if(dialect="postgresql"),
    Index(
        "metadata_tsvector_search",
        func.jsonb_to_tsvector(
            text("'simple'::regconfig"), text("metadata"), text("'[\"string\"]'::jsonb")
        ),
        postgresql_using="gin",
    ).ddl_if(dialect="postgresql"),
)

nodes_closure = Table(
    "nodes_closure",
    metadata_obj,
    Column("ancestor", Integer, _cascade("nodes.id"), primary_key=True),
    Column("descendant", Integer, _cascade("nodes.id"), primary_key=True),
    Column("depth", Integer, nullable=False),
    Index("idx_nodes_closure_descendant", "descendant"),
    Index("idx_nodes_closure_ancestor", "ancestor"),
)

structures = Table(
    "structures",
    metadata_obj,
    Column("id", Unicode(32), primary_key=True),
    Column("structure", JSONVariant, nullable=False),
)

data_sources = Table(
    "data_sources",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", Integer, _cascade("nodes.id"), nullable=False),
    Column("structure_id", Unicode(32), _cascade("structures.id"), nullable=True),
    Column("mimetype", Unicode(255), nullable=False),
    Column("parameters", JSONVariant, nullable=True),
    Column("properties", JSONVariant, nullable=True),
    Column("management", management_type, nullable=False),
    Column("structure_family", structure_family_type, nullable=False),
    *_timestamps(),
    Index("idx_data_sources_id_node", "id", "node_id"),
    Index("ix_data_sources_node_id", "node_id"),
)

assets = Table(
    "assets",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("data_uri", Unicode(1023)),
    Column("is_directory", Boolean, nullable=False),
    Column("hash_type", Unicode(63), nullable=True),
    Column("hash_content", Unicode(1023), nullable=True),
    Column("size", BigInteger, nullable=True),
    *_timestamps(),
    Index("ix_assets_data_uri", "data_uri", unique=True),
)

data_source_asset_association = Table(
    "data_source_asset_association",
    metadata_obj,
    Column("data_source_id", Integer, _cascade("data_sources.id"), nullable=False),
    Column("asset_id", Integer, _cascade("assets.id"), nullable=False),
    Column("parameter", Unicode(255), nullable=True),
    Column("num", Integer, nullable=True),
    PrimaryKeyConstraint("data_source_id", "asset_id", name="data_source_asset_association_pkey"),
    UniqueConstraint("data_source_id", "parameter", "num", name="parameter_num_unique_constraint"),
    Index("ix_data_source_asset_association_asset_id", "asset_id"),
)

revisions = Table(
    "revisions",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", Integer, _cascade("nodes.id"), nullable=False),
    Column("revision_number", Integer, nullable=False),
    Column("metadata", JSONVariant, nullable=False),
    Column("specs", JSONVariant, nullable=False),
    *_timestamps(),
    UniqueConstraint(
        "node_id", "revision_number", name="node_id_revision_number_unique_constraint"
    ),
)

# --- access tags ---------------------------------------------------------------------------------

access_tags = Table(
    "access_tags",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Unicode(255), nullable=False, unique=True),
    Column("is_public", Boolean, nullable=False, server_default=text("false")),
    *_timestamps(),
    Index("ix_access_tags_is_public", "name", postgresql_where=text("is_public"),
          sqlite_where=text("is_public")),
)  # fmt: skip

access_tags_principals = Table(
    "access_tags_principals",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Unicode(255), nullable=False, unique=True),
    *_timestamps(),
)

node_access_tags_association = Table(
    "node_access_tags_association",
    metadata_obj,
    Column("node_id", Integer, nullable=False),
    Column("tag_id", Integer, nullable=False),
    Column("parent_id", Integer, nullable=True),
    PrimaryKeyConstraint("node_id", "tag_id", name="node_access_tags_association_pkey"),
    ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE",
                         name="fk_node_access_tags_association_node"),
    ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                         name="fk_node_access_tags_association_tag"),
    Index("ix_node_access_tags_association_parent_id_tag_id_node_id",
          "parent_id", "tag_id", "node_id"),
    Index("ix_node_access_tags_association_tag_id_node_id", "tag_id", "node_id"),
)  # fmt: skip

access_grants = Table(
    "access_grants",
    metadata_obj,
    Column("tag_id", Integer, nullable=False),
    Column("principal_id", Integer, nullable=False),
    Column("scope", scope_name_type, nullable=False),
    PrimaryKeyConstraint("tag_id", "principal_id", "scope", name="access_grants_pkey"),
    ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                         name="fk_access_grants_access_tag"),
    ForeignKeyConstraint(["principal_id"], ["access_tags_principals.id"], ondelete="CASCADE",
                         name="fk_access_grants_principal"),
    Index("ix_access_grants_principal_scope", "principal_id", "scope", "tag_id"),
)  # fmt: skip

access_tag_owners_association = Table(
    "access_tag_owners_association",
    metadata_obj,
    Column("tag_id", Integer, nullable=False),
    Column("principal_id", Integer, nullable=False),
    PrimaryKeyConstraint("tag_id", "principal_id", name="access_tag_owners_association_pkey"),
    ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                         name="fk_access_tag_owners_association_access_tag"),
    ForeignKeyConstraint(["principal_id"], ["access_tags_principals.id"], ondelete="CASCADE",
                         name="fk_access_tag_owners_association_principal"),
    Index("ix_access_tag_owners_association_principal_id", "principal_id"),
)  # fmt: skip

# --- webhooks ------------------------------------------------------------------------------------

webhooks = Table(
    "webhooks",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", Integer, _cascade("nodes.id"), nullable=False),
    Column("url", Unicode(2048), nullable=False),
    Column("secret", Unicode(512), nullable=True),
    Column("events", JSONVariant, nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    *_timestamps(),
    Index("ix_webhooks_node_id", "node_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, _cascade("webhooks.id"), nullable=False),
    Column("event_id", Unicode(128), nullable=False),
    Column("event_type", Unicode(128), nullable=False),
    Column("payload", JSONVariant, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("delivered_at", DateTime(timezone=False), nullable=True),
    Column("outcome", Unicode(16), nullable=False, server_default=text("'pending'")),
    Column("error_detail", Unicode(4096), nullable=True),
    *_timestamps(),
    Index("ix_webhook_deliveries_event_id", "event_id"),
    Index("ix_webhook_deliveries_webhook_id", "webhook_id"),
)

# --- graph of entities and links -----------------------------------------------------------------

namespaces = Table(
    "namespaces",
    metadata_obj,
    Column("prefix", String, primary_key=True),
    Column("uri", String, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

entities = Table(
    "entities",
    metadata_obj,
    Column("id", String, primary_key=True),
    Column("node_id", Integer, _cascade("nodes.id"), nullable=True),
    Column("entity_type", String, nullable=False),
    Column("name", String, nullable=False),
    Column("uri", String, nullable=True),
    Column("properties", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("entities_type_created_idx", "entity_type", "created_at"),
    Index("entities_node_id_idx", "node_id"),
    Index("entities_uri_idx", "uri"),
)

links = Table(
    "links",
    metadata_obj,
    Column("id", String, primary_key=True),
    Column("subject_id", String, _cascade("entities.id"), nullable=False),
    Column("predicate", String, nullable=False),
    Column("object_id", String, _cascade("entities.id"), nullable=False),
    Column("properties", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("links_predicate_object_idx", "predicate", "object_id"),
    Index("links_subject_predicate_idx", "subject_id", "predicate"),
    Index("links_triple_idx", "subject_id", "predicate", "object_id"),
)

entity_access_tags_association = Table(
    "entity_access_tags_association",
    metadata_obj,
    Column("entity_id", String, primary_key=True),
    Column("tag_id", Integer, primary_key=True),
    ForeignKeyConstraint(["entity_id"], ["entities.id"], ondelete="CASCADE",
                         name="fk_entity_access_tags_association_entity"),
    ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                         name="fk_entity_access_tags_association_tag"),
    Index("ix_entity_access_tags_association_tag_id_entity_id", "tag_id", "entity_id"),
)  # fmt: skip

link_access_tags_association = Table(
    "link_access_tags_association",
    metadata_obj,
    Column("link_id", String, primary_key=True),
    Column("tag_id", Integer, primary_key=True),
    ForeignKeyConstraint(["link_id"], ["links.id"], ondelete="CASCADE",
                         name="fk_link_access_tags_association_link"),
    ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                         name="fk_link_access_tags_association_tag"),
    Index("ix_link_access_tags_association_tag_id_link_id", "tag_id", "link_id"),
)  # fmt: skip

# The tables whose presence tells that a database holds a catalog.
TABLE_NAMES = ("nodes", "nodes_closure", "structures", "data_sources", "assets",
               "data_source_asset_association", "revisions")  # fmt: skip

# Upstream's ORM class of each table, for scripts written against it (``select(orm.Node.id)``,
# ``insert(orm.AccessTag.__table__)``): columns only, no relationships, mapped on first use,
# since sqlalchemy.orm is a heavy import that this server does not need.
ORM_CLASS_TABLES = {
    "Node": "nodes", "NodesClosure": "nodes_closure", "Structure": "structures",
    "DataSource": "data_sources", "Asset": "assets",
    "DataSourceAssetAssociation": "data_source_asset_association", "Revision": "revisions",
    "AccessTag": "access_tags", "AccessTagsPrincipal": "access_tags_principals",
    "NodeAccessTagAssociation": "node_access_tags_association",
    "AccessGrant": "access_grants", "AccessTagOwnerAssociation": "access_tag_owners_association",
    "Webhook": "webhooks", "WebhookDelivery": "webhook_deliveries",
}  # fmt: skip


@functools.cache
def _orm_classes() -> dict[str, type]:
    from sqlalchemy.orm import registry

    mappings = registry()
    classes = {}
    for name, table_name in ORM_CLASS_TABLES.items():
        table = metadata_obj.tables[table_name]
        doc = f"Rows of ``{table_name}`` (upstream's ORM class, columns only)."
        cls = type(name, (), {"__module__": __name__, "__doc__": doc})
        # Upstream names the "metadata" column metadata_ (declarative classes reserve it).
        properties = {"metadata_": table.c.metadata} if "metadata" in table.c else {}
        mappings.map_imperatively(cls, table, properties=properties)
        classes[name] = cls
    return classes


def __getattr__(name: str) -> Any:
    if name in ORM_CLASS_TABLES:
        return _orm_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

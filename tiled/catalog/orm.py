"""The catalog's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

A node is addressed by its parent's path (one string, ``"a/b"``; ``""`` for children of the
root) and its key, so a node at any depth is found by one indexed query
``WHERE parent = :p AND key = :k``. The root itself has no row: its metadata is configuration.

JSON columns are SQLite's JSON1 text and PostgreSQL's JSONB (which the query translation relies
on for ``#>``, ``@>`` and GIN-indexable containment).

The migration ``versions/0001_initial.py`` creates exactly these tables; a change here needs a
new migration beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

# Named constraints, so that migrations can refer to them on both back ends.
metadata_obj = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSONVariant = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


nodes = Table(
    "nodes",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent", Unicode(4095), nullable=False),
    Column("key", Unicode(1023), nullable=False),
    Column("structure_family", Unicode(31), nullable=False),
    Column("metadata", JSONVariant, nullable=False),
    Column("specs", JSONVariant, nullable=False),
    Column("access_blob", JSONVariant, nullable=True),
    Column("time_created", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("time_updated", DateTime(timezone=True), nullable=False, default=utcnow),
    # The unique index on (parent, key) also serves listings (WHERE parent = :p).
    UniqueConstraint("parent", "key", name="uq_nodes_parent_key"),
    # Listings in insertion order read this index in order instead of sorting all children.
    Index("ix_nodes_parent_id", "parent", "id"),
)

data_sources = Table(
    "data_sources",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "node_id",
        Integer,
        ForeignKey("nodes.id", ondelete="CASCADE", name="fk_data_sources_node_id_nodes"),
        nullable=False,
    ),
    Column("structure_family", Unicode(31), nullable=False),
    Column("structure", JSONVariant, nullable=True),
    Column("mimetype", Unicode(255), nullable=False),
    Column("parameters", JSONVariant, nullable=False),
    Column("properties", JSONVariant, nullable=False),
    Column("management", Unicode(31), nullable=False),
    Index("ix_data_sources_node_id", "node_id"),
)

assets = Table(
    "assets",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("data_uri", Unicode(4095), nullable=False),
    Column("is_directory", Boolean, nullable=False),
    Column("size", Integer, nullable=True),
    UniqueConstraint("data_uri", name="uq_assets_data_uri"),
)

data_source_asset_association = Table(
    "data_source_asset_association",
    metadata_obj,
    Column(
        "data_source_id",
        Integer,
        ForeignKey(
            "data_sources.id", ondelete="CASCADE", name="fk_dsaa_data_source_id_data_sources"
        ),
        primary_key=True,
    ),
    Column(
        "asset_id",
        Integer,
        ForeignKey("assets.id", ondelete="CASCADE", name="fk_dsaa_asset_id_assets"),
        primary_key=True,
    ),
    Column("parameter", Unicode(255), nullable=True),
    Column("num", Integer, nullable=True),
    Index("ix_dsaa_asset_id", "asset_id"),
)

revisions = Table(
    "revisions",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "node_id",
        Integer,
        ForeignKey("nodes.id", ondelete="CASCADE", name="fk_revisions_node_id_nodes"),
        nullable=False,
    ),
    Column("revision_number", Integer, nullable=False),
    Column("metadata", JSONVariant, nullable=False),
    Column("specs", JSONVariant, nullable=False),
    Column("access_blob", JSONVariant, nullable=True),
    Column("time_updated", DateTime(timezone=True), nullable=False),
    UniqueConstraint("node_id", "revision_number", name="uq_revisions_node_id_revision_number"),
)

TABLE_NAMES = ("nodes", "data_sources", "assets", "data_source_asset_association", "revisions")

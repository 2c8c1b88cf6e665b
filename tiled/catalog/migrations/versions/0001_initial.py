"""The catalog's first schema: nodes, data sources, assets and revisions.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

# Written out here rather than imported from tiled.catalog.orm: a migration must keep creating
# the schema of its own revision after the ORM moves on.
JSONVariant = sa.JSON().with_variant(JSONB(), "postgresql")


def _node_fk(table: str) -> sa.Column:
    return sa.Column(
        "node_id",
        sa.Integer,
        sa.ForeignKey("nodes.id", ondelete="CASCADE", name=f"fk_{table}_node_id_nodes"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("parent", sa.Unicode(4095), nullable=False),
        sa.Column("key", sa.Unicode(1023), nullable=False),
        sa.Column("structure_family", sa.Unicode(31), nullable=False),
        sa.Column("metadata", JSONVariant, nullable=False),
        sa.Column("specs", JSONVariant, nullable=False),
        sa.Column("access_blob", JSONVariant, nullable=True),
        sa.Column("time_created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("parent", "key", name="uq_nodes_parent_key"),
    )
    op.create_index("ix_nodes_parent_id", "nodes", ["parent", "id"])
    op.create_table(
        "data_sources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _node_fk("data_sources"),
        sa.Column("structure_family", sa.Unicode(31), nullable=False),
        sa.Column("structure", JSONVariant, nullable=True),
        sa.Column("mimetype", sa.Unicode(255), nullable=False),
        sa.Column("parameters", JSONVariant, nullable=False),
        sa.Column("properties", JSONVariant, nullable=False),
        sa.Column("management", sa.Unicode(31), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_sources"),
    )
    op.create_index("ix_data_sources_node_id", "data_sources", ["node_id"])
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("data_uri", sa.Unicode(4095), nullable=False),
        sa.Column("is_directory", sa.Boolean, nullable=False),
        sa.Column("size", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
        sa.UniqueConstraint("data_uri", name="uq_assets_data_uri"),
    )
    op.create_table(
        "data_source_asset_association",
        sa.Column(
            "data_source_id",
            sa.Integer,
            sa.ForeignKey(
                "data_sources.id", ondelete="CASCADE", name="fk_dsaa_data_source_id_data_sources"
            ),
        ),
        sa.Column(
            "asset_id",
            sa.Integer,
            sa.ForeignKey("assets.id", ondelete="CASCADE", name="fk_dsaa_asset_id_assets"),
        ),
        sa.Column("parameter", sa.Unicode(255), nullable=True),
        sa.Column("num", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint(
            "data_source_id", "asset_id", name="pk_data_source_asset_association"
        ),
    )
    op.create_index("ix_dsaa_asset_id", "data_source_asset_association", ["asset_id"])
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _node_fk("revisions"),
        sa.Column("revision_number", sa.Integer, nullable=False),
        sa.Column("metadata", JSONVariant, nullable=False),
        sa.Column("specs", JSONVariant, nullable=False),
        sa.Column("access_blob", JSONVariant, nullable=True),
        sa.Column("time_updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_revisions"),
        sa.UniqueConstraint(
            "node_id", "revision_number", name="uq_revisions_node_id_revision_number"
        ),
    )


def downgrade() -> None:
    for table in ("revisions", "data_source_asset_association", "assets", "data_sources", "nodes"):
        op.drop_table(table)

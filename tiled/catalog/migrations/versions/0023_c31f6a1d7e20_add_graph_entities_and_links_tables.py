"""Add the graph tables: entities, links, namespaces (upstream revision c31f6a1d7e20).

- ``entities``: id (text), node_id (nullable, cascading from nodes), entity_type, name, uri,
  properties JSON, access_blob JSON (nullable), created_at; indexed by node_id, by
  (entity_type, created_at) and by uri;
- ``links``: id, subject_id and object_id (both cascading from entities), predicate,
  properties JSON, access_blob JSON, created_at; indexed by (subject_id, predicate),
  (predicate, object_id) and (subject_id, predicate, object_id);
- ``namespaces``: prefix, uri, created_at;
- an entity that points at a node takes that node's access control, so a trigger refuses an
  entity row with both node_id and access_blob (SQLite: ``entities_node_access_blob_insert``
  and ``_update``; PostgreSQL: ``entities_node_access_blob_check`` calling
  ``entities_reject_node_access_blob()``).

Upstream's script lets ``entities.node_id`` become NULL when its node is deleted; its models
(and so a database made by a release) cascade the deletion, as here. Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import (
    create_index,
    is_postgresql,
    plpgsql_function,
    run,
    table_names,
)

revision = "c31f6a1d7e20"
down_revision = "9bc9b57294b9"
branch_labels = None
depends_on = None

REFUSAL = (
    "An entity with node_id set must not have its own access_blob; "
    "access is controlled by the referenced node."
)
WHEN = "NEW.node_id IS NOT NULL AND NEW.access_blob IS NOT NULL"


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _entity_key(name: str) -> sa.Column:
    return sa.Column(
        name, sa.String, sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False
    )


def _create_entities() -> None:
    op.create_table(
        "entities",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE")),
        sa.Column("entity_type", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("uri", sa.String, nullable=True),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("access_blob", sa.JSON(none_as_null=True), nullable=True),
        _created_at(),
    )
    if is_postgresql():
        run(
            plpgsql_function("entities_reject_node_access_blob", f"RAISE EXCEPTION '{REFUSAL}';"),
            "CREATE TRIGGER entities_node_access_blob_check BEFORE INSERT OR UPDATE ON entities "
            f"FOR EACH ROW WHEN ({WHEN}) EXECUTE FUNCTION entities_reject_node_access_blob()",
        )
    else:
        run(*(
            f"CREATE TRIGGER entities_node_access_blob_{event.lower()} BEFORE {event} ON entities "
            f"WHEN ({WHEN}) BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            for event in ("INSERT", "UPDATE")
        ))  # fmt: skip


def upgrade() -> None:
    existing = table_names()
    if "entities" not in existing:
        _create_entities()
    if "links" not in existing:
        op.create_table(
            "links",
            sa.Column("id", sa.String, primary_key=True),
            _entity_key("subject_id"),
            sa.Column("predicate", sa.String, nullable=False),
            _entity_key("object_id"),
            sa.Column("properties", sa.JSON, nullable=False),
            sa.Column("access_blob", sa.JSON, nullable=False),
            _created_at(),
        )
    if "namespaces" not in existing:
        op.create_table(
            "namespaces",
            sa.Column("prefix", sa.String, primary_key=True),
            sa.Column("uri", sa.String, nullable=False),
            _created_at(),
        )
    create_index("entities_node_id_idx", "entities", ["node_id"])
    create_index("entities_type_created_idx", "entities", ["entity_type", "created_at"])
    create_index("entities_uri_idx", "entities", ["uri"])
    create_index("links_subject_predicate_idx", "links", ["subject_id", "predicate"])
    create_index("links_predicate_object_idx", "links", ["predicate", "object_id"])
    create_index("links_triple_idx", "links", ["subject_id", "predicate", "object_id"])


def downgrade() -> None:
    refuse_downgrade(revision)

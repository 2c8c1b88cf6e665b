"""Access blobs become access tags (upstream revision 3bc110ce44e9).

- ``access_tags``: one row per distinct tag name (id, name unique, is_public default false,
  timestamps), with ``ix_access_tags_is_public`` over the names of public tags;
- ``node_access_tags_association``, ``entity_access_tags_association``,
  ``link_access_tags_association``: which owner carries which tag (primary key owner and tag,
  both cascading; indexed by tag then owner);
- ``access_tags_principals``, ``access_tag_principal_scopes_association`` (tag, principal,
  scope of enum ``scope_name``) and ``access_tag_owners_association`` are created empty:
  upstream's access-tag compiler fills them;
- every tag of a 'tags' blob becomes a tag of its owner, and a 'user' blob becomes the tag
  ``user:<username>`` (service principals were stored as users, so they become
  ``user:<uuid>``); the tag named ``public`` is the one public tag; an owner whose blob had no
  tags gets none (the root node's blob already says ``public``, see the previous revision);
- the blob tables, their triggers, functions and the enum ``access_kind`` are dropped;
- triggers keep an entity backed by a node free of tags of its own
  (``entities_node_access_tags_*``, ``entity_access_tags_association_*``).

Upstream declares the scope column with a CHECK constraint on SQLite; this follows this
package's models, which do not. Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import (
    analyze,
    create_index,
    drop_triggers,
    is_postgresql,
    plpgsql_function,
    run,
)

revision = "3bc110ce44e9"
down_revision = "de302a096358"
branch_labels = None
depends_on = None

SCOPES = (
    "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
    "delete:node", "create:node", "register", "metrics", "create:apikeys", "revoke:apikeys",
    "admin:apikeys", "read:principals", "write:principals", "read:webhooks", "write:webhooks",
)  # fmt: skip

# (owner, owner column, owner id type, tag association table, blob association table)
OWNERS = (
    ("nodes", "node_id", sa.Integer, "node_access_tags_association", "node_access_blobs"),
    ("entities", "entity_id", sa.String, "entity_access_tags_association", "entity_access_blobs"),
    ("links", "link_id", sa.String, "link_access_tags_association", "link_access_blobs"),
)
NODE_BACKED = (
    "An entity with node_id set must not have its own access tags; "
    "access is controlled by the referenced node."
)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(name, sa.DateTime(timezone=False), server_default=sa.func.now())
        for name in ("time_created", "time_updated")
    ]


def _key(column: str, column_type, target: str, name: str) -> sa.Column:
    return sa.Column(
        column, column_type, sa.ForeignKey(target, name=name, ondelete="CASCADE"), nullable=False
    )


def _create_tag_tables() -> None:
    op.create_table(
        "access_tags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Unicode(255), nullable=False, unique=True),
        sa.Column("is_public", sa.Boolean, nullable=False, server_default=sa.text("false")),
        *_timestamps(),
    )
    op.create_index(
        "ix_access_tags_is_public", "access_tags", ["name"],
        postgresql_where=sa.text("is_public"), sqlite_where=sa.text("is_public"),
    )  # fmt: skip
    for owner, column, column_type, table, _ in OWNERS:
        singular = table.split("_access_tags_association")[0]
        # Only the nodes' table names its primary key, as upstream's models do.
        key_name = f"{table}_pkey" if owner == "nodes" else None
        op.create_table(
            table,
            _key(column, column_type, f"{owner}.id", f"fk_{table}_{singular}"),
            _key("tag_id", sa.Integer, "access_tags.id", f"fk_{table}_tag"),
            sa.PrimaryKeyConstraint(column, "tag_id", name=key_name),
        )
    op.create_table(
        "access_tags_principals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Unicode(255), nullable=False, unique=True),
        *_timestamps(),
    )
    for table, extra in (
        ("access_tag_principal_scopes_association",
         [sa.Column("scope", sa.Enum(*SCOPES, name="scope_name"), nullable=False)]),
        ("access_tag_owners_association", []),
    ):  # fmt: skip
        op.create_table(
            table,
            _key("tag_id", sa.Integer, "access_tags.id", f"fk_{table}_access_tag"),
            _key("principal_id", sa.Integer, "access_tags_principals.id", f"fk_{table}_principal"),
            *extra,
            sa.PrimaryKeyConstraint(
                "tag_id", "principal_id", *(column.name for column in extra), name=f"{table}_pkey"
            ),
        )
    op.create_index(
        "ix_access_tag_principal_scopes_association_principal_scope",
        "access_tag_principal_scopes_association",
        ["principal_id", "scope", "tag_id"],
    )
    op.create_index(
        "ix_access_tag_owners_association_principal_id",
        "access_tag_owners_association",
        ["principal_id"],
    )


def _tag_names_of_blobs() -> str:
    """SQL: (blob_id, name) for every tag a blob turns into."""
    if is_postgresql():
        listed = "SELECT id AS blob_id, unnest(tags) AS name FROM access_blobs WHERE kind = 'tags'"
    else:
        listed = (
            "SELECT blob.id AS blob_id, CAST(item.value AS TEXT) AS name "
            "FROM access_blobs AS blob, json_each(blob.tags) AS item WHERE blob.kind = 'tags'"
        )
    return (
        f"{listed} UNION ALL "
        "SELECT id AS blob_id, 'user:' || username AS name FROM access_blobs WHERE kind = 'user'"
    )


def _copy_tags() -> None:
    # The (blob, tag name) pairs are listed once, in a temporary table, and joined from there.
    statements = [
        f"CREATE TEMP TABLE blob_tag_names AS {_tag_names_of_blobs()}",
        "CREATE INDEX blob_tag_names_by_blob ON blob_tag_names (blob_id)",
        "INSERT INTO access_tags (name, is_public) "
        "SELECT DISTINCT name, name = 'public' FROM blob_tag_names "
        "WHERE name IS NOT NULL ORDER BY name",
    ]
    for _, column, _, table, blob_table in OWNERS:
        statements.append(
            f"INSERT INTO {table} ({column}, tag_id) "
            f"SELECT DISTINCT owned.{column}, tag.id FROM {blob_table} AS owned "
            "JOIN blob_tag_names AS named ON named.blob_id = owned.access_blob_id "
            "JOIN access_tags AS tag ON tag.name = named.name"
        )
    run(*statements, "DROP TABLE blob_tag_names")


def _drop_blobs() -> None:
    """Drop the blob tables (their own triggers go with them), then the rest of that era."""
    drop_triggers(
        [(f"entities_node_access_blob_{name}", "entities") for name in ("update", "check")]
    )
    blob_tables = [blob_table for *_, blob_table in OWNERS]
    for table in [*blob_tables, "access_blobs"]:
        op.drop_table(table)
    if is_postgresql():
        owners = [table.removesuffix("_access_blobs") for table in blob_tables]
        drop_triggers([], functions=[
            *(f"delete_{owner}_access_blob" for owner in owners),
            "reject_shared_access_blob", "entities_reject_node_access_blob",
            "entity_access_blob_reject_node_backed_entity",
        ])  # fmt: skip
        run("DROP TYPE IF EXISTS access_kind")


def _create_entity_triggers() -> None:
    if is_postgresql():
        refusal = f"RAISE EXCEPTION '{NODE_BACKED}' USING ERRCODE = '23514';"
        run(
            plpgsql_function(
                "entities_reject_node_access_tags",
                "IF EXISTS (SELECT 1 FROM entity_access_tags_association "
                f"WHERE entity_id = NEW.id) THEN {refusal} END IF;\nRETURN NEW;",
            ),
            "CREATE TRIGGER entities_node_access_tags_check BEFORE UPDATE OF node_id ON entities "
            "FOR EACH ROW WHEN (NEW.node_id IS NOT NULL) "
            "EXECUTE FUNCTION entities_reject_node_access_tags()",
            plpgsql_function(
                "entity_access_tags_association_reject_node_backed_entity",
                "IF EXISTS (SELECT 1 FROM entities WHERE id = NEW.entity_id "
                f"AND node_id IS NOT NULL) THEN {refusal} END IF;\nRETURN NEW;",
            ),
            "CREATE TRIGGER entity_access_tags_association_reject_node_backed_entity BEFORE INSERT "
            "OR UPDATE OF entity_id ON entity_access_tags_association FOR EACH ROW "
            "EXECUTE FUNCTION entity_access_tags_association_reject_node_backed_entity()",
        )
        return
    refusal = f"BEGIN SELECT RAISE(ABORT, '{NODE_BACKED}'); END"
    run(
        "CREATE TRIGGER entities_node_access_tags_update BEFORE UPDATE OF node_id ON entities "
        "WHEN (NEW.node_id IS NOT NULL AND EXISTS (SELECT 1 FROM entity_access_tags_association "
        f"WHERE entity_id = NEW.id)) {refusal}",
        *(
            f"CREATE TRIGGER entity_access_tags_association_{name}_reject_node_backed_entity "
            f"BEFORE {event} ON entity_access_tags_association WHEN EXISTS (SELECT 1 FROM "
            f"entities WHERE id = NEW.entity_id AND node_id IS NOT NULL) {refusal}"
            for name, event in (("insert", "INSERT"), ("update", "UPDATE OF entity_id"))
        ),
    )


def upgrade() -> None:
    _create_tag_tables()
    _copy_tags()
    for _, column, _, table, _ in OWNERS:
        create_index(f"ix_{table}_tag_id_{column}", table, ["tag_id", column])
    _drop_blobs()
    _create_entity_triggers()
    analyze("access_tags", *(table for *_, table, _ in OWNERS))


def downgrade() -> None:
    refuse_downgrade(revision)

"""Optimize node deletion (upstream revision a86a48befff6).

Deleting a node leans on ``ON DELETE CASCADE`` alone:

- the trigger ``update_closure_table_when_deleting`` (and its PostgreSQL function) goes,
  where an older database still has it;
- ``nodes.parent`` and both keys of ``nodes_closure`` cascade: on PostgreSQL a foreign key
  that does not is recreated (as ``fk_nodes_parent``, ``nodes_closure_ancestor_fkey``,
  ``nodes_closure_descendant_fkey``); on SQLite ``nodes_closure`` is rebuilt when its keys do
  not cascade (a ``nodes.parent`` key without cascade, left by upgrades from before 0.2, is
  kept: SQLite cannot change it without rebuilding ``nodes`` and everything that cascades
  from it);
- ``nodes_closure`` loses ``ancestor_descendant_unique_constraint``, a copy of its primary
  key (SQLite: by the same rebuild). On PostgreSQL a release's models made the primary key
  itself under that name; it is renamed ``nodes_closure_pkey`` and kept (upstream's script
  drops it, leaving the table without a primary key);
- the indexes over primary keys (``ix_nodes_id``, ``ix_data_sources_id``, ``ix_assets_id``,
  ``ix_revisions_id``) are dropped; ``ix_data_source_asset_association_asset_id`` (asset_id)
  and ``idx_data_sources_id_node`` (id, node_id) are created.

Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import (
    connection,
    create_index,
    drop_indexes,
    drop_triggers,
    is_postgresql,
    run,
    scalar,
    sqlite_rebuild,
)

revision = "a86a48befff6"
down_revision = "dfbb7478c6bd"
branch_labels = None
depends_on = None

# (table, column, name of the cascading key); every one of them references nodes.id.
CASCADING_KEYS = (
    ("nodes", "parent", "fk_nodes_parent"),
    ("nodes_closure", "ancestor", "nodes_closure_ancestor_fkey"),
    ("nodes_closure", "descendant", "nodes_closure_descendant_fkey"),
)

FOREIGN_KEYS_OF_COLUMN = """
SELECT c.conname, CAST(c.confdeltype AS text)
FROM pg_constraint AS c
JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
WHERE c.contype = 'f' AND c.conrelid = CAST(:table AS regclass) AND a.attname = :column
"""


def _cascade_on_postgresql(table: str, column: str, name: str) -> None:
    keys = connection().execute(sa.text(FOREIGN_KEYS_OF_COLUMN), {"table": table, "column": column})
    keys = keys.all()
    if keys and all(action == "c" for _, action in keys):
        return
    for existing, _ in keys:
        run(f'ALTER TABLE {table} DROP CONSTRAINT "{existing}"')
    run(
        f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) "
        "REFERENCES nodes (id) ON DELETE CASCADE"
    )


def _drop_closure_unique_constraint_on_postgresql() -> None:
    # Where the models declared the unique constraint beside the identical primary key,
    # PostgreSQL made one constraint of the two, the primary key, under the unique
    # constraint's name: that one is renamed, not dropped.
    kind = scalar(
        "SELECT CAST(contype AS text) FROM pg_constraint WHERE conrelid = CAST('nodes_closure' AS regclass) "
        "AND conname = 'ancestor_descendant_unique_constraint'"
    )
    if kind == "p":
        run(
            "ALTER TABLE nodes_closure RENAME CONSTRAINT ancestor_descendant_unique_constraint "
            "TO nodes_closure_pkey"
        )
    elif kind is not None:
        run("ALTER TABLE nodes_closure DROP CONSTRAINT ancestor_descendant_unique_constraint")


def _create_closure_table() -> None:
    def key(name: str) -> sa.Column:
        return sa.Column(
            name, sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
        )

    op.create_table(
        "nodes_closure",
        key("ancestor"),
        key("descendant"),
        sa.Column("depth", sa.Integer, nullable=False),
    )
    op.create_index("idx_nodes_closure_descendant", "nodes_closure", ["descendant"])
    op.create_index("idx_nodes_closure_ancestor", "nodes_closure", ["ancestor"])


def _closure_table_is_current_on_sqlite() -> bool:
    inspector = sa.inspect(connection())
    cascading = all(
        (key["options"].get("ondelete") or "").upper() == "CASCADE"
        for key in inspector.get_foreign_keys("nodes_closure")
    )
    return cascading and not inspector.get_unique_constraints("nodes_closure")


def upgrade() -> None:
    drop_triggers(
        [("update_closure_table_when_deleting", "nodes")],
        functions=["update_closure_table_when_deleting"],
    )
    if is_postgresql():
        for table, column, name in CASCADING_KEYS:
            _cascade_on_postgresql(table, column, name)
        _drop_closure_unique_constraint_on_postgresql()
    elif not _closure_table_is_current_on_sqlite():
        sqlite_rebuild("nodes_closure", _create_closure_table)
    drop_indexes("ix_nodes_id", "ix_data_sources_id", "ix_assets_id", "ix_revisions_id")
    create_index(
        "ix_data_source_asset_association_asset_id", "data_source_asset_association", ["asset_id"]
    )
    create_index("idx_data_sources_id_node", "data_sources", ["id", "node_id"])


def downgrade() -> None:
    refuse_downgrade(revision)

"""Copy each node's parent into its tag associations (upstream revision 0d4e1f2a3b4c).

``node_access_tags_association.parent_id`` (nullable integer) holds the parent of the node, so
listing a container's children that carry given tags reads one index,
``ix_node_access_tags_association_parent_id_tag_id_node_id`` (parent_id, tag_id, node_id).
Existing rows are filled in; triggers keep the copy right when an association is inserted or
its node changes (SQLite: ``node_access_tags_set_parent_after_insert`` / ``_after_update``;
PostgreSQL: ``node_access_tags_set_parent``) and when a node moves
(``node_access_tags_sync_parent_after_node_update``).

Upstream also creates extended planner statistics on PostgreSQL and vacuums the table; this
schema has neither (a fresh database has no statistics object, and VACUUM cannot run inside
the migration's transaction), so the table is only analyzed. Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import (
    analyze,
    column_names,
    create_index,
    is_postgresql,
    plpgsql_function,
    run,
)

revision = "0d4e1f2a3b4c"
down_revision = "3bc110ce44e9"
branch_labels = None
depends_on = None

TABLE = "node_access_tags_association"
SET_PARENT = (
    f"UPDATE {TABLE} SET parent_id = (SELECT parent FROM nodes WHERE id = NEW.node_id) "
    "WHERE node_id = NEW.node_id AND tag_id = NEW.tag_id;"
)
FOLLOW_MOVE = f"UPDATE {TABLE} SET parent_id = NEW.parent WHERE node_id = NEW.id;"


def _create_triggers() -> None:
    if is_postgresql():
        run(
            plpgsql_function(
                "node_access_tags_set_parent",
                "SELECT parent INTO NEW.parent_id FROM nodes WHERE id = NEW.node_id;\nRETURN NEW;",
            ),
            f"CREATE TRIGGER node_access_tags_set_parent BEFORE INSERT OR UPDATE OF node_id ON "
            f"{TABLE} FOR EACH ROW EXECUTE FUNCTION node_access_tags_set_parent()",
            plpgsql_function(
                "node_access_tags_sync_parent_after_node_update", f"{FOLLOW_MOVE}\nRETURN NEW;"
            ),
            "CREATE TRIGGER node_access_tags_sync_parent_after_node_update AFTER UPDATE OF parent "
            "ON nodes FOR EACH ROW WHEN (NEW.parent IS DISTINCT FROM OLD.parent) "
            "EXECUTE FUNCTION node_access_tags_sync_parent_after_node_update()",
        )
        return
    run(
        f"CREATE TRIGGER node_access_tags_set_parent_after_insert AFTER INSERT ON {TABLE} "
        f"BEGIN {SET_PARENT} END",
        f"CREATE TRIGGER node_access_tags_set_parent_after_update AFTER UPDATE OF node_id ON "
        f"{TABLE} BEGIN {SET_PARENT} END",
        "CREATE TRIGGER node_access_tags_sync_parent_after_node_update AFTER UPDATE OF parent "
        f"ON nodes WHEN NEW.parent IS NOT OLD.parent BEGIN {FOLLOW_MOVE} END",
    )


def upgrade() -> None:
    if "parent_id" in column_names(TABLE):
        return
    op.add_column(TABLE, sa.Column("parent_id", sa.Integer, nullable=True))
    if is_postgresql():
        run(
            f"UPDATE {TABLE} AS tagged SET parent_id = node.parent FROM nodes AS node "
            "WHERE node.id = tagged.node_id"
        )
    else:
        run(
            f"UPDATE {TABLE} SET parent_id = "
            f"(SELECT parent FROM nodes WHERE nodes.id = {TABLE}.node_id)"
        )
    _create_triggers()
    create_index(f"ix_{TABLE}_parent_id_tag_id_node_id", TABLE, ["parent_id", "tag_id", "node_id"])
    analyze(TABLE)


def downgrade() -> None:
    refuse_downgrade(revision)

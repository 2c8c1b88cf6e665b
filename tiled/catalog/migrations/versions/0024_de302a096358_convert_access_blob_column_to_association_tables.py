"""Access blobs move from JSON columns to tables (upstream revision de302a096358).

A passing state: the next revision turns these blobs into access tags.

- ``access_blobs``: id, kind (enum ``access_kind``: 'user' or 'tags'), username, tags (JSON on
  SQLite, VARCHAR[] on PostgreSQL); the check ``ck_access_blob_user_xor_tags`` allows exactly
  one of username and tags; indexes ``ix_access_blobs_username_user`` (usernames of 'user'
  blobs), ``ix_access_blobs_kind_id`` and, on PostgreSQL, ``ix_access_blobs_tags_gin``;
- ``node_access_blobs``, ``entity_access_blobs``, ``link_access_blobs``: the owner's id (the
  primary key, cascading from the owner) and its blob's id (unique, cascading from the blob);
- every node and link, and every entity that has a blob of its own, gets one blob: a JSON
  blob with a "user" becomes a 'user' blob of that name; any other becomes a 'tags' blob of
  its "tags" list (empty when there is none), except that the root node (id 0) with no user
  and no tags gets ["public"];
- dropped: the columns ``access_blob`` of nodes, revisions (the blob history of revisions is
  not kept), entities and links, the index ``top_level_metadata`` that covered the nodes'
  one, and the JSON-era entity triggers;
- triggers: a blob belongs to one owner (``*_reject_shared_access_blob``); deleting an
  owner's row deletes its blob (``*_delete_cleanup``); an entity backed by a node has no
  blob of its own (``entity_access_blobs_*_reject_node_backed_entity``,
  ``entities_node_access_blob_update`` / ``_check``).

Node blobs take the node's id as their own id; link and entity blobs are numbered after them.
Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import (
    analyze,
    column_names,
    drop_indexes,
    drop_triggers,
    is_postgresql,
    plpgsql_function,
    run,
    scalar,
)

revision = "de302a096358"
down_revision = "c31f6a1d7e20"
branch_labels = None
depends_on = None

# (owner table, its blob table, owner column, owner id type, which owners have a blob)
OWNERS = (
    ("nodes", "node_access_blobs", "node_id", sa.Integer, ""),
    ("links", "link_access_blobs", "link_id", sa.String, ""),
    ("entities", "entity_access_blobs", "entity_id", sa.String, "WHERE access_blob IS NOT NULL"),
)
BLOB_TABLES = [blob_table for _, blob_table, *_ in OWNERS]
SHARED = "An access blob may belong to only one node, entity, or link"
NODE_BACKED = (
    "An entity with node_id set must not have its own access_blob; "
    "access is controlled by the referenced node."
)


def _create_tables() -> None:
    tags = sa.JSON(none_as_null=True).with_variant(ARRAY(sa.String), "postgresql")
    op.create_table(
        "access_blobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Enum("user", "tags", name="access_kind"), nullable=False),
        sa.Column("username", sa.String, nullable=True),
        sa.Column("tags", tags, nullable=True),
        sa.CheckConstraint(
            "(username IS NOT NULL AND tags IS NULL) OR (username IS NULL AND tags IS NOT NULL)",
            name="ck_access_blob_user_xor_tags",
        ),
    )
    for owner, blob_table, owner_column, owner_type, _ in OWNERS:
        op.create_table(
            blob_table,
            sa.Column(
                owner_column, owner_type, sa.ForeignKey(f"{owner}.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column(
                "access_blob_id", sa.Integer, sa.ForeignKey("access_blobs.id", ondelete="CASCADE"),
                nullable=False, unique=True,
            ),
        )  # fmt: skip


def _blob_parts(column: str) -> tuple[str, str, str, str]:
    """SQL for (username, tags list, empty-list test, the root's list) of a JSON blob column."""
    if is_postgresql():
        blob = f"COALESCE(CAST({column} AS jsonb), CAST('{{}}' AS jsonb))"
        tags = (
            f"CASE WHEN jsonb_typeof({blob} -> 'tags') = 'array' "
            f"THEN CAST(ARRAY(SELECT jsonb_array_elements_text({blob} -> 'tags')) AS varchar[]) "
            "ELSE CAST(ARRAY[] AS varchar[]) END"
        )
        return f"{blob} ->> 'user'", tags, "cardinality(tags) = 0", "ARRAY['public']"
    blob = f"COALESCE({column}, '{{}}')"
    tags = (
        f"CASE WHEN json_type({blob}, '$.tags') = 'array' "
        f"THEN json_extract({blob}, '$.tags') ELSE '[]' END"
    )
    user = f"CAST(json_extract({blob}, '$.user') AS TEXT)"
    return user, tags, "json_array_length(tags) = 0", "'[\"public\"]'"


def _copy_blobs(owner: str, blob_table: str, owner_column: str, where: str) -> None:
    if owner == "nodes":
        blob_id, is_root = "id", "id = 0"
    else:
        start = scalar("SELECT COALESCE(MAX(id), 0) FROM access_blobs")
        blob_id, is_root = f"{int(start)} + ROW_NUMBER() OVER (ORDER BY id)", "1 = 0"
    user, tags, empty, public = _blob_parts("access_blob")
    kind = "CASE WHEN username IS NULL THEN 'tags' ELSE 'user' END"
    if is_postgresql():
        kind = f"CAST({kind} AS access_kind)"
    run(
        "INSERT INTO access_blobs (id, kind, username, tags) "
        f"SELECT blob_id, {kind}, username, CASE WHEN username IS NOT NULL THEN NULL "
        f"WHEN is_root AND {empty} THEN {public} ELSE tags END "
        f"FROM (SELECT {blob_id} AS blob_id, {is_root} AS is_root, {user} AS username, "
        f"{tags} AS tags FROM {owner} {where}) AS source",
        f"INSERT INTO {blob_table} ({owner_column}, access_blob_id) "
        f"SELECT id, {blob_id} FROM {owner} {where}",
    )


def _create_sqlite_triggers() -> None:
    statements = []
    for table in BLOB_TABLES:
        others = " OR ".join(
            f"EXISTS (SELECT 1 FROM {other} WHERE access_blob_id = NEW.access_blob_id)"
            for other in BLOB_TABLES
            if other != table
        )
        statements.append(
            f"CREATE TRIGGER {table}_delete_cleanup AFTER DELETE ON {table} "
            "BEGIN DELETE FROM access_blobs WHERE id = OLD.access_blob_id; END"
        )
        statements.extend(
            f"CREATE TRIGGER {table}_{name}_reject_shared_access_blob BEFORE {event} ON {table} "
            f"WHEN {others} BEGIN SELECT RAISE(ABORT, '{SHARED}'); END"
            for name, event in (("insert", "INSERT"), ("update", "UPDATE OF access_blob_id"))
        )
    statements.extend(
        f"CREATE TRIGGER entity_access_blobs_{name}_reject_node_backed_entity BEFORE {event} "
        "ON entity_access_blobs WHEN EXISTS (SELECT 1 FROM entities "
        "WHERE id = NEW.entity_id AND node_id IS NOT NULL) "
        f"BEGIN SELECT RAISE(ABORT, '{NODE_BACKED}'); END"
        for name, event in (("insert", "INSERT"), ("update", "UPDATE OF entity_id"))
    )
    statements.append(
        "CREATE TRIGGER entities_node_access_blob_update BEFORE UPDATE OF node_id ON entities "
        "WHEN NEW.node_id IS NOT NULL AND EXISTS (SELECT 1 FROM entity_access_blobs "
        f"WHERE entity_id = NEW.id) BEGIN SELECT RAISE(ABORT, '{NODE_BACKED}'); END"
    )
    run(*statements)


def _create_postgresql_triggers() -> None:
    shared = " UNION ALL ".join(
        f"SELECT 1 FROM {table} WHERE access_blob_id = NEW.access_blob_id "
        f"AND TG_TABLE_NAME <> '{table}'"
        for table in BLOB_TABLES
    )
    statements = [
        plpgsql_function(
            "reject_shared_access_blob",
            f"IF EXISTS ({shared}) THEN RAISE EXCEPTION '{SHARED}'; END IF;\nRETURN NEW;",
        ),
        plpgsql_function(
            "entities_reject_node_access_blob",
            "IF EXISTS (SELECT 1 FROM entity_access_blobs WHERE entity_id = NEW.id) THEN "
            f"RAISE EXCEPTION '{NODE_BACKED}'; END IF;\nRETURN NEW;",
        ),
        plpgsql_function(
            "entity_access_blob_reject_node_backed_entity",
            "IF EXISTS (SELECT 1 FROM entities WHERE id = NEW.entity_id AND node_id IS NOT NULL) "
            f"THEN RAISE EXCEPTION '{NODE_BACKED}'; END IF;\nRETURN NEW;",
        ),
    ]
    for table in BLOB_TABLES:
        owner = table.removesuffix("_access_blobs")
        statements += [
            plpgsql_function(
                f"delete_{owner}_access_blob",
                "DELETE FROM access_blobs WHERE id = OLD.access_blob_id;\nRETURN OLD;",
            ),
            f"CREATE TRIGGER {table}_delete_cleanup AFTER DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION delete_{owner}_access_blob()",
            f"CREATE TRIGGER {table}_reject_shared_access_blob BEFORE INSERT OR UPDATE OF "
            f"access_blob_id ON {table} FOR EACH ROW EXECUTE FUNCTION reject_shared_access_blob()",
        ]
    statements += [
        "CREATE TRIGGER entity_access_blobs_reject_node_backed_entity BEFORE INSERT OR UPDATE OF "
        "entity_id ON entity_access_blobs FOR EACH ROW "
        "EXECUTE FUNCTION entity_access_blob_reject_node_backed_entity()",
        "CREATE TRIGGER entities_node_access_blob_check BEFORE UPDATE OF node_id ON entities "
        "FOR EACH ROW WHEN (NEW.node_id IS NOT NULL) "
        "EXECUTE FUNCTION entities_reject_node_access_blob()",
    ]
    run(*statements)


def upgrade() -> None:
    _create_tables()
    for owner, blob_table, owner_column, _, where in OWNERS:
        _copy_blobs(owner, blob_table, owner_column, where)
    if is_postgresql():
        run(
            "SELECT setval(pg_get_serial_sequence('access_blobs', 'id'), "
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM access_blobs), false)"
        )
    op.create_index(
        "ix_access_blobs_username_user", "access_blobs", ["username"],
        sqlite_where=sa.text("kind = 'user' AND username IS NOT NULL"),
        postgresql_where=sa.text("kind = 'user' AND username IS NOT NULL"),
    )  # fmt: skip
    op.create_index("ix_access_blobs_kind_id", "access_blobs", ["kind", "id"])
    if is_postgresql():
        op.create_index(
            "ix_access_blobs_tags_gin", "access_blobs", ["tags"], postgresql_using="gin",
            postgresql_where=sa.text("kind = 'tags' AND tags IS NOT NULL"),
        )  # fmt: skip
    drop_triggers(
        [
            (f"entities_node_access_blob_{name}", "entities")
            for name in ("insert", "update", "check")
        ],
        functions=["entities_reject_node_access_blob"],
    )
    drop_indexes("top_level_metadata")
    for table in ("nodes", "revisions", "entities", "links"):
        if "access_blob" in column_names(table):
            run(f"ALTER TABLE {table} DROP COLUMN access_blob")
    if is_postgresql():
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()
    analyze("access_blobs", *BLOB_TABLES)


def downgrade() -> None:
    refuse_downgrade(revision)

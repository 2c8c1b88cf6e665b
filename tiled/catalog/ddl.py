"""Triggers and functions of the catalog schema, beside the tables of :mod:`tiled.catalog.orm`.

They keep derived data in step whoever writes the database (this server or upstream's), so
they are part of the shared schema, with upstream's names:

- ``update_closure_table_when_inserting``: every new node gets its row (depth 0) and one row
  per ancestor in ``nodes_closure``.
- ``cannot_insert_num_null_if_num_exists`` / ``cannot_insert_num_int_if_num_null_exists``: an
  asset parameter is either one asset (``num`` NULL) or a numbered sequence, never both.
- ``node_access_tags_set_parent`` and ``node_access_tags_sync_parent_after_node_update``: the
  association copies its node's parent, so a listing filtered by tags reads one index.
- the entity triggers: an entity backed by a node takes that node's tags, never its own.
- SQLite only: the external-content FTS5 table ``metadata_fts5`` and its three sync triggers
  (PostgreSQL indexes the same words with a GIN index on ``jsonb_to_tsvector``).
"""

from __future__ import annotations

from typing import Any

_ENTITY_TAGS_MESSAGE = (
    "An entity with node_id set must not have its own access tags; "
    "access is controlled by the referenced node."
)

SQLITE = [
    """
    CREATE TRIGGER update_closure_table_when_inserting
    AFTER INSERT ON nodes
    BEGIN
        INSERT INTO nodes_closure(ancestor, descendant, depth) SELECT NEW.id, NEW.id, 0;
        INSERT INTO nodes_closure(ancestor, descendant, depth)
        SELECT above.ancestor, below.descendant, above.depth + below.depth + 1
        FROM nodes_closure AS above, nodes_closure AS below
        WHERE above.descendant = NEW.parent AND below.ancestor = NEW.id;
    END
    """,
    """
    CREATE TRIGGER cannot_insert_num_null_if_num_exists
    BEFORE INSERT ON data_source_asset_association
    WHEN NEW.num IS NULL
    BEGIN
        SELECT RAISE(ABORT, 'Can only insert num=NULL if no other row exists for the same parameter')
        WHERE EXISTS (
            SELECT 1 FROM data_source_asset_association
            WHERE parameter = NEW.parameter AND data_source_id = NEW.data_source_id
        );
    END
    """,
    """
    CREATE TRIGGER cannot_insert_num_int_if_num_null_exists
    BEFORE INSERT ON data_source_asset_association
    WHEN NEW.num IS NOT NULL
    BEGIN
        SELECT RAISE(ABORT, 'Can only insert INTEGER num if no NULL row exists for the same parameter')
        WHERE EXISTS (
            SELECT 1 FROM data_source_asset_association
            WHERE parameter = NEW.parameter AND num IS NULL
              AND data_source_id = NEW.data_source_id
        );
    END
    """,
    """
    CREATE TRIGGER node_access_tags_set_parent_after_insert
    AFTER INSERT ON node_access_tags_association
    BEGIN
        UPDATE node_access_tags_association
        SET parent_id = (SELECT parent FROM nodes WHERE id = NEW.node_id)
        WHERE node_id = NEW.node_id AND tag_id = NEW.tag_id;
    END
    """,
    """
    CREATE TRIGGER node_access_tags_set_parent_after_update
    AFTER UPDATE OF node_id ON node_access_tags_association
    BEGIN
        UPDATE node_access_tags_association
        SET parent_id = (SELECT parent FROM nodes WHERE id = NEW.node_id)
        WHERE node_id = NEW.node_id AND tag_id = NEW.tag_id;
    END
    """,
    """
    CREATE TRIGGER node_access_tags_sync_parent_after_node_update
    AFTER UPDATE OF parent ON nodes
    WHEN NEW.parent IS NOT OLD.parent
    BEGIN
        UPDATE node_access_tags_association SET parent_id = NEW.parent WHERE node_id = NEW.id;
    END
    """,
    f"""
    CREATE TRIGGER entities_node_access_tags_update
    BEFORE UPDATE OF node_id ON entities
    WHEN (NEW.node_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM entity_access_tags_association WHERE entity_id = NEW.id
    ))
    BEGIN
        SELECT RAISE(ABORT, '{_ENTITY_TAGS_MESSAGE}');
    END
    """,
    f"""
    CREATE TRIGGER entity_access_tags_association_insert_reject_node_backed_entity
    BEFORE INSERT ON entity_access_tags_association
    WHEN EXISTS (SELECT 1 FROM entities WHERE id = NEW.entity_id AND node_id IS NOT NULL)
    BEGIN
        SELECT RAISE(ABORT, '{_ENTITY_TAGS_MESSAGE}');
    END
    """,
    f"""
    CREATE TRIGGER entity_access_tags_association_update_reject_node_backed_entity
    BEFORE UPDATE OF entity_id ON entity_access_tags_association
    WHEN EXISTS (SELECT 1 FROM entities WHERE id = NEW.entity_id AND node_id IS NOT NULL)
    BEGIN
        SELECT RAISE(ABORT, '{_ENTITY_TAGS_MESSAGE}');
    END
    """,
    "CREATE VIRTUAL TABLE metadata_fts5 USING fts5(metadata, content='nodes', content_rowid='id')",
    """
    CREATE TRIGGER nodes_metadata_fts5_sync_ai AFTER INSERT ON nodes BEGIN
        INSERT INTO metadata_fts5(rowid, metadata) VALUES (new.id, new.metadata);
    END
    """,
    """
    CREATE TRIGGER nodes_metadata_fts5_sync_ad AFTER DELETE ON nodes BEGIN
        INSERT INTO metadata_fts5(metadata_fts5, rowid, metadata)
        VALUES ('delete', old.id, old.metadata);
    END
    """,
    """
    CREATE TRIGGER nodes_metadata_fts5_sync_au AFTER UPDATE ON nodes BEGIN
        INSERT INTO metadata_fts5(metadata_fts5, rowid, metadata)
        VALUES ('delete', old.id, old.metadata);
        INSERT INTO metadata_fts5(rowid, metadata) VALUES (new.id, new.metadata);
    END
    """,
]


def _plpgsql(name: str, body: str) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\nEND;\n$$"
    )


POSTGRESQL = [
    _plpgsql(
        "update_closure_table_when_inserting",
        """
        INSERT INTO nodes_closure(ancestor, descendant, depth) VALUES (NEW.id, NEW.id, 0);
        INSERT INTO nodes_closure(ancestor, descendant, depth)
        SELECT above.ancestor, below.descendant, above.depth + below.depth + 1
        FROM nodes_closure AS above, nodes_closure AS below
        WHERE above.descendant = NEW.parent AND below.ancestor = NEW.id;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER update_closure_table_when_inserting AFTER INSERT ON nodes "
    "FOR EACH ROW EXECUTE FUNCTION update_closure_table_when_inserting()",
    _plpgsql(
        "raise_if_parameter_exists",
        """
        IF EXISTS (SELECT 1 FROM data_source_asset_association
                   WHERE parameter = NEW.parameter AND data_source_id = NEW.data_source_id) THEN
            RAISE EXCEPTION 'Can only insert num=NULL if no other row exists for the same parameter';
        END IF;
        RETURN NEW;
        """,
    ),
    _plpgsql(
        "raise_if_null_parameter_exists",
        """
        IF EXISTS (SELECT 1 FROM data_source_asset_association
                   WHERE parameter = NEW.parameter AND data_source_id = NEW.data_source_id
                   AND num IS NULL) THEN
            RAISE EXCEPTION 'Can only insert INTEGER num if no NULL row exists for the same parameter';
        END IF;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER cannot_insert_num_null_if_num_exists BEFORE INSERT ON "
    "data_source_asset_association FOR EACH ROW WHEN (NEW.num IS NULL) "
    "EXECUTE FUNCTION raise_if_parameter_exists()",
    "CREATE TRIGGER cannot_insert_num_int_if_num_null_exists BEFORE INSERT ON "
    "data_source_asset_association FOR EACH ROW WHEN (NEW.num IS NOT NULL) "
    "EXECUTE FUNCTION raise_if_null_parameter_exists()",
    _plpgsql(
        "node_access_tags_set_parent",
        """
        SELECT parent INTO NEW.parent_id FROM nodes WHERE id = NEW.node_id;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER node_access_tags_set_parent BEFORE INSERT OR UPDATE OF node_id ON "
    "node_access_tags_association FOR EACH ROW EXECUTE FUNCTION node_access_tags_set_parent()",
    _plpgsql(
        "node_access_tags_sync_parent_after_node_update",
        """
        UPDATE node_access_tags_association SET parent_id = NEW.parent WHERE node_id = NEW.id;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER node_access_tags_sync_parent_after_node_update AFTER UPDATE OF parent ON "
    "nodes FOR EACH ROW WHEN (NEW.parent IS DISTINCT FROM OLD.parent) "
    "EXECUTE FUNCTION node_access_tags_sync_parent_after_node_update()",
    _plpgsql(
        "entities_reject_node_access_tags",
        f"""
        IF EXISTS (SELECT 1 FROM entity_access_tags_association WHERE entity_id = NEW.id) THEN
            RAISE EXCEPTION '{_ENTITY_TAGS_MESSAGE}' USING ERRCODE = '23514';
        END IF;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER entities_node_access_tags_check BEFORE UPDATE OF node_id ON entities "
    "FOR EACH ROW WHEN (NEW.node_id IS NOT NULL) "
    "EXECUTE FUNCTION entities_reject_node_access_tags()",
    _plpgsql(
        "entity_access_tags_association_reject_node_backed_entity",
        f"""
        IF EXISTS (SELECT 1 FROM entities WHERE id = NEW.entity_id AND node_id IS NOT NULL) THEN
            RAISE EXCEPTION '{_ENTITY_TAGS_MESSAGE}' USING ERRCODE = '23514';
        END IF;
        RETURN NEW;
        """,
    ),
    "CREATE TRIGGER entity_access_tags_association_reject_node_backed_entity BEFORE INSERT OR "
    "UPDATE OF entity_id ON entity_access_tags_association FOR EACH ROW "
    "EXECUTE FUNCTION entity_access_tags_association_reject_node_backed_entity()",
]


def create_extensions(connection: Any) -> None:
    """What the tables need before they are created (PostgreSQL: btree_gin)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS btree_gin")


def create_triggers(connection: Any) -> None:
    """Create the triggers (and PostgreSQL functions) on a connection with the tables."""
    statements = POSTGRESQL if connection.dialect.name == "postgresql" else SQLITE
    for statement in statements:
        connection.exec_driver_sql(statement)

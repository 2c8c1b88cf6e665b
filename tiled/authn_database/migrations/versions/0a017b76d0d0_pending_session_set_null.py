"""Make pending_sessions.session_id ON DELETE SET NULL, so that deleting a session is never
blocked by a pending (device code) login that refers to it. The head of upstream Tiled 0.2.20.

PostgreSQL replaces the foreign key under the same name. SQLite cannot alter a foreign key, so
the table is rebuilt: a copy with the new key (DDL as ``create_all`` emits it), the rows, then
the copy takes the table's name and gets the table's two indexes back.

Revision ID: 0a017b76d0d0
Revises: 2d1b550e12e0
"""

import sqlalchemy as sa
from alembic import op

revision = "0a017b76d0d0"
down_revision = "2d1b550e12e0"
branch_labels = None
depends_on = None

TABLE = "pending_sessions"
COLUMNS = ("hashed_device_code", "user_code", "expiration_time", "session_id")


def _foreign_key_name(connection) -> str:
    for key in sa.inspect(connection).get_foreign_keys(TABLE):
        if key["constrained_columns"] == ["session_id"]:
            return key["name"] or f"{TABLE}_session_id_fkey"
    raise RuntimeError(f"{TABLE}.session_id has no foreign key to replace")


def _replace_postgresql(connection, ondelete: str | None) -> None:
    name = _foreign_key_name(connection)
    op.drop_constraint(name, TABLE, type_="foreignkey")
    op.create_foreign_key(name, TABLE, "sessions", ["session_id"], ["id"], ondelete=ondelete)


def _rebuild_sqlite(ondelete: str | None) -> None:
    copy = f"_new_{TABLE}"
    op.create_table(
        copy,
        sa.Column("hashed_device_code", sa.LargeBinary(32), nullable=False),
        sa.Column("user_code", sa.Unicode(8), nullable=False),
        sa.Column("expiration_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("hashed_device_code"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete=ondelete),
    )
    names = ", ".join(COLUMNS)
    op.execute(f"INSERT INTO {copy} ({names}) SELECT {names} FROM {TABLE}")
    op.drop_table(TABLE)  # its indexes go with it
    op.rename_table(copy, TABLE)
    op.create_index(f"ix_{TABLE}_user_code", TABLE, ["user_code"])
    op.create_index(f"ix_{TABLE}_hashed_device_code", TABLE, ["hashed_device_code"])


def _migrate(ondelete: str | None) -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        _replace_postgresql(connection, ondelete)
    elif connection.dialect.name == "sqlite":
        _rebuild_sqlite(ondelete)
    else:
        raise NotImplementedError(f"no migration for {connection.dialect.name} databases")


def upgrade() -> None:
    _migrate("SET NULL")


def downgrade() -> None:
    _migrate(None)

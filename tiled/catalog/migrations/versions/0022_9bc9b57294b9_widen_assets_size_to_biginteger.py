"""Widen assets.size to a 64-bit integer (upstream revision 9bc9b57294b9).

PostgreSQL: ``assets.size`` becomes BIGINT. SQLite stores 64-bit integers in any INTEGER
column already, but the declared type is what the models compare with, so ``assets`` is
rebuilt with ``size BIGINT``, its rows and their data-source associations kept. (Upstream's
script leaves SQLite as it is; a database made by a release's models since has BIGINT.)

Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import connection, is_postgresql, sqlite_rebuild

revision = "9bc9b57294b9"
down_revision = "b93c79d197f4"
branch_labels = None
depends_on = None


def _create_assets_table() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("data_uri", sa.Unicode(1023)),
        sa.Column("is_directory", sa.Boolean, nullable=False),
        sa.Column("hash_type", sa.Unicode(63), nullable=True),
        sa.Column("hash_content", sa.Unicode(1023), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("time_created", sa.DateTime(timezone=False), server_default=sa.func.now()),
        sa.Column("time_updated", sa.DateTime(timezone=False), server_default=sa.func.now()),
    )
    op.create_index("ix_assets_data_uri", "assets", ["data_uri"], unique=True)


def upgrade() -> None:
    columns = sa.inspect(connection()).get_columns("assets")
    size = next(column for column in columns if column["name"] == "size")
    if isinstance(size["type"], sa.BigInteger):
        return
    if is_postgresql():
        op.alter_column("assets", "size", type_=sa.BigInteger, existing_nullable=True)
    else:
        sqlite_rebuild("assets", _create_assets_table, children=["data_source_asset_association"])


def downgrade() -> None:
    refuse_downgrade(revision)

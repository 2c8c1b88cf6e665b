"""Revisions of upstream's chain that this package cannot apply, refused with what to do.

The chain of revision identifiers is upstream's, so that a database stamped by upstream is
recognised here and ``alembic_version`` means the same thing to both servers. Revisions older
than upstream 0.2.0's head (``dfbb7478c6bd``) predate every 0.2.x release; a database that old
is moved forward with upstream's own command first.
"""

from __future__ import annotations

from tiled.catalog.errors import MigrationRefused

UPSTREAM_0_2_0_HEAD = "dfbb7478c6bd"


def refuse_upgrade(revision: str) -> None:
    raise MigrationRefused(
        f"This server cannot upgrade a catalog database to revision {revision}, which is older "
        f"than upstream Tiled 0.2.0's schema ({UPSTREAM_0_2_0_HEAD}). Upgrade it first with "
        "upstream's `tiled catalog upgrade-database` from any 0.2.x release, then run this "
        "server's `tiled catalog upgrade-database`."
    )


def refuse_downgrade(revision: str) -> None:
    raise MigrationRefused(
        f"Downgrading a catalog database past revision {revision} is not supported by this "
        "server; use upstream's `tiled catalog downgrade-database` of the matching release."
    )

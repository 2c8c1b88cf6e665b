"""Scope names, as upstream Tiled defines them (upstream's import path for these is
``tiled.access_control.scopes``).

``ScopeName`` members are strings, so they compare and hash as their names; the sets below hold
the plain names, which is what credentials, policies and the databases carry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class ScopeName(str, enum.Enum):
    read_metadata = "read:metadata"
    read_data = "read:data"
    write_metadata = "write:metadata"
    write_data = "write:data"
    delete_revision = "delete:revision"
    delete_node = "delete:node"
    create_node = "create:node"
    register = "register"
    metrics = "metrics"
    create_apikeys = "create:apikeys"
    revoke_apikeys = "revoke:apikeys"
    admin_apikeys = "admin:apikeys"
    read_principals = "read:principals"
    write_principals = "write:principals"
    read_webhooks = "read:webhooks"
    write_webhooks = "write:webhooks"

    def __str__(self) -> str:
        return self.value


# What each scope allows, as shown to clients (OpenAPI).
SCOPES: dict[ScopeName, dict[str, str]] = {
    ScopeName.read_metadata: {"description": "Read metadata."},
    ScopeName.read_data: {"description": "Read data."},
    ScopeName.write_metadata: {"description": "Write metadata."},
    ScopeName.write_data: {"description": "Write data."},
    ScopeName.delete_revision: {"description": "Delete metadata revisions."},
    ScopeName.delete_node: {"description": "Delete a node."},
    ScopeName.create_node: {"description": "Add a node."},
    ScopeName.register: {"description": "Register files or other assets this server reads."},
    ScopeName.metrics: {"description": "Read the server's Prometheus metrics."},
    ScopeName.create_apikeys: {"description": "Create API keys of one's own principal."},
    ScopeName.revoke_apikeys: {"description": "Revoke API keys of one's own principal."},
    ScopeName.admin_apikeys: {"description": "Create and revoke API keys of any principal."},
    ScopeName.read_principals: {"description": "List users and services and their details."},
    ScopeName.write_principals: {"description": "Change users and services."},
    ScopeName.read_webhooks: {"description": "Read webhooks and their deliveries."},
    ScopeName.write_webhooks: {"description": "Register and remove webhooks."},
}

ALL_SCOPES: frozenset[str] = frozenset(scope.value for scope in ScopeName)
SINGLE_USER_SCOPES: frozenset[str] = ALL_SCOPES - {
    "create:apikeys", "revoke:apikeys", "admin:apikeys", "read:principals", "write:principals",
}  # fmt: skip
PUBLIC_SCOPES: frozenset[str] = frozenset({"read:metadata", "read:data"})
NO_SCOPES: frozenset[str] = frozenset()


def validate_scopes(scopes: Iterable[str], description: str) -> None:
    """Raise ValueError naming what in ``scopes`` is not a scope (``description`` says whose
    scopes they are, as in "The API key's scopes")."""
    unknown = {str(scope) for scope in scopes} - ALL_SCOPES
    if unknown:
        raise ValueError(
            f"{description} contains {sorted(unknown)}, which are not scopes. "
            f"Valid scopes are {sorted(ALL_SCOPES)}."
        )

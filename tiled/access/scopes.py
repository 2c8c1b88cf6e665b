"""Scope names, as upstream Tiled defines them."""

ALL_SCOPES = frozenset(
    {
        "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
        "delete:node", "create:node", "register", "metrics", "create:apikeys", "revoke:apikeys",
        "admin:apikeys", "read:principals", "write:principals", "read:webhooks", "write:webhooks",
    }
)  # fmt: skip
SINGLE_USER_SCOPES = frozenset(
    {
        "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
        "delete:node", "create:node", "register", "metrics", "read:webhooks", "write:webhooks",
    }
)  # fmt: skip
PUBLIC_SCOPES = frozenset({"read:metadata", "read:data"})

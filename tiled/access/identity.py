"""Who is asking: one value that every later step of a request consults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """The outcome of authentication.

    ``principal`` is None for an anonymous request. ``scopes`` are what the credentials grant
    (before any access policy narrows them per node). In multi-user mode ``principal`` is the
    principal's uuid (hex), ``principal_type`` is ``user`` or ``service``, and ``identities``
    are its ``(provider, id)`` logins; ``api_key_first_eight`` names the API key the request
    used, if any, and ``access_tags`` the tags that key is limited to (None: not limited).
    """

    principal: str | None
    scopes: frozenset[str]
    authenticated: bool = False
    identities: tuple[tuple[str, str], ...] = ()
    api_key_first_eight: str | None = None
    principal_type: str = "user"
    access_tags: frozenset[str] | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.principal is None

    @property
    def identity_ids(self) -> tuple[str, ...]:
        """Login names (e.g. "alice") this principal is known by, whatever the provider."""
        return tuple(user_id for _, user_id in self.identities)

    def id_from(self, provider: str) -> str | None:
        """The principal's login id with ``provider``, if it has one."""
        for name, user_id in self.identities:
            if name == provider:
                return user_id
        return None

    @property
    def principal_uuid(self) -> str | None:
        """The principal's uuid in its dashed form (how upstream names services in tags)."""
        try:
            return str(uuid.UUID(self.principal)) if self.principal else None
        except ValueError:  # single-user mode's principal is not a uuid
            return None

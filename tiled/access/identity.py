"""Who is asking: one value that every later step of a request consults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """The outcome of authentication.

    ``principal`` is None for an anonymous request. ``scopes`` are what the credentials grant
    (before any access policy narrows them per node). In multi-user mode ``principal`` is the
    principal's uuid (hex); ``api_key_first_eight`` names the API key the request used, if any.
    """

    principal: str | None
    scopes: frozenset[str]
    authenticated: bool = False
    # Login names (e.g. "alice") this principal is known by, for policies that list users.
    identity_ids: tuple[str, ...] = ()
    api_key_first_eight: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.principal is None

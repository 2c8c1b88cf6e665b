"""Who is asking: one value that every later step of a request consults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """The outcome of authentication.

    ``principal`` is None for an anonymous request. ``scopes`` are what the credentials grant
    (before any access policy narrows them per node).
    """

    principal: str | None
    scopes: frozenset[str]
    authenticated: bool = False
    # Login names (e.g. "alice") this principal is known by, for policies that list users.
    identity_ids: tuple[str, ...] = ()

    @property
    def is_anonymous(self) -> bool:
        return self.principal is None

"""Identities a multi-user server established lately, given again without establishing them anew.

A zarr client sends its credential with every chunk it asks for, and establishing who sent it
can cost far more than the answer: an API key is looked up in the authentication database
(three queries), an access token's signature is verified (tens of microseconds). What is kept
is given again only while it would be established the same way:

- an access token's identity until the token expires (a token is valid until then, whatever
  happens in the database: only refresh tokens are checked against sessions);
- an API key's identity while the authentication database has not changed since the key was
  looked up (any process's commit changes its generation: see :mod:`tiled.change_feeds`), for
  at most ``recheck_seconds`` (the resolution of a key's recorded latest activity; writers of
  the database that are not Tiled notify nobody), and never past the key's expiry.

Credentials are kept by their SHA-256 digest, not as given.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..access.identity import Identity

KEPT_ACCESS_TOKENS = 4096
KEPT_API_KEYS = 1024


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(slots=True)
class KeptIdentity:
    identity: Identity
    valid_until: float  # time.time() of the token's expiry, or time.monotonic() of a recheck
    generation: Hashable = None  # of the authentication database (API keys)
    expires: datetime | None = None  # an API key's own expiry


class KeptIdentities:
    """At most ``size`` identities by credential digest; the oldest kept goes first."""

    def __init__(self, size: int):
        self._size = size
        self._entries: dict[bytes, KeptIdentity] = {}
        # Only changes take it (reads are single dict lookups): an application may be served
        # from several threads' event loops (test clients).
        self._lock = threading.Lock()

    def get(self, key: bytes) -> KeptIdentity | None:
        return self._entries.get(key)

    def keep(self, key: bytes, kept: KeptIdentity) -> None:
        with self._lock:
            entries = self._entries
            entries.pop(key, None)
            if len(entries) >= self._size:
                del entries[next(iter(entries))]
            entries[key] = kept

    def __len__(self) -> int:
        return len(self._entries)


class AccessTokenIdentities(KeptIdentities):
    def __init__(self, size: int = KEPT_ACCESS_TOKENS):
        super().__init__(size)

    def identity(self, key: bytes) -> Identity | None:
        kept = self.get(key)
        # Valid while now < exp, as the token library decides.
        if kept is not None and time.time() < kept.valid_until:
            return kept.identity
        return None

    def keep_token(self, key: bytes, identity: Identity, expiry: Any) -> None:
        self.keep(key, KeptIdentity(identity, int(expiry)))  # as the token library reads it


class APIKeyIdentities(KeptIdentities):
    def __init__(self, recheck_seconds: float, size: int = KEPT_API_KEYS):
        super().__init__(size)
        self.recheck_seconds = recheck_seconds

    def identity(self, key: bytes, generation: Hashable, now: datetime) -> Identity | None:
        kept = self.get(key)
        if (
            kept is None
            or generation is None
            or kept.generation != generation
            or time.monotonic() >= kept.valid_until
            or (kept.expires is not None and kept.expires <= now)
        ):
            return None
        return kept.identity

    def keep_key(
        self,
        key: bytes,
        identity: Identity,
        generation: Hashable,
        expires: datetime | None,
        looked_up: float,
    ) -> None:
        """Keep what was established under ``generation``, both read from the moment
        ``looked_up`` (``time.monotonic()``) before the lookup began."""
        if generation is None:
            return  # the database's changes cannot be told: look it up every time
        recheck = looked_up + self.recheck_seconds
        self.keep(key, KeptIdentity(identity, recheck, generation, expires))

"""Username/password authenticators for multi-user servers ("internal" providers).

An authenticator is any object with ``async authenticate(username, password)`` returning a
:class:`UserSessionState` on success and ``None`` on failure (a plain, non-async method is
accepted too). Configure one per provider::

    authentication:
      providers:
        - provider: toy
          authenticator: tiled.authenticators:DictionaryAuthenticator
          args:
            users_to_passwords: {alice: ${ALICE_PASSWORD}}
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UserSessionState:
    """Who logged in (``user_name``, the id within the provider) and provider state."""

    user_name: str
    state: dict[str, Any] = field(default_factory=dict)


class InternalAuthenticator(ABC):
    """The interface of a username/password (PAM-style) authenticator."""

    mode = "internal"
    confirmation_message: str | None = None

    @abstractmethod
    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        """Return the session state for valid credentials, None otherwise."""


class DictionaryAuthenticator(InternalAuthenticator):
    """Users and passwords from a mapping: for tests, demos and tiny deployments."""

    def __init__(
        self, users_to_passwords: Mapping[str, str], confirmation_message: str | None = None
    ):
        self._passwords = {user: password.encode() for user, password in users_to_passwords.items()}
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        expected = self._passwords.get(username)
        # Compare even for unknown users, so timing does not tell which names exist.
        matches = hmac.compare_digest(password.encode(), expected or b"\0" * 32)
        if expected is None or not matches:
            return None
        return UserSessionState(username)


class DummyAuthenticator(InternalAuthenticator):
    """Any username with any password logs in: for development only (upstream's name)."""

    def __init__(self, confirmation_message: str | None = None):
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        return UserSessionState(username)


class PAMAuthenticator(InternalAuthenticator):
    """Check credentials against the host's PAM stack (needs the ``pamela`` package)."""

    def __init__(self, service: str = "login", confirmation_message: str | None = None):
        try:
            import pamela
        except ImportError:
            raise ImportError(
                "PAMAuthenticator needs the 'pamela' package: pip install pamela"
            ) from None
        self._pamela = pamela
        self.service = service
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        from .utils import run_sync

        def check() -> bool:
            try:
                self._pamela.authenticate(username, password, service=self.service)
            except self._pamela.PAMError:
                return False
            return True

        return UserSessionState(username) if await run_sync(check) else None

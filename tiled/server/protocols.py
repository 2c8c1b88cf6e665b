"""Upstream's import path for the authenticator interface (``tiled.server.protocols``)."""

from ..authenticators import InternalAuthenticator, UserSessionState

__all__ = ["InternalAuthenticator", "UserSessionState"]

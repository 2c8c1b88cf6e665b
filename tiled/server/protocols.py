"""Upstream's import path for the authenticator interface (``tiled.server.protocols``)."""

from ..authenticators import ExternalAuthenticator, InternalAuthenticator, UserSessionState

__all__ = ["ExternalAuthenticator", "InternalAuthenticator", "UserSessionState"]

"""Upstream's import path for scope names: :mod:`tiled.access.scopes`."""

from ..access.scopes import (
    ALL_SCOPES,
    NO_SCOPES,
    PUBLIC_SCOPES,
    SCOPES,
    SINGLE_USER_SCOPES,
    ScopeName,
    validate_scopes,
)

__all__ = [
    "ALL_SCOPES",
    "NO_SCOPES",
    "PUBLIC_SCOPES",
    "SCOPES",
    "SINGLE_USER_SCOPES",
    "ScopeName",
    "validate_scopes",
]

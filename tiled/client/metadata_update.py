"""Upstream's home of ``DELETE_KEY`` (``from tiled.client.metadata_update import DELETE_KEY``,
as its ``update_metadata`` documentation spells it): the same marker as
``tiled.client.DELETE_KEY``."""

from __future__ import annotations

from .base import DELETE_KEY

__all__ = ["DELETE_KEY"]

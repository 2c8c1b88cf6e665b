"""Upstream Tiled's import paths for access control, over this server's :mod:`tiled.access`."""

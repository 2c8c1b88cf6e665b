"""Revision scripts of the authentication database (upstream Tiled's identifiers)."""

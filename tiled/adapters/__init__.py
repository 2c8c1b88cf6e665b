"""Adapters: the objects that give each node of the tree its structure, data and zarr view."""

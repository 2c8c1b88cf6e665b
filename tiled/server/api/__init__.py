"""Routers of HTTP API v1."""

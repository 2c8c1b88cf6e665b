"""Identities, scopes and access policies."""

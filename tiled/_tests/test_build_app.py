"""What ``build_app`` builds: one typed application state, and the registries it is given."""

from __future__ import annotations

import dataclasses

import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server.app import build_app
from tiled.server.state import TiledState


def _tree() -> MapAdapter:
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(10))})


def test_the_state_is_one_frozen_object_with_upstreams_names_alongside():
    tree = _tree()
    app = build_app(tree, authentication={"single_user_api_key": "secret"})
    state = app.state.tiled
    assert isinstance(state, TiledState)
    assert state.root_tree is tree and state.access_policy is None
    assert state.authenticator.api_key == "secret" and state.authenticated
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.root_tree = MapAdapter({})
    # Upstream's applications expose these three; its tests and deployments read them.
    assert app.state.root_tree is tree
    assert app.state.access_policy is None
    assert app.state.authenticated is True
    public = build_app(tree, authentication={"allow_anonymous_access": True})
    assert public.state.authenticated is public.state.tiled.authenticated is False

"""The capabilities the server asks nodes for (tiled.adapters.protocols), and "is this a group"."""

from __future__ import annotations

from typing import Any

import numpy
import pytest

from tiled.adapters import protocols
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.base import is_group
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.protocols import (
    DistinctValues,
    Filterable,
    KeysetPages,
    Listing,
    PathLookup,
    Searchable,
    Sortable,
    ZarrGroupHooks,
    protocol_members,
    supports,
)
from tiled.errors import NoSuchEntry


class DuckGroup:
    """A group written for upstream Tiled: no base class of this package."""

    def __init__(self, members: dict[str, Any]):
        self.members = members

    async def to_zarr_meta(self, options: Any = None) -> Any:
        raise NotImplementedError

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        return list(self.members)[offset : None if limit is None else offset + limit]

    async def zarr_member(self, key: str) -> Any:
        try:
            return self.members[key]
        except KeyError:
            raise NoSuchEntry([key]) from None

    def search(self, query: Any) -> DuckGroup:
        return self


class Refusing(MapAdapter):
    """Inherits search and sort, and refuses them the way Python's protocols read it."""

    search = sort = None


class Forwarding:
    """Answers what it is asked by forwarding (as a catalog's listed node does)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


CAPABILITIES = [PathLookup, Listing, KeysetPages, Searchable, Sortable, Filterable,
                DistinctValues, ZarrGroupHooks]  # fmt: skip


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "node",
    [
        MapAdapter({}),
        Refusing({}),
        DuckGroup({}),
        Forwarding(MapAdapter({})),
        Forwarding(DuckGroup({})),
        ArrayAdapter.from_array(numpy.arange(3)),
        None,
    ],
    ids=["map", "refusing", "duck", "forwarding-map", "forwarding-duck", "array", "none"],
)
def test_supports_answers_as_isinstance_does(node, capability):
    assert supports(node, capability) == isinstance(node, capability)


def test_a_member_set_to_none_refuses_the_capability():
    assert supports(MapAdapter({}), Searchable) and supports(MapAdapter({}), Sortable)
    assert not supports(Refusing({}), Searchable) and not supports(Refusing({}), Sortable)
    assert supports(Refusing({}), Filterable)  # what it does not refuse it keeps


def test_protocol_members_are_the_declared_public_names():
    assert protocol_members(Listing) == {"count", "items_range"}
    assert protocol_members(ZarrGroupHooks) == {"to_zarr_meta", "zarr_member_keys", "zarr_member"}


def test_is_group_is_asked_of_the_group_hooks_by_inheritance_or_structure():
    assert is_group(MapAdapter({}))
    assert is_group(DuckGroup({}))
    assert is_group(Forwarding(DuckGroup({})))
    assert not is_group(ArrayAdapter.from_array(numpy.arange(3)))
    assert not is_group(object())


async def test_default_lookup_walks_into_groups_written_for_upstream():
    leaf = ArrayAdapter.from_array(numpy.arange(3))
    tree = MapAdapter({"duck": DuckGroup({"x": leaf})})
    assert await tree.lookup_adapter(["duck", "x"]) is leaf
    with pytest.raises(NoSuchEntry) as missing:
        await tree.lookup_adapter(["duck", "y"])
    assert missing.value.path == ["duck", "y"]
    with pytest.raises(NoSuchEntry) as below_array:
        await tree.lookup_adapter(["duck", "x", "z"])
    assert below_array.value.path == ["duck", "x", "z"]


def test_upstream_names_of_the_family_protocols_still_import():
    from tiled.adapters.protocols import ArrayAdapter as UpstreamArrayAdapter
    from tiled.adapters.protocols import ContainerAdapter, SparseAdapter, TableAdapter

    assert UpstreamArrayAdapter is protocols.ReadableArray
    assert SparseAdapter is protocols.ReadableSparse
    assert TableAdapter is protocols.ReadableTable
    assert ContainerAdapter is protocols.ReadableContainer
    # Not in the module's namespace: nothing here mistakes them for the concrete adapters.
    assert "ArrayAdapter" not in vars(protocols)
    with pytest.raises(AttributeError):
        protocols.NoSuchProtocol  # noqa: B018

"""Adapters of registered data are served as instances of classes built once per adapter class
(guarded reads, the catalog row's attributes), their state carried over: no class swapping."""

from __future__ import annotations

import pytest

from tiled.catalog.nodes import (
    CatalogNode,
    guard_registered,
    guarded_class,
    rebuilt_as,
    registered_node_class,
)
from tiled.errors import DataUnavailable, NodeAt


class FileBacked:
    structure_family = "array"

    def __init__(self, path: str):
        self.path = path

    def read(self):
        raise OSError(f"{self.path} vanished")


class Slotted:
    __slots__ = ("path", "_Slotted__secret", "never_set")
    structure_family = "array"

    def __init__(self, path: str):
        self.path = path
        self.__secret = 42

    def read(self):
        return self.path, self.__secret


class BuiltOnDict(dict):
    structure_family = "array"


def test_guarded_adapter_is_a_new_instance_of_a_subclass_with_the_same_state():
    original = FileBacked("/data/a.h5")
    guarded = guard_registered(original, (NodeAt(("a",)), "application/x-hdf5"))
    assert guarded is not original and type(original) is FileBacked  # the original is untouched
    assert isinstance(guarded, FileBacked) and type(guarded) is guarded_class(FileBacked)
    assert guarded.path == "/data/a.h5"
    with pytest.raises(DataUnavailable, match="/a: cannot read its application/x-hdf5 data"):
        guarded.read()
    assert guard_registered(guarded, (NodeAt(("b",)), None)) is guarded  # guarded once only


def test_node_class_is_built_once_per_adapter_class():
    cls = registered_node_class(FileBacked)
    assert cls is registered_node_class(FileBacked)
    assert issubclass(cls, CatalogNode) and issubclass(cls, guarded_class(FileBacked))
    assert registered_node_class(cls) is cls


def test_slots_are_carried_over():
    guarded = guard_registered(Slotted("/data/s.tif"), (NodeAt(("s",)), "image/tiff"))
    assert type(guarded) is guarded_class(Slotted)
    assert guarded.read() == ("/data/s.tif", 42)
    assert not hasattr(guarded, "never_set")


def test_state_of_built_in_types_cannot_be_carried_over():
    adapter = BuiltOnDict(a=1)
    assert rebuilt_as(guarded_class(BuiltOnDict), adapter) is None
    assert guard_registered(adapter, (NodeAt(("d",)), None)) is adapter  # served as it is

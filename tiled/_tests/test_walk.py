"""The one walk over a group's members (tiled.adapters.walk)."""

from __future__ import annotations

from typing import Any

import numpy

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.walk import members, walk


def leaf() -> ArrayAdapter:
    return ArrayAdapter.from_array(numpy.arange(2))


def tree() -> MapAdapter:
    return MapAdapter(
        {
            "a": MapAdapter({"a1": leaf(), "a2": MapAdapter({"deep": leaf()})}),
            "b": leaf(),
            "c": MapAdapter({"c1": leaf()}),
        }
    )


class CountingKeys(MapAdapter):
    """Records the limits its members are listed with."""

    asked: list[Any]

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        self.asked.append(limit)
        return await super().zarr_member_keys(offset, limit)


async def paths(**options: Any) -> list[str]:
    return ["/".join(visit.path) async for visit in walk(tree(), **options)]


async def test_depth_first_is_preorder_and_breadth_first_goes_a_level_at_a_time():
    assert await paths() == ["a", "a/a1", "a/a2", "a/a2/deep", "b", "c", "c/c1"]
    assert await paths(order="breadth") == ["a", "b", "c", "a/a1", "a/a2", "c/c1", "a/a2/deep"]


async def test_a_pruned_member_is_not_descended_into():
    seen = []
    async for visit in walk(tree()):
        seen.append("/".join(visit.path))
        if visit.key == "a":
            visit.prune()
    assert seen == ["a", "b", "c", "c/c1"]


async def test_the_caller_filters_through_the_group_it_gives_at_each_chain():
    def without_b_or_a1(chain):
        node = chain[-1][1]
        return node.filter(lambda key, child: key not in ("b", "a1"))

    found = ["/".join(visit.path) async for visit in walk(tree(), group_at=without_b_or_a1)]
    assert found == ["a", "a/a2", "a/a2/deep", "c", "c/c1"]


async def test_a_walk_from_a_chain_carries_it_and_reports_paths_below_its_start():
    root = tree()
    start = (("", root), ("a", await root.zarr_member("a")))
    visits = [visit async for visit in walk(start, order="breadth")]
    assert [visit.path for visit in visits] == [("a1",), ("a2",), ("a2", "deep")]
    assert [key for key, _ in visits[-1].chain] == ["", "a", "a2", "deep"]


async def test_with_a_limit_no_group_is_asked_for_more_keys_than_could_be_taken():
    CountingKeys.asked = []
    big = CountingKeys({f"k{i}": leaf() for i in range(10)})
    taken = []
    async for visit in walk(big, limit=3):
        if len(taken) == 3:
            break
        taken.append(visit.key)
    assert taken == ["k0", "k1", "k2"] and CountingKeys.asked == [4]


async def test_members_lists_one_level_and_nothing_for_a_leaf():
    assert [key async for key, _ in members(tree())] == ["a", "b", "c"]
    assert [key async for key, _ in members(leaf())] == []


def nested(depth: int) -> MapAdapter:
    node = MapAdapter({"x": leaf()})
    for _ in range(depth):
        node = MapAdapter({"g": node})
    return node


async def test_a_tree_deeper_than_the_recursion_limit_is_walked_depth_first():
    depth = 3000  # past Python's recursion limit (1000) whatever frames a level costs
    visits = [visit async for visit in walk(nested(depth))]
    assert len(visits) == depth + 1
    assert visits[-1].path == ("g",) * depth + ("x",)


async def test_a_walk_left_early_closes_the_levels_it_was_listing():
    seen = []
    async for visit in walk(nested(50)):
        seen.append(visit.path)
        if len(seen) == 10:
            break
    assert seen[-1] == ("g",) * 10

"""A reusable conformance suite for the zarr hooks of group adapters (the array one is in
``zarr_conformance.py``).

Subclass :class:`ZarrGroupHookConformance` and implement ``build_cases()`` returning
``{name: ZarrGroupCase}``; every test then runs for every case (and both zarr formats where
documents are encoded). A group's documents are parsed by zarr-python itself; its member keys
are compared with what lookups find; and the consolidated metadata the server builds for it
is opened by zarr-python, which must list every member at every depth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zarr
from zarr.core.buffer import cpu
from zarr.storage import MemoryStore

from tiled.access.identity import Identity
from tiled.access.view import AccessView
from tiled.adapters.base import is_group
from tiled.errors import DataUnavailable, NoSuchEntry
from tiled.server.zarr.documents import documents_of
from tiled.zarr_format.formats import encoding_for
from tiled.zarr_format.model import ZarrOptions

# A key no case has: lookups of it must fail the way a missing member does.
ABSENT_KEY = "no-such-member-3f1c"
# What the server would let anyone see: no access policy.
UNRESTRICTED = AccessView(Identity(principal=None, scopes=frozenset()), None)
# Methods that read data; a group's metadata and member listing must call none of them.
DATA_READERS = ("read", "read_block", "read_partition", "read_buffers")


@dataclass
class ZarrGroupCase:
    """One group under test.

    ``open(tmp_path)`` is an async context manager giving the adapter, so that groups that
    live in a database are made (and closed) in the test's own event loop; :meth:`of` wraps an
    adapter that exists already. ``members`` are the member keys, in order; ``attributes``,
    when given, are the group attributes as zarr-python reads them.
    """

    open: Callable[[Path], AbstractAsyncContextManager[Any]]
    members: list[str]
    attributes: dict[str, Any] | None = None
    options: ZarrOptions = field(default_factory=ZarrOptions)

    @classmethod
    def of(cls, adapter: Any, members: list[str], **kwargs: Any) -> ZarrGroupCase:
        @asynccontextmanager
        async def given(tmp_path: Path) -> AsyncIterator[Any]:
            yield adapter

        return cls(given, members, **kwargs)


def open_group_with_zarr(
    documents: dict[str, bytes], zarr_format: int, consolidated: bool = False
) -> zarr.Group:
    store = MemoryStore({k: cpu.Buffer.from_bytes(v) for k, v in documents.items()})
    return zarr.open_group(
        store, mode="r", zarr_format=zarr_format, use_consolidated=consolidated or None
    )


async def readable_members(
    group: Any, options: ZarrOptions, prefix: str = ""
) -> dict[str, tuple[int, ...] | None]:
    """Every member below ``group`` at every depth whose metadata can be read, walked through
    the zarr hooks: ``{path: shape}``, None for a group. A member whose metadata is
    unavailable (DataUnavailable) is left out with what is below it, as consolidated metadata
    leaves it out: its own documents answer why."""
    found = {}
    for key in await group.zarr_member_keys():
        member = await group.zarr_member(key)
        try:
            meta = await member.to_zarr_meta(options)
        except DataUnavailable:
            continue
        if is_group(member):
            found[prefix + key] = None
            found.update(await readable_members(member, options, f"{prefix}{key}/"))
        else:
            found[prefix + key] = tuple(meta.shape)
    return found


async def documents_of_node(adapter: Any, zarr_format: int, options: ZarrOptions) -> dict:
    """The node's own documents (no consolidated metadata), as the server encodes them."""
    encoding = encoding_for(zarr_format)
    meta = await adapter.to_zarr_meta(options)
    if is_group(adapter):
        return encoding.group_documents(meta)
    return encoding.array_documents(meta)


async def documents_or_refusal(adapter: Any, zarr_format: int, options: ZarrOptions) -> Any:
    """The node's documents, or the message of the DataUnavailable that refuses them."""
    try:
        return await documents_of_node(adapter, zarr_format, options)
    except DataUnavailable as err:
        return ("unavailable", str(err))


class ZarrGroupHookConformance:
    @classmethod
    def build_cases(cls) -> dict[str, ZarrGroupCase]:
        raise NotImplementedError

    async def test_is_a_group(self, zarr_case: ZarrGroupCase, tmp_path: Path):
        async with zarr_case.open(tmp_path) as group:
            assert is_group(group)

    async def test_documents_parse_with_zarr(
        self, zarr_case: ZarrGroupCase, zarr_format: int, tmp_path: Path
    ):
        async with zarr_case.open(tmp_path) as group:
            documents = await documents_of_node(group, zarr_format, zarr_case.options)
        parsed = open_group_with_zarr(documents, zarr_format)
        assert parsed.metadata.zarr_format == zarr_format
        if zarr_case.attributes is not None:
            assert dict(parsed.attrs) == zarr_case.attributes

    async def test_member_keys_are_the_members(self, zarr_case: ZarrGroupCase, tmp_path: Path):
        async with zarr_case.open(tmp_path) as group:
            keys = await group.zarr_member_keys()
        assert keys == zarr_case.members
        assert len(set(keys)) == len(keys)

    async def test_member_keys_page(self, zarr_case: ZarrGroupCase, tmp_path: Path):
        async with zarr_case.open(tmp_path) as group:
            keys = await group.zarr_member_keys()
            n = len(keys)
            for offset, limit in [(0, None), (0, 1), (1, 2), (n - 1, 5), (n, 3), (n + 2, None)]:
                offset = max(offset, 0)
                stop = None if limit is None else offset + limit
                assert await group.zarr_member_keys(offset, limit) == keys[offset:stop]
            assert await group.zarr_member_keys(0, 0) == []

    async def test_listed_members_are_what_lookup_finds(
        self, zarr_case: ZarrGroupCase, tmp_path: Path
    ):
        async with zarr_case.open(tmp_path) as group:
            for key in await group.zarr_member_keys():
                member = await group.zarr_member(key)
                looked_up = await group.lookup_adapter([key])
                assert member.structure_family == looked_up.structure_family
                for zarr_format in (2, 3):
                    assert await documents_or_refusal(
                        member, zarr_format, zarr_case.options
                    ) == await documents_or_refusal(looked_up, zarr_format, zarr_case.options)
                # Each member is a zarr node of one kind or the other.
                assert is_group(member) or callable(getattr(member, "to_zarr_chunk", None))

    async def test_absent_members_are_not_found(self, zarr_case: ZarrGroupCase, tmp_path: Path):
        async with zarr_case.open(tmp_path) as group:
            with pytest.raises(NoSuchEntry):
                await group.zarr_member(ABSENT_KEY)
            with pytest.raises(NoSuchEntry):
                await group.lookup_adapter([ABSENT_KEY])

    async def test_consolidated_metadata_lists_every_member(
        self, zarr_case: ZarrGroupCase, zarr_format: int, tmp_path: Path
    ):
        settings = SimpleNamespace(zarr=zarr_case.options, zarr_consolidated_max_nodes=10_000)
        async with zarr_case.open(tmp_path) as group:
            expected = await readable_members(group, zarr_case.options)
            documents = await documents_of(
                (("", group),), encoding_for(zarr_format), settings, UNRESTRICTED
            )
        # Only the group's own documents: zarr-python must find every member in them.
        parsed = open_group_with_zarr(documents, zarr_format, consolidated=True)
        listed = {
            path: None if isinstance(node, zarr.Group) else tuple(node.shape)
            for path, node in parsed.members(max_depth=None)
        }
        assert listed == expected

    async def test_metadata_and_member_keys_read_no_data(
        self, zarr_case: ZarrGroupCase, tmp_path: Path
    ):
        def refuse(*args, **kwargs):
            raise AssertionError("listing a group's metadata or members read data")

        async with zarr_case.open(tmp_path) as group:
            spied = [name for name in DATA_READERS if callable(getattr(group, name, None))]
            own = {name: group.__dict__[name] for name in spied if name in vars(group)}
            try:
                for name in spied:
                    setattr(group, name, refuse)
                await group.to_zarr_meta(zarr_case.options)
                await group.zarr_member_keys()
            finally:
                for name in spied:
                    if name in own:
                        setattr(group, name, own[name])
                    else:
                        delattr(group, name)

"""Writing the tree through /zarr: PUT and DELETE of zarr keys.

A key names a node's metadata document or one of an array's chunks, as for reads. What a
write does and the scope it needs, on the node (an existing one) or its parent (a new one):

============================================  ==================================  ===========
request                                       does                                needs
============================================  ==================================  ===========
PUT a document of a node that does not exist  creates a group or an array         create:node
                                              (its attributes are its metadata)   and
                                                                                  write:metadata
                                                                                  on the parent
PUT an array's document                       resizes it (shape), renames its     write:metadata
                                              dimensions, replaces its            (+ write:data
                                              attributes; nothing else may change  to resize)
PUT a group's document, v2 ``.zattrs``        replaces the attributes             write:metadata
PUT v2 ``.zgroup``/``.zmetadata`` of a group  nothing: the server derives them    write:metadata
                                              (each must still be the document
                                              it names)
PUT a chunk key                               stores the bytes as they are        write:data
DELETE a chunk key                            removes the chunk (fill value)      write:data
DELETE a node's document                      deletes the node and its subtree    delete:node
DELETE v2 ``.zattrs``                         clears the attributes               write:metadata
============================================  ==================================  ===========

Every write is checked whole before anything changes (zarr-python parses the documents; a
chunk must decode with the array's codecs), honours ``If-Match`` / ``If-None-Match`` (412), and
replaces one file or one catalog row in one step. Only the catalog's own nodes are writable:
in-memory trees and registered files answer 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ...access.view import AccessView
from ...adapters.base import is_group, metadata_from_zarr_attributes
from ...adapters.conditions import WriteCondition
from ...adapters.protocols import (
    ExcludesWriters,
    NodeWithHistory,
    WritableContainer,
    WritableZarrArray,
    WritableZarrContainer,
    supports,
)
from ...errors import (
    BadRequest,
    ChunkOutOfRange,
    Conflict,
    NoSuchEntry,
    PreconditionFailed,
    ZarrKeyNotFound,
)
from ...zarr_format.encoding import ZarrEncoding
from ...zarr_format.formats import ENCODINGS_BY_FORMAT
from ...zarr_format.submitted import (
    V2_DIMENSIONS_ATTRIBUTE,
    check_v2_declaration,
    dimensions_from_attributes,
    json_object,
    parse_array_document,
    parse_attributes,
    parse_group_document,
    v3_node_type,
)
from ..authentication import get_identity
from ..bodies import request_body
from ..dependencies import (
    Node,
    capable,
    require_node_scope,
    require_scope,
    split_path,
    visible_node_scopes,
)
from ..responses import etag_of
from ..state import tiled_state
from .documents import array_documents, documents_of
from .ranges import KeyResponse
from .resolve import resolve

# How long a v2 ``.zattrs`` written before its node's ``.zarray``/``.zgroup`` waits for the
# node: zarr-python writes both documents of a node concurrently.
ATTRIBUTES_WAIT_SECONDS = 2.0
_ATTRIBUTES_POLL_SECONDS = 0.02


_DOCUMENT_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


@dataclass
class _Writer:
    """One write request, resolved: who asks, through which encoding, with what conditions."""

    request: Request
    encoding: ZarrEncoding
    view: AccessView
    condition: WriteCondition

    @property
    def state(self) -> Any:
        return tiled_state(self.request)

    async def authorize(self, chain: Any, parts: tuple[str, ...], *scopes: str) -> Node:
        """The node at the end of ``chain`` if the identity holds ``scopes`` on it (401 when
        it holds them nowhere, 404 when it may not see the node, 403 otherwise)."""
        for scope in scopes:
            require_scope(self.view.identity, scope, self.request)
        granted = await visible_node_scopes(self.view, chain, parts)
        for scope in scopes:
            require_node_scope(granted, scope)
        return Node(chain[-1][1], parts, self.view.identity, self.view, tuple(chain), granted)

    async def body(self) -> bytes:
        """The request body, refused (413) past the server's limit before it is all read."""
        return await request_body(self.request, self.state.settings.zarr_write_max_bytes)

    async def document_etag(self, chain: Any, name: str) -> str | None:
        """The ETag a reader got for document ``name`` of the node (None: it has none)."""
        adapter = chain[-1][1]
        settings = self.state.settings
        if is_group(adapter):
            documents = await documents_of(chain, self.encoding, settings, self.view, name)
        else:
            documents = array_documents(await adapter.to_zarr_meta(settings.zarr), self.encoding)
        return etag_of(documents[name]) if name in documents else None

    @contextlib.asynccontextmanager
    async def locked(self, parts: tuple[str, ...], chain: Any, *below: str) -> AsyncIterator[None]:
        """Serialize the document writes to the node at ``parts``, so that a condition
        checked under the lock holds until the change is made: in this process, and, where
        the node lives in storage that several processes serve, in all of them. ``chain``
        reaches the node, or its parent and ``below`` its key when it is to be created."""
        key = "/".join(parts)
        lock = _DOCUMENT_LOCKS.get(key)
        if lock is None:
            lock = _DOCUMENT_LOCKS[key] = asyncio.Lock()
        anchor = chain[-1][1] if chain else None
        async with lock:
            if anchor is not None and supports(anchor, ExcludesWriters):
                async with anchor.exclusive(*below):
                    yield
            else:
                yield

    async def answer(self, chain: Any, name: str, created: bool) -> KeyResponse:
        etag = await self.document_etag(chain, name) if chain is not None else None
        return _written(created, etag)


def _written(created: bool, etag: str | None) -> KeyResponse:
    headers = [(b"content-length", b"0")]
    if etag is not None:
        headers.append((b"etag", etag.encode()))
    return KeyResponse(201 if created else 204, headers)


def _document_kind(encoding: ZarrEncoding, name: str, body: bytes) -> str:
    """What a document write is about: "array", "group", "attributes" or "derived"."""
    if encoding.zarr_format == 3:
        return v3_node_type(json_object(body, name))
    check_v2_declaration(body, name)
    return {".zarray": "array", ".zgroup": "group", ".zattrs": "attributes"}.get(name, "derived")


async def write_key(request: Request, encoding: ZarrEncoding) -> KeyResponse:
    """Answer a PUT or DELETE of one zarr key (see the module)."""
    state = tiled_state(request)
    identity = await get_identity(request)
    require_scope(identity, "read:metadata", request)
    view = AccessView(identity, state.access_policy)
    await view.prepare(state.root_tree)
    headers = request.headers
    condition = WriteCondition.from_headers(headers.get("if-match"), headers.get("if-none-match"))
    writer = _Writer(request, encoding, view, condition)
    parts = split_path(request.path_params["path"])
    if parts and parts[-1] in encoding.document_names:
        return await _write_document(writer, parts[:-1], parts[-1])
    for other in ENCODINGS_BY_FORMAT.values():
        if parts and parts[-1] in other.document_names - encoding.document_names:
            raise BadRequest(
                f"{parts[-1]} is a document of zarr format {other.zarr_format}: write it "
                f"through /zarr/v{other.zarr_format}"
            )
    target = await resolve(state.root_tree, "/".join(parts), encoding, view)
    if not target.is_chunk:
        raise BadRequest(
            f"{request.method} takes a document key ({sorted(encoding.document_names)}) or a "
            "chunk key of an array"
        )
    return await _write_chunk(writer, target.chain, parts, target.key)


async def _write_chunk(
    writer: _Writer, chain: Any, parts: tuple[str, ...], key: str
) -> KeyResponse:
    node_parts = parts[: len(parts) - len(split_path(key))]
    node = await writer.authorize(chain, node_parts, "write:data")
    array = capable(node.adapter, WritableZarrArray, "writing through zarr")
    coords = writer.encoding.parse_chunk_key(key, len(node.adapter.structure().shape))
    if coords is None:
        raise BadRequest(
            f"{key!r} is not a chunk key of a {len(node.adapter.structure().shape)}-d array"
        )
    try:
        if writer.request.method == "DELETE":
            await array.delete_zarr_chunk(coords, writer.condition)
            return _written(False, None)
        body = await writer.body()
        etag, created = await array.write_zarr_chunk(coords, body, writer.condition)
    except ChunkOutOfRange as err:
        raise BadRequest(
            f"The chunk key {key!r} lies outside the array's chunk grid: {err}"
        ) from None
    return _written(created, etag)


async def _lookup(writer: _Writer, parts: tuple[str, ...]) -> Any | None:
    try:
        return tuple(await writer.view.lookup(writer.state.root_tree, parts))
    except NoSuchEntry:
        return None


async def _write_document(writer: _Writer, parts: tuple[str, ...], name: str) -> KeyResponse:
    deleting = writer.request.method == "DELETE"
    chain = await _lookup(writer, parts)
    if chain is None and name == ".zattrs" and not deleting:
        # Before waiting: credentials that can write nowhere need no wait to be refused.
        require_scope(writer.view.identity, "write:metadata", writer.request)
        chain = await _wait_for_node(writer, parts)
    if chain is None:
        if deleting or not parts:
            raise ZarrKeyNotFound(f"No such key: {'/'.join((*parts, name))!r}")
        return await _create(writer, parts, name)
    if deleting:
        async with writer.locked(parts, chain):
            chain = await _locked_lookup(writer, parts, name)
            return await _delete_document(writer, chain, parts, name)
    await writer.authorize(chain, parts, "write:metadata")  # before the body is read
    body = await writer.body()
    async with writer.locked(parts, chain):
        chain = await _locked_lookup(writer, parts, name)
        node = await writer.authorize(chain, parts, "write:metadata")
        return await _update_document(writer, node, chain, parts, name, body)


async def _locked_lookup(writer: _Writer, parts: tuple[str, ...], name: str) -> Any:
    """The node at ``parts`` as it is now that its lock is held: found again, since a writer
    of another process may have changed it (or deleted it) since it was first found."""
    chain = await _lookup(writer, parts)
    if chain is None:
        raise ZarrKeyNotFound(f"No such key: {'/'.join((*parts, name))!r}")
    return chain


async def _update_document(
    writer: _Writer, node: Node, chain: Any, parts: tuple[str, ...], name: str, body: bytes
) -> KeyResponse:
    """A document written to an existing node; the caller holds the node's document lock, so
    the condition checked here still holds when the change is made."""
    kind = _document_kind(writer.encoding, name, body)
    adapter = chain[-1][1]
    if kind == "array":
        if is_group(adapter):
            raise Conflict(
                f"/{'/'.join(parts)} is a group; delete it before writing an array there"
            )
        return await _update_array(writer, node, chain, parts, name, body)
    if kind in ("group", "derived") and not is_group(adapter):
        raise Conflict(f"/{'/'.join(parts)} is an array; delete it before writing a group there")
    writer.condition.check(await writer.document_etag(chain, name))
    if kind == "derived":
        # The server writes v2 .zgroup and .zmetadata itself, from the catalog.
        return await writer.answer(chain, name, created=False)
    if kind == "group":
        attributes = await parse_group_document(writer.encoding.zarr_format, name, body)
        if writer.encoding.zarr_format == 2:
            return await writer.answer(chain, name, created=False)  # .zgroup: no attributes
    else:
        attributes = parse_attributes(body)
    await _replace_attributes(writer, node, attributes)
    return await writer.answer(chain, name, created=False)


async def _wait_for_node(writer: _Writer, parts: tuple[str, ...]) -> Any | None:
    """The node at ``parts`` once it exists (its .zarray/.zgroup may be on its way), or None
    after :data:`ATTRIBUTES_WAIT_SECONDS` or at once when its parent does not exist."""
    if not parts or await _lookup(writer, parts[:-1]) is None:
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ATTRIBUTES_WAIT_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(_ATTRIBUTES_POLL_SECONDS)
        chain = await _lookup(writer, parts)
        if chain is not None:
            return chain
    return None


async def _metadata_for(writer: _Writer, node: Node, attributes: dict[str, Any]) -> dict[str, Any]:
    """The node's metadata once a client wrote ``attributes``: the attributes projection
    undone (see ``metadata_from_zarr_attributes``), then as the node's spec validators accept
    (or change) it (400 if not)."""
    adapter = node.adapter
    served = (await adapter.to_zarr_meta(writer.state.settings.zarr)).attributes
    metadata = metadata_from_zarr_attributes(adapter, attributes, served)
    state = writer.state
    validated = await state.validation_registry.validate(
        list(adapter.specs), metadata, adapter,
        reject_undeclared=state.settings.reject_undeclared_specs,
    )  # fmt: skip
    return validated if validated is not None else metadata


async def _replace_attributes(writer: _Writer, node: Node, attributes: dict[str, Any]) -> None:
    adapter = node.adapter
    if not is_group(adapter):
        array = capable(adapter, WritableZarrArray, "writing through zarr")
        dims = dimensions_from_attributes(attributes)
        attributes = {k: v for k, v in attributes.items() if k != V2_DIMENSIONS_ATTRIBUTE}
        attributes = await _metadata_for(writer, node, attributes)
        if dims is not None:
            await array.update_zarr_array(dims=dims, attributes=attributes)
        else:
            await array.update_zarr_array(attributes=attributes)
        return
    capable(adapter, WritableContainer, "writing through zarr")
    attributes = await _metadata_for(writer, node, attributes)
    if attributes != dict(adapter.metadata()):  # (the root's cannot change: 405)
        await capable(adapter, NodeWithHistory, "metadata updates").replace_metadata(attributes)


async def _update_array(
    writer: _Writer, node: Node, chain: Any, parts: tuple[str, ...], name: str, body: bytes
) -> KeyResponse:
    settings = writer.state.settings
    array = capable(node.adapter, WritableZarrArray, "writing through zarr")
    submitted = await parse_array_document(
        writer.encoding.zarr_format, name, body, settings.zarr_write_compressors,
        settings.zarr_write_max_bytes,
    )  # fmt: skip
    current = await node.adapter.to_zarr_meta(settings.zarr)
    difference = submitted.difference(current)
    if difference is not None:
        raise Conflict(
            f"The array /{'/'.join(parts)} exists with another {difference}; only its shape, "
            "dimension names and attributes can change: delete it to write another array"
        )
    if submitted.meta.shape != current.shape:
        node.require("write:data")
    writer.condition.check(await writer.document_etag(chain, name))
    changes: dict[str, Any] = {"shape": submitted.meta.shape}
    if writer.encoding.zarr_format == 3:  # v2 keeps these in .zattrs, written on its own
        changes["dims"] = submitted.meta.dimension_names
        changes["attributes"] = await _metadata_for(writer, node, dict(submitted.meta.attributes))
    await array.update_zarr_array(**changes)
    return await writer.answer(chain, name, created=False)


async def _create(writer: _Writer, parts: tuple[str, ...], name: str) -> KeyResponse:
    parent_chain = await _lookup(writer, parts[:-1])
    if parent_chain is None:
        raise ZarrKeyNotFound(
            f"No group at /{'/'.join(parts[:-1])} to create {parts[-1]!r} in; write its "
            "document first"
        )
    parent = await writer.authorize(parent_chain, parts[:-1], "create:node", "write:metadata")
    creator = capable(parent.adapter, WritableZarrContainer, "creating nodes through zarr")
    body = await writer.body()
    kind = _document_kind(writer.encoding, name, body)
    if kind not in ("array", "group"):
        raise ZarrKeyNotFound(
            f"No node at /{'/'.join(parts)}: write its {writer.encoding.array_document} or "
            "group document first"
        )
    settings = writer.state.settings
    zarr_format = writer.encoding.zarr_format
    taken: Conflict | None = None
    async with writer.locked(parts, parent_chain, parts[-1]):
        # Another writer may have created it meanwhile (zarr-python writes parents from every
        # task that needs them): then this is a write to an existing node.
        try:
            if (await _lookup(writer, parts)) is None:
                if writer.condition.if_match is not None:
                    raise PreconditionFailed("If-Match does not hold: the key does not exist")
                access_blob, _ = await parent.approve_tags(None, None)
                if kind == "array":
                    submitted = await parse_array_document(
                        zarr_format, name, body, settings.zarr_write_compressors,
                        settings.zarr_write_max_bytes,
                    )  # fmt: skip
                    await creator.create_zarr_array(parts[-1], submitted, access_blob=access_blob)
                else:
                    attributes = await parse_group_document(zarr_format, name, body)
                    await creator.create_zarr_group(parts[-1], attributes, access_blob=access_blob)
                return await writer.answer(await _lookup(writer, parts), name, created=True)
        except Conflict as err:
            # Created by another process between the lookup and the insert, or held by a node
            # this identity may not see.
            taken = err
        chain = await _lookup(writer, parts)
        if chain is None:
            if taken is not None and await _exists_unseen(creator, parts[-1]):
                raise taken  # the catalog's answer, as to POST /api/v1/metadata: no more
            raise Conflict(f"/{'/'.join(parts)} is being created and deleted by other writers")
        node = await writer.authorize(chain, parts, "write:metadata")
        return await _update_document(writer, node, chain, parts, name, body)


async def _exists_unseen(group: Any, key: str) -> bool:
    """Whether ``group`` has a child ``key``, whether or not the writer may see it."""
    try:
        await group.lookup_adapter([key])
    except NoSuchEntry:
        return False
    return True


# What deleting a document does: the node's own document deletes the node; v2's .zattrs
# clears the attributes; v2's .zmetadata (derived) is left to the server.
_DELETES = {"zarr.json": "node", ".zarray": "node", ".zgroup": "node", ".zattrs": "attributes"}


async def _delete_document(
    writer: _Writer, chain: Any, parts: tuple[str, ...], name: str
) -> KeyResponse:
    effect = _DELETES.get(name, "derived")
    if effect == "node":
        if not parts:
            raise BadRequest("The root cannot be deleted.")
        node = await writer.authorize(chain, parts, "delete:node")
        adapter = node.adapter
        # Only the catalog's own data: registered files are not deleted through zarr.
        own = WritableContainer if is_group(adapter) else WritableZarrArray
        capable(adapter, own, "deletion through zarr")
        writer.condition.check(await writer.document_etag(chain, name))
        deletable = capable(adapter, NodeWithHistory, "deletion")
        await deletable.delete(recursive=True, external_only=False)
        return _written(False, None)
    node = await writer.authorize(chain, parts, "write:metadata")
    writer.condition.check(await writer.document_etag(chain, name))
    if effect == "attributes":
        await _replace_attributes(writer, node, {})
    return _written(False, None)

"""Where one node's written data live: a directory, or a prefix of a bucket.

The catalog gives every node whose data it writes a place of its own, named by a random id:
the directory ``{root}/{uuid}`` or the prefix ``{uuid}/`` of a bucket. The adapters that write
(zarr arrays, Parquet tables) work on keys inside that place through :class:`NodeStorage`
and never ask which kind it is:

=====================  ==========================================  ===========================
operation              directory                                   bucket prefix
=====================  ==========================================  ===========================
``get``, ``fetch``     read the file; ETag from its identity       GET; ETag from the object's
``head``               ``stat``                                    HEAD
``put`` (checked)      stage, check and ``os.replace`` under the   HEAD, check, PUT with
                       directory's ``flock``                       ``If-None-Match: *`` or
                                                                   ``If-Match`` (checked again
                                                                   if another writer won)
``remove`` (checked)   check and unlink under the lock             HEAD, check, DELETE
``staged``             temporary files, then ``os.replace`` each   objects PUT under ``.staging/``,
                                                                   a commit record PUT, then each
                                                                   copied to its key (zarr
                                                                   documents last, removals after)
``locked``             ``flock`` (across processes)                a lock in this process (the
                                                                   catalog's lock spans processes)
``destroy``            remove the directory                        delete every object
=====================  ==========================================  ===========================

A write of several keys is all-or-nothing in both: everything is staged first, and nothing
visible changes unless all of it was staged (a failure while encoding, a full disk, a store
that fails or stops answering part-way). Then it is made visible key by key (renames, or
server-side copies). A bucket transaction also PUTs a commit record once all of it is staged,
so that a store failing during the copies leaves a write that the next writer of the node
finishes before its own (:meth:`BucketStorage.locked`); one that failed before its record
was PUT is removed instead. Its zarr document is copied after its chunks, so an array's shape
never runs ahead of its chunks, and chunks are removed after it, so a shrunk array never
shows a chunk as missing before its shape excludes it. A single key is PUT directly (one PUT
is atomic).

A bucket that cannot be reached, or that fails, raises
:class:`~tiled.errors.StorageUnavailable` (answered 503 with ``Retry-After``); a missing key is
None (or, for zarr-python, absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import threading
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..errors import Conflict, StorageUnavailable, UnfinishedWrite
from .files import (
    FileTransaction,
    file_identity,
    identity_etag,
    locked,
    path_from_uri,
    remove_file,
    replace_file,
    staged,
    uri_from_path,
)

logger = logging.getLogger(__name__)

# Names of zarr metadata documents: put last, and conditionally, when a bucket write commits.
ZARR_DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
# How many objects one commit puts at the same time.
CONCURRENT_PUTS = 16
# Where a bucket transaction stages its objects: under the node's prefix (deleting the node
# deletes them too), one folder per transaction, with its commit record next to it.
STAGING = ".staging"
COMMIT_SUFFIX = ".commit"
# Attempts of a checked put whose object another writer changed between the check and the put.
CHECKED_PUT_ATTEMPTS = 5


class StoredObject(NamedTuple):
    """One stored key: its size, when it last changed (POSIX seconds) and its ETag."""

    key: str
    size: int
    mtime: float
    etag: str


class Fetched(NamedTuple):
    """The bytes of one key and the ETag of that version."""

    data: bytes
    etag: str


def _allow_any(current: str | None) -> None:
    """The check of an unconditional write."""


class NodeStorage:
    """The data of one node: keys (``"zarr.json"``, ``"c/0/1"``, ``"partition-0.parquet"``)
    relative to the node's own place. Methods block (callers use worker threads), except
    :meth:`fetch`."""

    uri: str  # what the node's asset records (``data_uri``)
    # Whether a small write may run on the event loop (a local file costs less than a thread hop).
    inline_writes: bool = False
    # Whether :meth:`locked` holds across processes; where it does not, writers must also hold
    # the catalog's lock of the node.
    locks_across_processes: bool = False

    def uri_of(self, key: str) -> str:
        """The URI of one key (a table partition's asset)."""
        return f"{self.uri}/{key}"

    def get(self, key: str) -> Fetched | None:
        raise NotImplementedError

    async def fetch(self, key: str) -> Fetched | None:
        """:meth:`get` without blocking the event loop."""
        from ..utils import run_sync

        return await run_sync(self.get, key)

    def head(self, key: str) -> StoredObject | None:
        raise NotImplementedError

    def put(
        self,
        key: str,
        data: bytes,
        check: Callable[[str | None], None] = _allow_any,
        blocking: bool = True,
    ) -> tuple[str, bool]:
        """Replace ``key`` whole by ``data`` if ``check`` (given the current ETag, None when
        absent) does not raise; the new ETag and whether the key is new."""
        raise NotImplementedError

    def remove(self, key: str, check: Callable[[str | None], None] = _allow_any) -> bool:
        """Remove ``key`` if ``check`` allows; whether it was there."""
        raise NotImplementedError

    def list(self) -> Iterator[StoredObject]:
        """Every stored key (staging leftovers excluded)."""
        raise NotImplementedError

    def staged(self) -> contextlib.AbstractContextManager[Any]:
        """A transaction (``write(key, data)``, ``remove(key)``) made visible when the block
        ends, dropped if it raises."""
        raise NotImplementedError

    def locked(self, blocking: bool = True) -> contextlib.AbstractContextManager[None]:
        """Serializes read-modify-write cycles of this node's data."""
        raise NotImplementedError

    def zarr_store(self, transaction: Any = None) -> Any:
        """A zarr-python store path of the node (writes staged in ``transaction`` if given)."""
        raise NotImplementedError

    def readable(self, key: str) -> Any:
        """What pyarrow reads ``key`` from (a path, or the bytes); FileNotFoundError if absent."""
        raise NotImplementedError

    def create(self) -> None:
        """Make the (empty) place; FileExistsError if it exists."""

    def destroy(self) -> None:
        """Remove the node's data, all of it (absent data are no error)."""
        raise NotImplementedError

    def signed_url(self, key: str, seconds: float) -> str | None:
        """A URL from which anyone may GET ``key`` for ``seconds``; None where there is none."""
        return None


# --- directories ---------------------------------------------------------------------------------


class _KeyedTransaction:
    """A :class:`~tiled.adapters.files.FileTransaction` addressed by keys of one directory."""

    def __init__(self, directory: Path, transaction: FileTransaction):
        self._directory = directory
        self.transaction = transaction

    def write(self, key: str, data: bytes | memoryview) -> None:
        self.transaction.write(self._directory / key, data)

    def remove(self, key: str) -> None:
        self.transaction.remove(self._directory / key)


@dataclasses.dataclass(frozen=True)
class DirectoryStorage(NodeStorage):
    """A node's directory."""

    path: Path
    inline_writes = True
    locks_across_processes = True

    @property
    def uri(self) -> str:  # type: ignore[override]
        return uri_from_path(self.path)

    def uri_of(self, key: str) -> str:
        return uri_from_path(self.path / key)

    def get(self, key: str) -> Fetched | None:
        try:
            with open(self.path / key, "rb") as file:
                info = os.fstat(file.fileno())
                return Fetched(file.read(), identity_etag(file_identity(info)))
        except FileNotFoundError:
            return None

    def head(self, key: str) -> StoredObject | None:
        try:
            info = os.stat(self.path / key)
        except FileNotFoundError:
            return None
        return StoredObject(key, info.st_size, info.st_mtime, identity_etag(file_identity(info)))

    def put(
        self,
        key: str,
        data: bytes,
        check: Callable[[str | None], None] = _allow_any,
        blocking: bool = True,
    ) -> tuple[str, bool]:
        return replace_file(self.path, self.path / key, data, check, blocking)

    def remove(self, key: str, check: Callable[[str | None], None] = _allow_any) -> bool:
        return remove_file(self.path, self.path / key, check)

    def list(self) -> Iterator[StoredObject]:
        for folder, _, files in os.walk(self.path):
            relative = os.path.relpath(folder, self.path)
            for name in files:
                if name.startswith("."):
                    continue  # staged files (and v2 documents, which are no data)
                key = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
                info = os.stat(os.path.join(folder, name))
                yield StoredObject(
                    key, info.st_size, info.st_mtime, identity_etag(file_identity(info))
                )

    @contextlib.contextmanager
    def staged(self) -> Iterator[_KeyedTransaction]:
        with staged(self.path) as transaction:
            yield _KeyedTransaction(self.path, transaction)

    def locked(self, blocking: bool = True) -> contextlib.AbstractContextManager[None]:
        return locked(self.path, blocking)

    def zarr_store(self, transaction: _KeyedTransaction | None = None) -> Any:
        from zarr.storage import LocalStore

        from .zarr_writable import StagingStore

        if transaction is None:
            return LocalStore(self.path)
        return StagingStore(self.path, transaction.transaction)

    def readable(self, key: str) -> Any:
        path = self.path / key
        if not path.exists():
            raise FileNotFoundError(path)
        return str(path)

    def create(self) -> None:
        self.path.mkdir(parents=True)

    def destroy(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --- buckets -------------------------------------------------------------------------------------


def _unavailable(storage: Any, err: BaseException) -> StorageUnavailable:
    # The store's message starts with what failed; its debug dump (after a blank line) and any
    # credentials it might echo stay in the server's log.
    first = str(err).strip().split("\n", 1)[0][:300]
    return StorageUnavailable(f"The object store {storage.uri} failed: {first}")


def _is_store_failure(err: BaseException) -> bool:
    """Whether ``err`` is the store failing (unreachable, refusing, erring), as opposed to an
    answer about a key (absent, already there, changed)."""
    import obstore.exceptions as obstore_errors

    if isinstance(err, FileNotFoundError):
        # A missing bucket is the store configured wrong, not a key that is absent.
        return "NoSuchBucket" in str(err)
    if isinstance(err, obstore_errors.AlreadyExistsError | obstore_errors.PreconditionError):
        return False
    return isinstance(err, obstore_errors.BaseError | ConnectionError | TimeoutError | OSError)


@contextlib.contextmanager
def store_errors(storage: Any) -> Iterator[None]:
    """Failures of the object store as :class:`StorageUnavailable` (answers pass through)."""
    try:
        yield
    except BaseException as err:
        if _is_store_failure(err):
            raise _unavailable(storage, err) from None
        raise


def _converting(method: Callable) -> Callable:
    """A method of a bucket store whose store failures are :class:`StorageUnavailable`."""

    @functools.wraps(method)
    def converted(self: Any, *args: Any, **kwargs: Any) -> Any:
        with store_errors(self.storage):
            return method(self, *args, **kwargs)

    return converted


def _etag(meta: dict[str, Any]) -> str:
    """The ETag of an object's version: the store's own (quoted), else its size and time."""
    tag = meta.get("e_tag")
    if tag:
        return tag if tag.startswith(('"', 'W/"')) else f'"{tag}"'
    moment = meta["last_modified"].timestamp()
    return f'"{meta["size"]:x}-{int(moment * 1e6):x}"'


# A bucket has no lock across processes; writes to one prefix in this process take one of
# these (striped by prefix, so the number of locks is fixed however many nodes there are).
_PREFIX_LOCKS = tuple(threading.RLock() for _ in range(256))
# The prefixes whose lock this thread holds (recovery runs once, on the outermost hold).
_HELD = threading.local()


class _ObjectTransaction:
    """Writes and removals of one bucket prefix, sent when the transaction commits; zarr-python
    may stage from several threads at once."""

    def __init__(self, node: BucketStorage):
        self.node = node
        self.writes: dict[str, bytes] = {}  # key in the bucket -> bytes
        self.removed: set[str] = set()
        # Versions of zarr documents as read during the transaction: a document is put only
        # if it is still that version (or still absent), so another process' change is
        # never overwritten unseen.
        self.documents_read: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def write(self, key: str, data: bytes | memoryview) -> None:
        self.write_object(self.node.object_key(key), data)

    def remove(self, key: str) -> None:
        self.remove_object(self.node.object_key(key))

    def write_object(self, path: str, data: bytes | memoryview) -> None:
        with self._lock:
            self.writes[path] = bytes(data)
            self.removed.discard(path)

    def remove_object(self, path: str) -> None:
        with self._lock:
            self.writes.pop(path, None)
            self.removed.add(path)

    def commit(self) -> None:
        with self._lock:
            writes, removed = dict(self.writes), sorted(self.removed)
        with store_errors(self.node.storage):
            if len(writes) + len(removed) > 1:
                self._commit_staged(writes, removed)
            elif writes:
                ((path, data),) = writes.items()
                if _is_document(path):
                    self._put_document(path, data)
                else:
                    import obstore

                    obstore.put(self.node.store, path, data)
            elif removed:
                import obstore

                obstore.delete(self.node.store, removed)

    def _commit_staged(self, writes: dict[str, bytes], removed: list[str]) -> None:
        import obstore

        folder = self.node.object_key(f"{STAGING}/{uuid.uuid4().hex}")
        start = len(self.node.prefix) + 1
        staged = {path: f"{folder}/{path[start:]}" for path in writes}
        try:
            _each(obstore.put_async, self.node.store, {staged[p]: d for p, d in writes.items()})
            self._check_documents()
            record = {"copy": {staged[path]: path for path in writes}, "remove": removed}
            # The commit point: from here on, this write is finished, if not now then by the
            # next writer of the node.
            obstore.put(self.node.store, folder + COMMIT_SUFFIX, json.dumps(record).encode())
        except BaseException:
            # The record first (its PUT may have landed although it failed): once it is gone
            # the staged objects serve no one; while it may be there, they stay whole, for
            # the next writer to finish the write with. (Else that writer removes them.)
            with contextlib.suppress(Exception):
                obstore.delete(self.node.store, folder + COMMIT_SUFFIX)
                _delete_under(self.node.store, folder)
            raise
        try:
            _apply(self.node.store, folder, record)
        except Exception as err:
            if not _is_store_failure(err):
                raise
            raise UnfinishedWrite(
                f"The object store {self.node.storage.uri} failed while this write, stored "
                "whole, was being made visible (readers may see part of it until the next "
                f"write to this node finishes it): {_unavailable(self.node.storage, err)}"
            ) from None
        try:
            _forget(self.node.store, folder, record)
        except Exception:  # noqa: BLE001 - the write is done; what is left goes later
            logger.warning(
                "Could not remove the commit record and staged objects of a finished write "
                "at %s/%s; the next write to the node removes them",
                self.node.storage.uri, folder, exc_info=True,
            )  # fmt: skip

    def _check_documents(self) -> None:
        """Refuse the write (nothing of it visible yet) if a zarr document it read changed."""
        import obstore

        for path, seen in self.documents_read.items():
            if path not in self.writes:
                continue
            try:
                current = _etag(obstore.head(self.node.store, path))
            except FileNotFoundError:
                current = None
            if current != seen:
                raise _document_changed()

    def _put_document(self, path: str, data: bytes) -> None:
        import obstore
        import obstore.exceptions as obstore_errors

        mode: Any = "overwrite"
        if path in self.documents_read:
            seen = self.documents_read[path]
            mode = "create" if seen is None else {"e_tag": seen}
        try:
            obstore.put(self.node.store, path, data, mode=mode)
        except (obstore_errors.AlreadyExistsError, obstore_errors.PreconditionError):
            raise _document_changed() from None


def _document_changed() -> Conflict:
    return Conflict(
        "The stored array's metadata changed during this write (another writer); "
        "nothing of this write was stored: retry"
    )


def _is_document(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in ZARR_DOCUMENTS


def _each(call: Callable[..., Any], store: Any, pairs: dict[str, Any]) -> None:
    """``call(store, key, value)`` (an obstore coroutine) for each pair, CONCURRENT_PUTS at
    a time; raises the first failure."""

    async def all_of() -> None:
        limit = asyncio.Semaphore(CONCURRENT_PUTS)

        async def one(key: str, value: Any) -> None:
            async with limit:
                await call(store, key, value)

        await asyncio.gather(*(one(key, value) for key, value in pairs.items()))

    asyncio.run(all_of())


def _apply(store: Any, folder: str, record: dict[str, Any]) -> None:
    """Make a committed transaction visible: chunks, then documents, then removals. Running
    it again (after a failure part-way) does the same."""
    import obstore

    copies: dict[str, str] = record["copy"]
    chunks = {source: target for source, target in copies.items() if not _is_document(target)}
    try:
        _each(obstore.copy_async, store, chunks)
        for source, target in copies.items():
            if _is_document(target):
                obstore.copy(store, source, target)
    except FileNotFoundError:
        # Staged objects are removed only once their record is gone: if it is, another
        # writer finished this write meanwhile. If not, the record landed after its writer
        # gave the write up (a PUT that outlived its answer), or something outside the node's
        # writers removed them: the write is dropped, not left to fail every write after it.
        try:
            obstore.head(store, folder + COMMIT_SUFFIX)
        except FileNotFoundError:
            return
        _forget(store, folder, record)
        raise _StagedObjectsGone() from None
    if record["remove"]:
        obstore.delete(store, record["remove"])


class _StagedObjectsGone(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "What this write had staged was removed by something other than the node's "
            "writers; part of it may be visible: write it again"
        )


def _forget(store: Any, folder: str, record: dict[str, Any]) -> None:
    """Remove a transaction's record, then what it staged (never the other way around)."""
    import obstore

    obstore.delete(store, folder + COMMIT_SUFFIX)
    obstore.delete(store, list(record["copy"]))


def _delete_under(store: Any, folder: str) -> None:
    import obstore

    paths = [meta["path"] for batch in obstore.list(store, prefix=f"{folder}/") for meta in batch]
    if paths:
        obstore.delete(store, paths)


def _recover(store: Any, prefix: str) -> None:
    """Finish the committed transactions of the node at ``prefix`` that a failure left
    part-way, oldest first, and remove what uncommitted ones staged. Only while no other
    writer of the node is at work (under its lock, in every process)."""
    import obstore

    listed = obstore.list_with_delimiter(store, f"{prefix}/{STAGING}/")
    records = sorted(
        (meta for meta in listed["objects"] if meta["path"].endswith(COMMIT_SUFFIX)),
        key=lambda meta: meta["last_modified"],
    )
    finished = set()
    for meta in records:
        folder = meta["path"][: -len(COMMIT_SUFFIX)]
        record = json.loads(bytes(obstore.get(store, meta["path"]).bytes()))
        try:
            _apply(store, folder, record)
        except _StagedObjectsGone:
            logger.warning("Dropped the commit record %s, whose staged objects are gone", folder)
        else:
            _forget(store, folder, record)
        finished.add(folder)
    for folder in listed["common_prefixes"]:
        folder = folder.rstrip("/")
        if folder not in finished:
            try:  # what a write that never committed left: only space, nothing to finish
                _delete_under(store, folder)
            except Exception:  # noqa: BLE001 - the next writer tries again
                logger.warning("Could not remove %s, staged by a failed write", folder)


def _bucket_zarr_store_class() -> type:
    """zarr-python's obstore store whose failures are :class:`StorageUnavailable` and whose
    writes, given a transaction, are staged in it (made on first use: imports zarr)."""
    from zarr.storage import ObjectStore

    class BucketZarrStore(ObjectStore):
        def __init__(self, node: BucketStorage, transaction: _ObjectTransaction | None = None):
            super().__init__(node.store, read_only=False)
            self.node = node
            self.transaction = transaction

        def with_read_only(self, read_only: bool = False) -> BucketZarrStore:
            return type(self)(self.node, self.transaction)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            transaction = self.transaction
            if (
                transaction is not None
                and byte_range is None
                and (key.rsplit("/", 1)[-1] in ZARR_DOCUMENTS)
            ):
                # Remember the version read, for the conditional put of the new document.
                fetched = await self.node.fetch_object(key)
                transaction.documents_read.setdefault(key, fetched and fetched.etag)
                return None if fetched is None else prototype.buffer.from_bytes(fetched.data)
            with store_errors(self.node.storage):
                return await super().get(key, prototype, byte_range)

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
            with store_errors(self.node.storage):
                return await super().get_partial_values(prototype, key_ranges)

        async def exists(self, key: str) -> bool:
            with store_errors(self.node.storage):
                return await super().exists(key)

        async def set(self, key: str, value: Any) -> None:
            if self.transaction is not None:
                self.transaction.write_object(key, value.as_buffer_like())
                return
            with store_errors(self.node.storage):
                await super().set(key, value)

        async def delete(self, key: str) -> None:
            if self.transaction is not None:
                self.transaction.remove_object(key)
                return
            with store_errors(self.node.storage):
                await super().delete(key)

        async def _listed(self, listing: AsyncIterator[str]) -> AsyncIterator[str]:
            with store_errors(self.node.storage):
                async for key in listing:
                    yield key

        def list(self) -> AsyncIterator[str]:
            return self._listed(super().list())

        def list_prefix(self, prefix: str) -> AsyncIterator[str]:
            return self._listed(super().list_prefix(prefix))

        def list_dir(self, prefix: str) -> AsyncIterator[str]:
            return self._listed(super().list_dir(prefix))

    return BucketZarrStore


_BUCKET_ZARR_STORE: list[type] = []


@dataclasses.dataclass(frozen=True)
class BucketStorage(NodeStorage):
    """A node's prefix (``<uuid>``, no slash at either end) in a configured bucket
    (:class:`~tiled.storage.ObjectStorage`)."""

    storage: Any  # ObjectStorage
    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"Not a node prefix: {self.prefix!r}")

    @property
    def uri(self) -> str:  # type: ignore[override]
        return f"{self.storage.uri}/{self.prefix}"

    @property
    def store(self) -> Any:
        return self.storage.shared_store

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    @_converting
    def get(self, key: str) -> Fetched | None:
        import obstore

        try:
            result = obstore.get(self.store, self.object_key(key))
        except FileNotFoundError:
            return None
        return Fetched(bytes(result.bytes()), _etag(result.meta))

    async def fetch(self, key: str) -> Fetched | None:
        return await self.fetch_object(self.object_key(key))

    async def fetch_object(self, path: str) -> Fetched | None:
        """:meth:`get` of a key of the bucket, on the event loop (the store's own async I/O)."""
        import obstore

        with store_errors(self.storage):
            try:
                result = await obstore.get_async(self.store, path)
            except FileNotFoundError:
                return None
            return Fetched(bytes(await result.bytes_async()), _etag(result.meta))

    @_converting
    def head(self, key: str) -> StoredObject | None:
        import obstore

        try:
            meta = obstore.head(self.store, self.object_key(key))
        except FileNotFoundError:
            return None
        return StoredObject(key, meta["size"], meta["last_modified"].timestamp(), _etag(meta))

    @_converting
    def put(
        self,
        key: str,
        data: bytes,
        check: Callable[[str | None], None] = _allow_any,
        blocking: bool = True,
    ) -> tuple[str, bool]:
        import obstore
        import obstore.exceptions as obstore_errors

        path = self.object_key(key)
        with self.locked():
            for _ in range(CHECKED_PUT_ATTEMPTS):
                found = self.head(key)
                current = None if found is None else found.etag
                check(current)
                # The put holds only if the object is still the version checked; if another
                # process changed it meanwhile, the check runs again on the new version.
                mode = "create" if current is None else {"e_tag": current}
                try:
                    result = obstore.put(self.store, path, data, mode=mode)
                except (obstore_errors.AlreadyExistsError, obstore_errors.PreconditionError):
                    continue
                etag = _etag(result) if result.get("e_tag") else self.head(key).etag
                return etag, current is None
        raise Conflict(f"{key} kept changing while it was written (other writers); retry")

    @_converting
    def remove(self, key: str, check: Callable[[str | None], None] = _allow_any) -> bool:
        import obstore

        with self.locked():
            found = self.head(key)
            check(None if found is None else found.etag)
            if found is None:
                return False
            # S3 has no conditional delete obstore can send: the check holds against writers
            # that hold the node's lock (in every process, the catalog's), not others.
            obstore.delete(self.store, self.object_key(key))
            return True

    @_converting
    def list(self) -> Iterator[StoredObject]:
        import obstore

        start = len(self.prefix) + 1
        found = []
        for batch in obstore.list(self.store, prefix=f"{self.prefix}/"):
            for meta in batch:
                if meta["path"][start:].startswith(f"{STAGING}/"):
                    continue
                found.append(
                    StoredObject(
                        meta["path"][start:], meta["size"], meta["last_modified"].timestamp(),
                        _etag(meta),
                    )
                )  # fmt: skip
        return iter(found)

    @contextlib.contextmanager
    def staged(self) -> Iterator[_ObjectTransaction]:
        transaction = _ObjectTransaction(self)
        yield transaction  # nothing was sent if the block raised
        transaction.commit()

    @contextlib.contextmanager
    def locked(self, blocking: bool = True) -> Iterator[None]:
        """The prefix's lock in this process; its writers hold the catalog's lock of the node,
        which spans processes. The first to take it finishes what a failed write left."""
        lock = _PREFIX_LOCKS[zlib.crc32(self.uri.encode()) % len(_PREFIX_LOCKS)]
        if not lock.acquire(blocking=blocking):
            raise BlockingIOError(f"{self.uri} is locked by another writer")
        held = _HELD.__dict__.setdefault("prefixes", set())
        outermost = self.uri not in held
        try:
            if outermost:
                held.add(self.uri)
                with store_errors(self.storage):
                    _recover(self.store, self.prefix)
            yield
        finally:
            if outermost:
                held.discard(self.uri)
            lock.release()

    def zarr_store(self, transaction: _ObjectTransaction | None = None) -> Any:
        from zarr.storage import StorePath

        if not _BUCKET_ZARR_STORE:
            _BUCKET_ZARR_STORE.append(_bucket_zarr_store_class())
        return StorePath(_BUCKET_ZARR_STORE[0](self, transaction), self.prefix)

    def readable(self, key: str) -> Any:
        import pyarrow

        fetched = self.get(key)
        if fetched is None:
            raise FileNotFoundError(self.uri_of(key))
        return pyarrow.BufferReader(fetched.data)

    @_converting
    def destroy(self) -> None:
        _delete_under(self.store, self.prefix)  # staged objects too

    @_converting
    def signed_url(self, key: str, seconds: float) -> str | None:
        import obstore

        return obstore.sign(
            self.store, "GET", self.object_key(key), datetime.timedelta(seconds=seconds)
        )


# --- finding a node's storage from its asset --------------------------------------------------


def node_storage_for_uri(uri: str) -> NodeStorage:
    """The storage of the node whose data live at ``uri`` (a directory's ``file://`` URI, or
    ``{endpoint}/{bucket}/{prefix}`` of a configured bucket; StorageNotConfigured if not)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        from ..storage import ObjectStorage, get_storage

        storage = get_storage(uri)
        _, _, prefix = ObjectStorage.parse_blob_uri(uri)
        return BucketStorage(storage, prefix.strip("/"))
    return DirectoryStorage(path_from_uri(uri))


def location_of(uri: str) -> tuple[NodeStorage, str]:
    """The storage holding the file or object ``uri``, and its key there (its name)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    return node_storage_for_uri(parent), name


__all__ = [
    "BucketStorage",
    "DirectoryStorage",
    "Fetched",
    "NodeStorage",
    "StoredObject",
    "location_of",
    "node_storage_for_uri",
    "store_errors",
]

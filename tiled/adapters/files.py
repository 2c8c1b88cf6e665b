"""Local files of adapters: their URIs, their identity (and ETags made from it), why one
cannot be opened, and files written by storage adapters, staged then moved into place together.

A file's identity (device, inode, size, modification time) changes whenever it is rewritten or
replaced, so bytes read from one version of a file are tagged from it and the offset, as
static file servers do, without hashing them.

A write never leaves a partial file where a reader looks: every new file is first written to
a temporary file in a staging directory on the same file system, and only when every file of
the operation has been written are they moved into place with ``os.replace`` (atomic per
file). A failure while staging removes the temporary files and leaves the visible files as
they were. An exclusive ``flock`` on the node's directory serializes read-modify-write cycles
across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

STAGING_SUFFIX = ".partial"


def path_from_uri(uri: str) -> Path:
    """The local path of a ``file://`` URI (``file://localhost/x``, ``file:///x``) or a path."""
    if "://" not in uri:
        return Path(uri)
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"Not a local file URI: {uri!r}")
    return Path(unquote(parsed.path))


def uri_from_path(path: str | Path) -> str:
    return "file://localhost" + quote(str(Path(path).absolute()))


def asset_uris(data_source: Any) -> list[str]:
    """The URIs of a data source's data files, in their order (``num``; a lone asset has none):
    the assets that fill an adapter's ``data_uri``/``data_uris`` parameter, or all of them when
    none names its parameter."""
    assets = list(getattr(data_source, "assets", None) or [])
    named = [a for a in assets if getattr(a, "parameter", None) in ("data_uri", "data_uris")]
    ordered = sorted(named or assets, key=lambda a: -1 if a.num is None else a.num)
    return [a.data_uri for a in ordered]


FileIdentity = tuple[int, int, int, int]


def file_identity(info: os.stat_result) -> FileIdentity:
    """What changes when a file is rewritten or replaced: device, inode, size, mtime."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def identity_etag(identity: FileIdentity, *where: int) -> str:
    """The ETag of bytes taken from the file version ``identity``, at ``where`` in it."""
    _, inode, size, mtime = identity
    return '"' + "-".join(f"{int(v):x}" for v in (inode, mtime, size, *where)) + '"'


# Why a file could not be opened, by the class of the OSError (the first that matches).
_OPEN_FAILURES: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "does not exist"),
    (PermissionError, "cannot be read: permission denied"),
    (IsADirectoryError, "is a directory, not a file"),
)


def open_failure(err: OSError) -> str:
    """Why opening a file failed, in words that follow its name."""
    for kind, reason in _OPEN_FAILURES:
        if isinstance(err, kind):
            return reason
    return f"cannot be opened: {err.strerror or err}"


def write_temp_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to the new file ``path`` (the one place staged bytes reach the disk)."""
    with open(path, "xb") as file:
        file.write(data)


def file_etag(path: Path) -> str | None:
    """The ETag of the file at ``path`` as it is now (from its identity), None if absent."""
    try:
        return identity_etag(file_identity(os.stat(path)))
    except FileNotFoundError:
        return None


def replace_file(
    directory: Path,
    target: Path,
    data: bytes,
    check: Callable[[str | None], None],
    blocking: bool = True,
) -> tuple[str, bool]:
    """Replace ``target`` (inside node directory ``directory``) by ``data`` whole, if
    ``check`` (given the current version's ETag, None when there is none) does not raise.
    Returns the new version's ETag and whether the file is new.

    The bytes are staged first; the check and the move into place happen under the
    directory's lock, so a conditional write sees no other write between them. Without
    ``blocking``, a lock held elsewhere raises BlockingIOError (and nothing is written); a
    directory removed meanwhile (its node deleted) raises FileNotFoundError."""
    temporary = directory / f".{uuid.uuid4().hex}{STAGING_SUFFIX}"
    try:
        write_temp_file(temporary, data)
        with locked(directory, blocking):
            current = file_etag(target)
            check(current)
            _make_folders(directory, target.parent)
            os.replace(temporary, target)
            return file_etag(target) or "", current is None
    finally:
        temporary.unlink(missing_ok=True)


def _make_folders(directory: Path, folder: Path) -> None:
    """Create ``folder`` and the folders between it and ``directory``, never ``directory``
    itself (a node's directory that is gone stays gone: FileNotFoundError)."""
    missing = []
    while folder != directory and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    if not directory.is_dir():
        raise FileNotFoundError(directory)
    for path in reversed(missing):
        path.mkdir(exist_ok=True)


def remove_file(directory: Path, target: Path, check: Callable[[str | None], None]) -> bool:
    """Remove ``target`` if ``check`` (as for :func:`replace_file`) allows; whether it was
    there."""
    with locked(directory):
        check(file_etag(target))
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True


class FileTransaction:
    """New contents for several files, made visible together by :meth:`commit`.

    Writers may stage from several threads at once (zarr encodes chunks concurrently). When
    one of them fails, the others may still be writing: :meth:`discard` waits for them, and a
    write that finishes after the transaction ended removes its own temporary file.
    """

    def __init__(self, staging_dir: Path):
        self.staging_dir = Path(staging_dir)
        self._staged: dict[Path, Path] = {}  # target -> temporary file
        self._removed: set[Path] = set()
        self._condition = threading.Condition()
        self._in_flight = 0
        self._closed = False

    def write(self, target: Path, data: bytes | memoryview) -> None:
        temporary = self.staging_dir / f".{uuid.uuid4().hex}{STAGING_SUFFIX}"
        with self._condition:
            if self._closed:
                raise RuntimeError("This file transaction has ended")
            self._in_flight += 1
        try:
            write_temp_file(temporary, data)
            self._keep(Path(target), temporary)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        finally:
            with self._condition:
                self._in_flight -= 1
                self._condition.notify_all()

    def _keep(self, target: Path, temporary: Path) -> None:
        with self._condition:
            if self._closed:
                raise RuntimeError("This file transaction has ended")
            previous = self._staged.pop(target, None)
            self._staged[target] = temporary
            self._removed.discard(target)
        if previous is not None:
            previous.unlink(missing_ok=True)

    def remove(self, target: Path) -> None:
        with self._condition:
            previous = self._staged.pop(Path(target), None)
            self._removed.add(Path(target))
        if previous is not None:
            previous.unlink(missing_ok=True)

    def _close(self) -> tuple[dict[Path, Path], set[Path]]:
        with self._condition:
            self._closed = True
            self._condition.wait_for(lambda: self._in_flight == 0)
            staged, removed = dict(self._staged), set(self._removed)
            self._staged.clear()
            self._removed.clear()
        return staged, removed

    def commit(self) -> None:
        staged, removed = self._close()
        for target, temporary in staged.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
        for target in removed:
            target.unlink(missing_ok=True)

    def discard(self) -> None:
        staged, _ = self._close()
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(staging_dir: Path) -> Iterator[FileTransaction]:
    """A transaction committed when the block exits normally, discarded when it raises."""
    transaction = FileTransaction(staging_dir)
    try:
        yield transaction
    except BaseException:
        transaction.discard()
        raise
    transaction.commit()


@contextlib.contextmanager
def locked(directory: Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive lock on ``directory`` held across processes; without ``blocking``,
    BlockingIOError when another holds it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # closing releases the lock

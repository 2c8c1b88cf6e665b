"""Files written by storage adapters: staged, then moved into place all together.

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
from collections.abc import Iterator
from pathlib import Path
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


def write_temp_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to the new file ``path`` (the one place staged bytes reach the disk)."""
    with open(path, "xb") as file:
        file.write(data)


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
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` held across processes (blocking)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

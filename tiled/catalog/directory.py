"""A directory served through a catalog of its own (``tiled serve directory``).

The walk of :mod:`tiled.client.register` writes straight into the catalog in this process
(:class:`CatalogTarget`, no HTTP). The server answers while the first walk goes on, which
logs its progress; with ``watch`` the catalog then follows every change of the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..adapters.protocols import HasDataSources, supports
from ..client.register import (
    ExistingNode,
    KeyCollision,
    RegistrationRefused,
    Settings,
    Walker,
    watch,
)
from ..errors import Conflict, NotFound, TiledError
from .container import CatalogContainerBase, CatalogRootAdapter

logger = logging.getLogger(__name__)

PAGE = 500


# A node whose metadata the database refuses (NaN in PostgreSQL's JSONB, say) or cannot
# encode: an error of that node, not of the walk.
UNSTORABLE = (SQLAlchemyError, TypeError, ValueError)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _refusal(err: TiledError) -> RegistrationRefused:
    return KeyCollision(str(err)) if isinstance(err, Conflict) else RegistrationRefused(str(err))


class CatalogTarget:
    """Registration straight into a catalog (the server's own routes are not involved)."""

    def __init__(self, root: CatalogRootAdapter, *, files_read: bool = False):
        self.root = root
        # True when the walk's adapters are the catalog's: what it read need not be re-read.
        self.files_read = files_read

    async def _container(self, segments: Sequence[str]) -> CatalogContainerBase:
        try:
            node = await self.root.lookup_adapter(list(segments))
        except NotFound:
            raise KeyError("/".join(segments)) from None
        if not isinstance(node, CatalogContainerBase):
            raise KeyError("/".join(segments))
        return node

    async def children(self, segments: Sequence[str]) -> dict[str, ExistingNode]:
        container = await self._container(segments)
        found: dict[str, ExistingNode] = {}
        offset = 0
        while True:
            page = await container.items_range(offset, PAGE)
            for key, child in page:
                sources = child.data_sources() if supports(child, HasDataSources) else []
                found[key] = ExistingNode(
                    child.structure_family.value, [source.to_json() for source in sources]
                )
            if len(page) < PAGE:
                return found
            offset += PAGE

    async def _create(self, segments: Sequence[str], key: str, **node: Any) -> None:
        container = await self._container(segments)
        try:
            await container.create_node(key=key, **node)
        except TiledError as err:
            raise _refusal(err) from None
        except UNSTORABLE as err:
            raise RegistrationRefused(f"The catalog cannot store it: {_first_line(err)}") from None

    async def create_container(self, segments: Sequence[str], key: str) -> None:
        await self._create(segments, key, structure_family="container", metadata={}, specs=[])

    async def register(self, segments: Sequence[str], key: str, node: dict[str, Any]) -> None:
        await self._create(
            segments, key, structure_family=node["structure_family"],
            metadata=node.get("metadata") or {}, specs=node.get("specs") or [],
            data_sources=node.get("data_sources") or [], register=True,
        )  # fmt: skip

    async def register_many(
        self, segments: Sequence[str], nodes: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[BaseException | None]:
        container = await self._container(segments)
        children = [
            {"key": key, "structure_family": node["structure_family"],
             "metadata": node.get("metadata") or {}, "specs": node.get("specs") or [],
             "data_sources": node.get("data_sources") or []}
            for key, node in nodes
        ]  # fmt: skip
        try:
            errors = await container.register_children(children, files_read=self.files_read)
        except UNSTORABLE:
            # Something in one node (a value the database cannot hold) failed the whole
            # transaction: node by node, so that it refuses only itself.
            return [await self._one_by_one(segments, key, node) for key, node in nodes]
        return [None if err is None else _refusal(err) for err in errors]

    async def _one_by_one(
        self, segments: Sequence[str], key: str, node: dict[str, Any]
    ) -> BaseException | None:
        try:
            await self.register(segments, key, node)
        except RegistrationRefused as err:
            return err
        return None

    async def delete(self, segments: Sequence[str], key: str) -> None:
        container = await self._container(segments)
        try:
            node = await container.lookup_adapter([key])
            await node.delete(recursive=True)
        except NotFound:
            return
        except TiledError as err:
            raise RegistrationRefused(str(err)) from None


def temporary_catalog(
    directory: Path, adapters_by_mimetype: dict[str, Any] | None = None
) -> tuple[CatalogRootAdapter, Path]:
    """A new catalog in a temporary SQLite file, allowed to read ``directory`` only."""
    from . import from_uri

    database = Path(tempfile.mkdtemp(prefix="tiled-directory-")) / "catalog.db"
    tree = from_uri(
        f"sqlite:///{database}",
        readable_storage=[directory],
        init_if_not_exists=True,
        adapters_by_mimetype=adapters_by_mimetype,
        durable=False,  # rebuilt from the directory at every start: no need to wait for disks
    )
    return tree, database


def indexing_task(
    walker: Walker,
    *,
    follow: bool,
    progress_interval: float = 2.0,
    report: Callable[[str], None] = logger.warning,
) -> Callable[[], Any]:
    """The background task of a server serving ``walker``'s directory: the first walk, with
    its progress reported every ``progress_interval`` seconds, then (``follow``) changes."""

    async def index() -> None:
        finished = asyncio.Event()

        async def report_progress() -> None:
            while not finished.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(finished.wait(), progress_interval)
                if not finished.is_set():
                    report(f"Indexing {walker.root}: {walker.progress.summary()} so far")

        reporter = asyncio.create_task(report_progress())
        try:
            if follow:
                watcher = asyncio.create_task(watch(walker, initial_walk_complete=finished))
                await finished.wait()
                report(f"Indexed {walker.root}: {walker.progress.summary()}; watching for changes")
                await watcher
            else:
                await walker.run()
                finished.set()
                report(f"Indexed {walker.root}: {walker.progress.summary()}")
        except Exception:
            logger.exception("Indexing %s failed", walker.root)
        finally:
            finished.set()
            await reporter

    return index


def directory_tree(
    directory: str | Path,
    settings: Settings,
    *,
    follow: bool = False,
    adapters_by_mimetype: dict[str, Any] | None = None,
    report: Callable[[str], None] = logger.warning,
) -> tuple[CatalogRootAdapter, Path]:
    """The root of a catalog indexing ``directory`` (in the background once served) and the
    path of its database."""
    path = Path(directory).absolute()
    tree, database = temporary_catalog(path, adapters_by_mimetype)

    async def remove_catalog() -> None:  # after the catalog's own shutdown closed the database
        shutil.rmtree(database.parent, ignore_errors=True)

    tree.shutdown_tasks.append(remove_catalog)
    walker = Walker(CatalogTarget(tree, files_read=True), path, "/", settings)
    tree.background_tasks.append(indexing_task(walker, follow=follow, report=report))
    return tree, database


def index_directory(
    directory: str | Path,
    settings: Settings,
    *,
    adapters_by_mimetype: dict[str, Any] | None = None,
    report: Callable[[str], None] = logger.warning,
) -> Path:
    """Index ``directory`` into a new temporary catalog now, and return the path of its
    database (in a directory of its own, which the caller removes when done). For servers
    of several processes, which then share one finished index."""
    path = Path(directory).absolute()
    tree, database = temporary_catalog(path, adapters_by_mimetype)
    walker = Walker(CatalogTarget(tree, files_read=True), path, "/", settings)

    async def walk() -> None:
        for task in tree.startup_tasks:
            await task()
        try:
            await walker.run()
        finally:
            for task in tree.shutdown_tasks:
                await task()

    asyncio.run(walk())
    report(f"Indexed {path}: {walker.progress.summary()}")
    return database


__all__ = [
    "CatalogTarget", "directory_tree", "index_directory", "indexing_task", "temporary_catalog",
]  # fmt: skip

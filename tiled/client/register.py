"""Register a file or a directory tree with a Tiled catalog (``tiled register``).

The walk follows upstream Tiled's rules, so that a tree registered by either holds the same
nodes and data sources: a key is the file name without its suffixes (or with them, given
``key_from_filename=identity``); hidden files are skipped, and so (with a warning) are FIFOs,
sockets and devices, which opening could block on, and names that are not UTF-8 or hold
control characters, which no key or URI can carry; numbered images and arrays
(``img_001.tif``, ``img_002.tif``) form one node, one asset per file in name order; a
directory whose name gives a known format (``data.zarr``) is one node, any other directory a
container; a file whose format is unknown, or which its adapter cannot open, is skipped with
the reason logged; two files that would make the same key are both skipped.

Unlike upstream it is incremental: the nodes the catalog already holds are listed once per
directory, and a file whose node records the same URIs, sizes and modification time
(``properties["registered_stat"]``) is left alone without being opened. Changed files are
registered again, vanished ones unregistered. Directories and files are processed
concurrently, and ``watch`` re-walks only the directories where something changed.

Where the nodes go is a :class:`RegistrationTarget`: :class:`HTTPTarget` posts to a server's
``/api/v1/register``; ``tiled.catalog.directory`` writes to a catalog in-process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import logging
import mimetypes
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ..mimetypes import DEFAULT_MIMETYPES_BY_FILE_EXT, sequence_of
from ..structures.json import UnstorableValue, dumps, refuse
from ..utils import import_object

logger = logging.getLogger(__name__)

# The data source property in which a registration records what the files were like.
REGISTERED_STAT = "registered_stat"
# Files inside a registered directory (a zarr store) whose change changes what it holds.
DIRECTORY_DOCUMENTS = (".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json")

# --- keys, filters, formats ---------------------------------------------------------------------


def strip_suffixes(filename: str) -> str:
    """The key of a file: its name without suffixes (``a.tar.gz`` -> ``a``)."""
    path = Path(filename)
    length = sum(len(suffix) for suffix in path.suffixes)
    return str(path)[:-length] if length else filename


def identity(filename: str) -> str:
    """The key of a file: its whole name (``--keep-ext``)."""
    return filename


def default_filter(path: Path) -> bool:
    """Everything but hidden files and directories."""
    return not path.name.startswith(".")


def include_extensions(extensions: Iterable[str]) -> Callable[[Path], bool]:
    """A filter keeping directories and files with one of ``extensions`` (``.csv``)."""
    wanted = frozenset(extensions)

    def keep(path: Path) -> bool:
        return default_filter(path) and (path.is_dir() or path.suffix in wanted)

    return keep


def resolve_mimetype(
    path: Path,
    mimetypes_by_file_ext: Mapping[str, str],
    mimetype_detection_hook: Callable[[Path, str | None], str | None] | None = None,
) -> str | None:
    """The format of a file or directory: by its longest known compound suffix, else by the
    platform's table; then as ``mimetype_detection_hook(path, guess)`` says, if given."""
    suffixes = path.suffixes
    found = None
    for start in range(len(suffixes)):
        extension = "".join(suffixes[start:])  # ".tar.gz" before ".gz"
        if extension in mimetypes_by_file_ext:
            found = mimetypes_by_file_ext[extension]
            break
    else:
        found, _ = mimetypes.guess_type(str(path))
    if mimetype_detection_hook is not None:
        found = mimetype_detection_hook(path, found)
    return found


# Numbered files grouped into one node, by extension (the last suffix): upstream's patterns,
# and PNG, which this project reads as a sequence too.
_TIFF = re.compile(r"^(.*?)(\d+)\.(?:tif|tiff)$")
_JPEG = re.compile(r"^(.*?)(\d+)\.(?:jpg|jpeg)$")
SEQUENCE_PATTERNS = {
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
    ".npy": re.compile(r"^(.*?)(\d+)\.npy$"),
    ".png": re.compile(r"^(.*?)(\d+)\.png$"),
}
SEQUENCE_MIMETYPES = {
    ext: sequence_of(DEFAULT_MIMETYPES_BY_FILE_EXT[ext]) for ext in SEQUENCE_PATTERNS
}
UNNAMED_SEQUENCE = "_unnamed"
IMG_SEQUENCE_EMPTY_NAME_ROOT = UNNAMED_SEQUENCE  # upstream's name of the key above

# Formats whose adapters take a list of files (``data_uris``): one file is the list's first.
LIST_PARAMETER_MIMETYPES = frozenset(
    {
        "application/x-parquet",
        "text/csv",
        "text/csv;header=present",
        "text/csv;header=absent",
        "application/vnd.apache.arrow.file",
    }
)


@dataclass(frozen=True)
class Settings:
    """How files become nodes: adapters, formats by extension, keys and the filter."""

    adapters_by_mimetype: Mapping[str, Any]
    mimetypes_by_file_ext: Mapping[str, str]
    mimetype_detection_hook: Callable[[Path, str | None], str | None] | None
    key_from_filename: Callable[[str], str]
    filter: Callable[[Path], bool]

    @classmethod
    def init(
        cls,
        adapters_by_mimetype: Mapping[str, Any] | None = None,
        mimetypes_by_file_ext: Mapping[str, str] | None = None,
        mimetype_detection_hook: Callable | str | None = None,
        key_from_filename: Callable[[str], str] | str | None = None,
        filter: Callable[[Path], bool] | str | None = None,
    ) -> Settings:
        """Settings from options, objects or import paths (``package.module:name``), each
        given table taking precedence over the defaults."""
        from ..catalog.mimetypes import AdapterRegistry

        if isinstance(mimetype_detection_hook, str):
            mimetype_detection_hook = import_object(mimetype_detection_hook)
        if isinstance(key_from_filename, str):
            key_from_filename = import_object(key_from_filename)
        if isinstance(filter, str):
            filter = import_object(filter)
        return cls(
            adapters_by_mimetype=AdapterRegistry.default(adapters_by_mimetype),
            mimetypes_by_file_ext=collections.ChainMap(
                dict(mimetypes_by_file_ext or {}), DEFAULT_MIMETYPES_BY_FILE_EXT
            ),
            mimetype_detection_hook=mimetype_detection_hook,
            key_from_filename=key_from_filename or strip_suffixes,
            filter=filter or default_filter,
        )

    def mimetype_of(self, path: Path) -> str | None:
        return resolve_mimetype(path, self.mimetypes_by_file_ext, self.mimetype_detection_hook)


# --- what the catalog holds, and where nodes go ------------------------------------------------


@dataclass(frozen=True)
class ExistingNode:
    """A child as the catalog lists it: its family and data sources (as JSON)."""

    structure_family: str
    data_sources: list[dict[str, Any]]

    @property
    def is_catalog_container(self) -> bool:
        return self.structure_family == "container" and not self.data_sources

    @property
    def is_registered(self) -> bool:
        return bool(self.data_sources) and self.data_sources[0].get("management") != "writable"

    def registered_from(self, directory: Path) -> bool:
        """Whether this node was registered from files in ``directory`` (so a walk of that
        directory owns it); nodes registered from elsewhere or written by clients are not."""
        if not self.is_registered:
            return False
        from ..adapters.files import path_from_uri

        root = directory.resolve()
        assets = [a for s in self.data_sources for a in s.get("assets") or ()]
        try:
            paths = [path_from_uri(asset["data_uri"]).resolve() for asset in assets]
        except (KeyError, TypeError, ValueError, OSError):
            return False
        return bool(paths) and all(path.is_relative_to(root) for path in paths)


class RegistrationRefused(Exception):
    """The catalog refused a node (the reason is the message)."""


class KeyCollision(RegistrationRefused):
    """The catalog already has a node by that key."""


def _children_page_query(offset: int, limit: int) -> dict[str, Any]:
    """One page of a container's children, with what registration compares against."""
    return {
        "page[offset]": offset, "page[limit]": limit, "fields": "structure_family",
        "include_data_sources": "true", "omit_links": "true",
    }  # fmt: skip


def _collect_children(
    found: dict[str, ExistingNode], page: dict[str, Any], offset: int
) -> int | None:
    """Add a page's children to ``found``; the offset of the next page, None after the last."""
    for item in page["data"]:
        attributes = item["attributes"]
        found[item["id"]] = ExistingNode(
            attributes.get("structure_family") or "container",
            attributes.get("data_sources") or [],
        )
    offset += len(page["data"])
    if not page["data"] or offset >= page["meta"]["count"]:
        return None
    return offset


class RegistrationTarget(Protocol):
    """Where registered nodes go: a server over HTTP, or a catalog in this process."""

    async def children(self, segments: Sequence[str]) -> dict[str, ExistingNode]:
        """The children of the container at ``segments``; KeyError if there is none."""
        ...

    async def create_container(self, segments: Sequence[str], key: str) -> None: ...

    async def register(self, segments: Sequence[str], key: str, node: dict[str, Any]) -> None:
        """Create the child ``key`` from the node's JSON (structure family, metadata, specs,
        data sources), as ``POST /api/v1/register`` takes it."""
        ...

    async def register_many(
        self, segments: Sequence[str], nodes: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[BaseException | None]:
        """Register several children ``(key, node)`` of one container; per child, in order,
        None or the error (:class:`KeyCollision`, :class:`RegistrationRefused`) refusing it."""
        ...

    async def delete(self, segments: Sequence[str], key: str) -> None: ...


def _json_request(body: dict[str, Any]) -> dict[str, Any]:
    # Attributes read from files (HDF5, TIFF tags) are often numpy values or NaN: they are
    # sent by the metadata rule every route of the server writes them by.
    try:
        content = dumps(body, refuse)
    except UnstorableValue as err:
        # A value of this node alone (bytes that are not UTF-8, say): the node is refused,
        # as the server would refuse it, and the walk goes on.
        raise RegistrationRefused(f"Its metadata cannot be sent: {err}") from None
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def _url_path(segments: Sequence[str]) -> str:
    return "/".join(quote(segment, safe="") for segment in segments)


class HTTPTarget:
    """A Tiled server's ``/api/v1`` (this server's or upstream's), with an API key."""

    PAGE = 300

    def __init__(self, uri: str, api_key: str | None = None, *, concurrency: int = 8):
        import httpx

        base, _, query = uri.partition("?")
        if api_key is None and "api_key=" in query:
            api_key = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("api_key")
        base = base.rstrip("/")
        self.api = base if base.endswith("/api/v1") else f"{base}/api/v1"
        headers = {"Authorization": f"Apikey {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.AsyncClient(headers=headers, timeout=120, limits=limits)
        self.requests = collections.Counter()  # method -> how many were sent

    async def __aenter__(self) -> HTTPTarget:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        self.requests[method] += 1
        response = await self.client.request(method, f"{self.api}/{path}", **kwargs)
        if response.status_code == 409:
            raise KeyCollision(_detail(response))
        if response.status_code == 404 and method == "GET":
            raise KeyError(path)
        if 400 <= response.status_code < 500:
            raise RegistrationRefused(f"{response.status_code}: {_detail(response)}")
        response.raise_for_status()
        return response.json() if response.content else None

    async def children(self, segments: Sequence[str]) -> dict[str, ExistingNode]:
        found: dict[str, ExistingNode] = {}
        offset: int | None = 0
        while offset is not None:
            params = _children_page_query(offset, self.PAGE)
            page = await self._send("GET", f"search/{_url_path(segments)}", params=params)
            offset = _collect_children(found, page, offset)
        return found

    async def _post(self, route: str, segments: Sequence[str], body: dict[str, Any]) -> None:
        await self._send("POST", f"{route}/{_url_path(segments)}", **_json_request(body))

    async def create_container(self, segments: Sequence[str], key: str) -> None:
        body = {"id": key, "structure_family": "container", "metadata": {}, "specs": []}
        await self._post("metadata", segments, {**body, "data_sources": []})

    async def register(self, segments: Sequence[str], key: str, node: dict[str, Any]) -> None:
        await self._post("register", segments, {"id": key, **node})

    async def register_many(
        self, segments: Sequence[str], nodes: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[BaseException | None]:
        # One request per node, as many at once as the connection pool allows.
        return await asyncio.gather(
            *(self.register(segments, key, node) for key, node in nodes), return_exceptions=True
        )

    async def delete(self, segments: Sequence[str], key: str) -> None:
        path = _url_path([*segments, key])
        await self._send("DELETE", f"metadata/{path}", params={"recursive": "true"})


class ClientTarget:
    """The container a node client (``tiled.client.container.Container``) reads, through
    that client's context: what upstream's ``register(client, path)`` registers into.

    The client is synchronous, so each request runs in a worker thread; registrations of one
    batch are sent one after the other over it.
    """

    PAGE = 300

    def __init__(self, container: Any):
        self.context = container.context
        self.root = tuple(container.path_parts)

    async def __aenter__(self) -> ClientTarget:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        pass

    def _path(self, segments: Sequence[str]) -> str:
        return _url_path([*self.root, *segments])

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        from .utils import ClientError

        try:
            response = self.context.request(method, path, **kwargs)
        except ClientError as err:
            status = getattr(err, "status_code", None)
            if status == 409:
                raise KeyCollision(str(err)) from None
            if status == 404 and method == "GET":
                raise KeyError(path) from None
            if status is not None and 400 <= status < 500:
                raise RegistrationRefused(f"{status}: {err}") from None
            raise
        return response.json() if response.content else None

    def _children(self, segments: Sequence[str]) -> dict[str, ExistingNode]:
        found: dict[str, ExistingNode] = {}
        offset: int | None = 0
        while offset is not None:
            params = _children_page_query(offset, self.PAGE)
            page = self._send("GET", f"search/{self._path(segments)}", params=params)
            offset = _collect_children(found, page, offset)
        return found

    async def children(self, segments: Sequence[str]) -> dict[str, ExistingNode]:
        return await asyncio.to_thread(self._children, segments)

    def _post(self, route: str, segments: Sequence[str], body: dict[str, Any]) -> None:
        self._send("POST", f"{route}/{self._path(segments)}", **_json_request(body))

    async def create_container(self, segments: Sequence[str], key: str) -> None:
        body = {"id": key, "structure_family": "container", "metadata": {}, "specs": []}
        await asyncio.to_thread(self._post, "metadata", segments, {**body, "data_sources": []})

    async def register(self, segments: Sequence[str], key: str, node: dict[str, Any]) -> None:
        await asyncio.to_thread(self._post, "register", segments, {"id": key, **node})

    async def register_many(
        self, segments: Sequence[str], nodes: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[BaseException | None]:
        def send_all() -> list[BaseException | None]:
            outcomes: list[BaseException | None] = []
            for key, node in nodes:
                try:
                    self._post("register", segments, {"id": key, **node})
                    outcomes.append(None)
                except RegistrationRefused as err:
                    outcomes.append(err)
            return outcomes

        return await asyncio.to_thread(send_all)

    async def delete(self, segments: Sequence[str], key: str) -> None:
        path = self._path([*segments, key])
        await asyncio.to_thread(
            self._send, "DELETE", f"metadata/{path}", params={"recursive": "true"}
        )


def as_target(target: Any) -> RegistrationTarget:
    """``target`` as a registration target: a node client is wrapped in a
    :class:`ClientTarget`; targets (``HTTPTarget``, a catalog's) are used as they are."""
    if hasattr(target, "register_many"):
        return target
    if hasattr(target, "context") and hasattr(target, "path_parts"):
        return ClientTarget(target)
    raise TypeError(f"Cannot register into {type(target).__name__}: not a container client")


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text or response.reason_phrase)


# --- what the walk finds ------------------------------------------------------------------------


def file_uri(path: Path) -> str:
    """The URI of a file as upstream writes it (``file://localhost`` + the absolute path);
    characters that would end a URI's path, or that URL parsers drop (a newline, a tab), are
    percent-encoded."""
    text = str(path.absolute())
    if any(char in "%#?" or _is_control(char) for char in text):
        text = quote(text)
    return f"file://localhost{text}"


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


# File types the walk never opens: reading a FIFO (or a character device) waits for a writer
# forever, and a socket cannot be opened at all.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def unwalkable(path: Path | os.DirEntry) -> str | None:
    """Why the walk leaves ``path`` alone although a filter kept it, or None: its name cannot
    be a key or a URI (not UTF-8, or holding a control character), or it is neither a regular
    file nor a directory (symbolic links followed). The one check every walked path passes."""
    name = path.name
    try:
        name.encode()
    except UnicodeEncodeError:  # undecodable bytes, which Python holds as lone surrogates
        return "its name is not UTF-8 text"
    if any(_is_control(char) for char in name):
        return "its name holds a control character (a newline, a tab, ...)"
    try:
        if isinstance(path, os.DirEntry) and (path.is_file() or path.is_dir()):
            return None  # known from the listing, mostly with no further system call
        mode = path.stat().st_mode
    except OSError as err:  # a broken link, a loop of links, no permission
        return f"it cannot be followed: {err.strerror or err}"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), "not a regular file")
    return f"it is {kind}"


def _shown(path: Path) -> str:
    """``path`` for a log line: quoted as Python would when printing it would break the line
    or fail (a newline, bytes that are not UTF-8, in a directory's name)."""
    text = str(path)
    try:
        text.encode()
    except UnicodeEncodeError:
        return repr(os.fsencode(text))
    return repr(text) if any(_is_control(char) for char in text) else f"'{text}'"


@dataclass(frozen=True)
class Item:
    """One node to register: a file, a numbered sequence of files, or a directory (a store)."""

    key: str
    mimetype: str
    paths: tuple[Path, ...]
    is_directory: bool = False
    is_sequence: bool = False
    sizes: tuple[int | None, ...] = ()
    stat: dict[str, int] = field(default_factory=dict)
    # Keyword arguments of the format's adapter (``sep`` of a CSV, ``dataset`` of an HDF5).
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def uris(self) -> list[str]:
        return [file_uri(path) for path in self.paths]

    @property
    def takes_a_list(self) -> bool:
        return self.is_sequence or self.mimetype in LIST_PARAMETER_MIMETYPES

    def assets(self) -> list[dict[str, Any]]:
        parameter = "data_uris" if self.takes_a_list else "data_uri"
        return [
            {"data_uri": uri, "is_directory": self.is_directory, "parameter": parameter,
             "num": number if self.takes_a_list else None, "size": size}
            for number, (uri, size) in enumerate(zip(self.uris, self.sizes, strict=True))
        ]  # fmt: skip

    def unchanged_in(self, existing: ExistingNode | None) -> bool:
        """Whether ``existing`` was registered from these very files, as they are now."""
        if existing is None or len(existing.data_sources) != 1:
            return False
        source = existing.data_sources[0]
        assets = sorted(source.get("assets") or [], key=lambda a: a.get("num") or 0)
        return (
            source.get("mimetype") == self.mimetype
            and [a.get("data_uri") for a in assets] == self.uris
            and [a.get("size") for a in assets] == list(self.sizes)
            and (source.get("properties") or {}).get(REGISTERED_STAT) == self.stat
        )


def _stat_signature(stats: Sequence[os.stat_result], sizes: Sequence[int | None]) -> dict:
    return {
        "mtime_ns": max(s.st_mtime_ns for s in stats),
        "size": sum(size for size in sizes if size is not None),
    }


def file_item(key: str, mimetype: str, paths: Sequence[Path], is_sequence: bool) -> Item:
    stats = [path.stat() for path in paths]
    sizes = tuple(s.st_size for s in stats)
    return Item(
        key, mimetype, tuple(paths), False, is_sequence, sizes, _stat_signature(stats, sizes)
    )


def directory_item(key: str, mimetype: str, path: Path) -> Item:
    documents = (path / name for name in DIRECTORY_DOCUMENTS)
    stats = [path.stat(), *(d.stat() for d in documents if d.exists())]
    return Item(key, mimetype, (path,), True, False, (None,), _stat_signature(stats, ()))


@dataclass
class DirectoryPlan:
    """What one directory holds, as nodes: items to register and subdirectories to walk."""

    items: list[Item] = field(default_factory=list)
    directories: dict[str, Path] = field(default_factory=dict)  # key -> subdirectory
    skipped_keys: set[str] = field(default_factory=set)  # colliding keys: no node at all
    skipped_files: int = 0  # of no known format, or vanished


def _loops_back(link: Path, directory: Path) -> bool:
    """Whether the directory ``link`` points to holds ``directory`` (walking it never ends)."""
    try:
        return directory.resolve().is_relative_to(link.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a loop of links that resolves to nothing
        return True


def plan_directory(directory: Path, settings: Settings) -> DirectoryPlan:
    """Group and name what ``directory`` holds (blocking: lists and stats it)."""
    files, directories = [], []
    plan = DirectoryPlan()
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = Path(entry.path)
        if not settings.filter(path):
            continue
        reason = unwalkable(entry)
        if reason is not None:
            logger.warning("    SKIPPED: %s: %s", _shown(path), reason)
            plan.skipped_files += 1
            continue
        is_directory = entry.is_dir()
        if is_directory and entry.is_symlink() and _loops_back(path, directory):
            logger.info("    SKIPPED: '%s' links back to a directory that holds it", path)
            plan.skipped_files += 1
            continue
        (directories if is_directory else files).append(path)
    by_key: dict[str, list[Any]] = collections.defaultdict(list)
    # Numbered files of one name and one format are a sequence: frame0.tif and frame0.png
    # are two sequences (and so two nodes named alike: a collision), never one of mixed files.
    sequences: dict[tuple[str, str], list[Path]] = collections.defaultdict(list)
    singles = []
    for path in files:
        suffix = path.suffixes[-1] if path.suffixes else ""
        pattern = SEQUENCE_PATTERNS.get(suffix)
        match = pattern.match(path.name) if pattern is not None and path.is_file() else None
        if match:
            name = match.group(1) or UNNAMED_SEQUENCE
            sequences[(name, SEQUENCE_MIMETYPES[suffix])].append(path)
        else:
            singles.append(path)
    for (name, mimetype), members in sequences.items():
        members.sort()
        logger.info("    Grouped %d files into a sequence %r", len(members), name)
        by_key[settings.key_from_filename(name)].append((mimetype, members, True))
    for path in singles:
        mimetype = settings.mimetype_of(path)
        if mimetype is None:
            logger.info("    SKIPPED: Could not resolve mimetype for '%s'", path)
            plan.skipped_files += 1
            continue
        if mimetype not in settings.adapters_by_mimetype:
            logger.info("    SKIPPED: No adapter for mimetype '%s' of '%s'", mimetype, path)
            plan.skipped_files += 1
            continue
        by_key[settings.key_from_filename(path.name)].append((mimetype, [path], False))
    for path in directories:
        mimetype = settings.mimetype_of(path)
        key = settings.key_from_filename(path.name)
        if mimetype is not None and mimetype in settings.adapters_by_mimetype:
            by_key[key].append((mimetype, [path], None))  # a store, registered as one node
        else:
            by_key[key].append((None, [path], None))
    for key, found in by_key.items():
        if len(found) > 1:
            names = [str(p) for _, paths, _ in found for p in paths[:1]]
            logger.warning("    COLLISION: %s would all be the node %r. Skipping all.", names, key)
            plan.skipped_keys.add(key)
            continue
        ((mimetype, paths, is_sequence),) = found
        try:
            if is_sequence is None and mimetype is None:
                plan.directories[key] = paths[0]
            elif is_sequence is None:
                plan.items.append(directory_item(key, mimetype, paths[0]))
            else:
                plan.items.append(file_item(key, mimetype, paths, is_sequence))
        except OSError as err:  # vanished or unreadable between listing and stat
            logger.warning("    SKIPPED: Cannot stat %s: %s", _shown(paths[0]), err.strerror or err)
            plan.skipped_files += 1
    return plan


def describe(item: Item, settings: Settings) -> dict[str, Any]:
    """The node registering ``item`` (blocking: opens the files with the format's adapter, as
    the server will): structure family, structure, metadata, specs, data source."""
    from ..catalog.registered import NodeView, found_structure, read_files
    from ..structures.core import StructureFamily
    from ..structures.data_source import Asset, DataSource

    assets = [Asset.from_json(asset) for asset in item.assets()]
    # The family is what the files turn out to hold; the placeholder is not read.
    source = DataSource(
        StructureFamily.container, None, mimetype=item.mimetype,
        parameters=dict(item.parameters), assets=assets,
    )  # fmt: skip
    node = NodeView({}, [], StructureFamily.container)
    adapter, _ = read_files(settings.adapters_by_mimetype, source, node)
    family = StructureFamily(adapter.structure_family)
    structure = found_structure(family, adapter)
    metadata = adapter.metadata()
    return {
        "structure_family": family.value,
        "metadata": dict(metadata() if callable(metadata) else metadata or {}),
        "specs": [spec.to_json() for spec in adapter.specs],
        "data_sources": [
            {
                "structure_family": family.value,
                "structure": structure.to_json() if hasattr(structure, "to_json") else structure,
                "mimetype": item.mimetype,
                "parameters": dict(item.parameters),
                "properties": {REGISTERED_STAT: item.stat},
                "management": "external",
                "assets": item.assets(),
            }
        ],
    }


class MissingFile(FileNotFoundError, ValueError):
    """A file or directory to register that does not exist: a FileNotFoundError, as
    upstream's client raises (opening it), and a ValueError, as this client raised."""


def _local_path(uri: str | Path) -> Path:
    """The file a path or a ``file:`` URI names."""
    text = str(uri)
    if "://" in text or text.startswith("file:"):
        from ..adapters.files import path_from_uri

        return Path(path_from_uri(text))
    return Path(text)


def item_for_uris(
    uris: Sequence[str | Path],
    mimetype: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Item:
    """The one node that the files (or one directory) ``uris`` make together, as
    ``Container.register`` registers them: several files are one dataset (a stack of
    images, the partitions of a table), in the order given. The format is ``mimetype`` or
    found from the names; ValueError when none is known, or no adapter reads it; a
    :class:`MissingFile` (a FileNotFoundError and a ValueError) for a path that does not
    exist."""
    if not uris:
        raise ValueError("Provide at least one URI or file path to register.")
    settings = settings or Settings.init()
    paths = [_local_path(uri).absolute() for uri in uris]
    for path in paths:
        if not path.exists():
            raise MissingFile(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        reason = unwalkable(path)
        if reason is not None:
            raise ValueError(f"Cannot register {_shown(path)}: {reason}")
    is_sequence = False
    if mimetype is None:
        found = {settings.mimetype_of(path) for path in paths}
        if len(found) != 1 or None in found:
            names = ", ".join(p.name for p in paths)
            raise ValueError(f"Cannot tell the format of {names}; give mimetype=")
        (mimetype,) = found
        suffix = paths[0].suffixes[-1] if paths[0].suffixes else ""
        # Several images or arrays are a stack: the sequence format of their extension.
        if len(paths) > 1 and mimetype not in LIST_PARAMETER_MIMETYPES:
            if suffix in SEQUENCE_MIMETYPES:
                mimetype, is_sequence = SEQUENCE_MIMETYPES[suffix], True
    if mimetype not in settings.adapters_by_mimetype:
        raise ValueError(f"No adapter is registered for mimetype {mimetype!r}.")
    if mimetype in SEQUENCE_MIMETYPES.values() or len(paths) > 1:
        is_sequence = is_sequence or mimetype not in LIST_PARAMETER_MIMETYPES
    if len(paths) == 1 and paths[0].is_dir():
        item = directory_item("", mimetype, paths[0])
    else:
        item = file_item("", mimetype, paths, is_sequence)
    return dataclasses.replace(item, parameters=dict(parameters or {}))


# --- the walk ------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a walk has done so far (for progress reports and tests)."""

    registered: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    directories: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        return (
            f"{self.registered} registered, {self.unchanged} unchanged, {self.skipped} skipped, "
            f"{self.removed} removed, in {self.directories} directories "
            f"({time.monotonic() - self.started:.1f} s)"
        )


class _Batches:
    """Registrations gathered per container and sent to the target together: a batch leaves
    when it is full or when no new node has joined it for a moment, so the first nodes of a
    long walk are visible early and the rest cost one transaction per batch, not per node."""

    def __init__(self, target: RegistrationTarget, size: int = 250, linger: float = 0.02):
        self.target = target
        self.size = size
        self.linger = linger
        self._pending: dict[tuple[str, ...], list[tuple[str, dict, asyncio.Future]]] = {}
        self._timers: dict[tuple[str, ...], asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task] = set()

    async def register(self, segments: tuple[str, ...], key: str, node: dict[str, Any]) -> None:
        future = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(segments, [])
        batch.append((key, node, future))
        if len(batch) >= self.size:
            self._send(segments)
        else:
            timer = self._timers.pop(segments, None)
            if timer is not None:
                timer.cancel()
            self._timers[segments] = asyncio.get_running_loop().call_later(
                self.linger, self._send, segments
            )
        await future

    def _send(self, segments: tuple[str, ...]) -> None:
        timer = self._timers.pop(segments, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(segments, [])
        if batch:
            task = asyncio.create_task(self._deliver(segments, batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(
        self, segments: tuple[str, ...], batch: list[tuple[str, dict, asyncio.Future]]
    ) -> None:
        try:
            outcomes = await self.target.register_many(
                segments, [(key, node) for key, node, _ in batch]
            )
        except BaseException as err:  # the whole batch failed: each waiter hears why
            outcomes = [err] * len(batch)
        for (_, _, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)


class Walker:
    """Registers the tree at ``path`` under ``prefix`` of a target, incrementally."""

    def __init__(
        self,
        target: RegistrationTarget,
        path: str | Path,
        prefix: str = "/",
        settings: Settings | None = None,
        concurrency: int = 4,
    ):
        self.target = target
        self.root = Path(path).absolute()
        self.prefix = tuple(segment for segment in prefix.split("/") if segment)
        self.settings = settings or Settings.init()
        self.progress = Progress()
        self._slots = asyncio.Semaphore(concurrency)  # files opened at once
        self._batches = _Batches(target)
        self._directory_items: set[Path] = set()  # directories registered as one node (stores)

    # --- entry points ---

    async def run(self) -> Progress:
        """Register the whole tree (unchanged files cost a stat each)."""
        self.progress = Progress()
        await self._ensure_prefix()
        if self.root.is_dir():
            item = self._root_as_item()
            if item is None or not await self._ensure_item(
                self.prefix, item, await self._child(item.key)
            ):
                await self._walk_directory(self.root, self.prefix, recursive=True)
        elif self.root.exists():
            plan = await asyncio.to_thread(self._plan_single_file)
            for item in plan:
                await self._ensure_item(self.prefix, item, await self._child(item.key))
        else:
            raise FileNotFoundError(f"No such file or directory: '{self.root}'")
        logger.info("Walked '%s': %s", self.root, self.progress.summary())
        return self.progress

    async def rewalk(self, changed: Iterable[str | Path]) -> Progress:
        """Reflect changes at the paths ``changed``: only their directories are walked again."""
        self.progress = Progress()
        if not self.root.is_dir():
            return await self.run()
        directories = {d for d in map(self._walked_directory_of, map(Path, changed)) if d}
        for directory in sorted(directories):
            segments = self._segments_of(directory)
            try:
                await self._walk_directory(directory, segments, recursive=False)
            except KeyError:  # its container is gone or was never made: walk from the top
                return await self.run()
        return self.progress

    # --- helpers ---

    async def _ensure_prefix(self) -> None:
        for depth, segment in enumerate(self.prefix):
            parent = self.prefix[:depth]
            if segment not in await self.target.children(parent):
                try:
                    await self.target.create_container(parent, segment)
                except KeyCollision:
                    pass  # made meanwhile by someone else: as good

    async def _child(self, key: str) -> ExistingNode | None:
        return (await self.target.children(self.prefix)).get(key)

    def _root_as_item(self) -> Item | None:
        mimetype = self.settings.mimetype_of(self.root)
        if mimetype is None or mimetype not in self.settings.adapters_by_mimetype:
            return None
        return directory_item(self.settings.key_from_filename(self.root.name), mimetype, self.root)

    def _plan_single_file(self) -> list[Item]:
        reason = unwalkable(self.root)
        if reason is not None:
            logger.warning("    SKIPPED: %s: %s", _shown(self.root), reason)
            self.progress.skipped += 1
            return []
        mimetype = self.settings.mimetype_of(self.root)
        if mimetype is None or mimetype not in self.settings.adapters_by_mimetype:
            logger.info("    SKIPPED: Could not resolve an adapter for '%s'", self.root)
            self.progress.skipped += 1
            return []
        key = self.settings.key_from_filename(self.root.name)
        return [file_item(key, mimetype, [self.root], False)]

    def _segments_of(self, directory: Path) -> tuple[str, ...]:
        parts = directory.relative_to(self.root).parts
        return (*self.prefix, *(self.settings.key_from_filename(part) for part in parts))

    def _walked_directory_of(self, path: Path) -> Path | None:
        """The walked directory whose listing a change at ``path`` alters (None: no node does,
        e.g. a hidden file)."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        if not relative.parts:
            return self.root
        if not all(self.settings.filter(self.root.joinpath(*relative.parts[: n + 1]))
                   for n in range(len(relative.parts))):  # fmt: skip
            return None
        directory = path.parent
        # A change inside a store (a zarr directory) re-registers the store, from its parent.
        for ancestor in (directory, *directory.parents):
            if ancestor in self._directory_items:
                directory = ancestor.parent
            if ancestor == self.root:
                break
        while directory != self.root and not directory.is_dir():
            directory = directory.parent
        return directory

    async def _walk_directory(
        self, directory: Path, segments: tuple[str, ...], recursive: bool
    ) -> None:
        """Make the container at ``segments`` hold what ``directory`` holds."""
        logger.info("  Walking '%s'", directory)
        existing, plan = await asyncio.gather(
            self.target.children(segments),
            asyncio.to_thread(plan_directory, directory, self.settings),
        )
        self.progress.directories += 1
        self.progress.skipped += plan.skipped_files + len(plan.skipped_keys)
        planned = {item.key for item in plan.items} | set(plan.directories)
        work = [self._ensure_item(segments, item, existing.get(item.key)) for item in plan.items]
        work += [
            self._ensure_directory(path, segments, key, existing.get(key), recursive)
            for key, path in plan.directories.items()
        ]
        # What the directory no longer holds: only what a walk of it registered is removed;
        # nodes written by clients, or registered from elsewhere, stay.
        work += [
            self._remove(segments, key)
            for key, node in existing.items()
            if key not in planned and node.registered_from(directory)
        ]
        work += [
            self._prune(directory / key, (*segments, key))
            for key, node in existing.items()
            if key not in planned and node.is_catalog_container
        ]
        results = await _together(work)
        # A store that could not be opened is walked as a directory instead (as upstream does).
        fallbacks = [
            self._ensure_directory(item.paths[0], segments, item.key, existing.get(item.key), True)
            for item, ok in zip(plan.items, results, strict=False)
            if item.is_directory and ok is False
        ]
        await _together(fallbacks)

    async def _prune(self, directory: Path, segments: tuple[str, ...]) -> None:
        """A container whose directory is gone: remove what was registered from it, at every
        depth, then the container itself if that left it empty (a container that holds
        anything else, or was empty to begin with, stays)."""
        try:
            existing = await self.target.children(segments)
        except KeyError:
            return
        if not existing:
            return
        await _together([
            *(self._remove(segments, key) for key, node in existing.items()
              if node.registered_from(directory)),
            *(self._prune(directory / key, (*segments, key)) for key, node in existing.items()
              if node.is_catalog_container),
        ])  # fmt: skip
        if not await self.target.children(segments):
            await self._remove(segments[:-1], segments[-1])

    async def _remove(self, segments: tuple[str, ...], key: str, replaced: bool = False) -> None:
        where = "/".join((*segments, key))
        try:
            await self.target.delete(segments, key)
        except RegistrationRefused as err:
            logger.warning("    Could not remove '/%s': %s", where, err)
            return
        if not replaced:
            logger.info("    Removed '/%s' (its files are gone or unreadable)", where)
            self.progress.removed += 1

    async def _ensure_directory(
        self,
        path: Path,
        segments: tuple[str, ...],
        key: str,
        existing: ExistingNode | None,
        recursive: bool,
    ) -> None:
        self._directory_items.discard(path)
        if existing is not None and existing.is_catalog_container:
            if recursive:
                await self._walk_directory(path, (*segments, key), recursive=True)
            return
        if existing is not None:
            await self._remove(segments, key, replaced=True)
        try:
            await self.target.create_container(segments, key)
        except RegistrationRefused as err:
            logger.warning("    SKIPPED: Directory %s cannot be a node: %s", _shown(path), err)
            self.progress.skipped += 1
            return
        await self._walk_directory(path, (*segments, key), recursive=True)

    async def _ensure_item(
        self, segments: tuple[str, ...], item: Item, existing: ExistingNode | None
    ) -> bool:
        """Register ``item`` unless ``existing`` already is it; False if it could not be read."""
        if item.is_directory:
            self._directory_items.add(item.paths[0])
        if item.unchanged_in(existing):
            self.progress.unchanged += 1
            return True
        where = "/".join((*segments, item.key))
        try:
            async with self._slots:
                node = await asyncio.to_thread(describe, item, self.settings)
        except Exception as err:
            # One line per skipped file; the traceback only for whoever debugs an adapter.
            logger.warning(
                "    SKIPPED: Cannot read %s as %s: %s", _shown(item.paths[0]), item.mimetype,
                _one_line(err),
            )  # fmt: skip
            logger.debug("Reading '%s' failed", item.paths[0], exc_info=True)
            self.progress.skipped += 1
            if existing is not None and existing.is_registered:
                await self._remove(segments, item.key)
            if item.is_directory:
                self._directory_items.discard(item.paths[0])
            return False
        if existing is not None:
            await self._remove(segments, item.key, replaced=True)
        try:
            await self._batches.register(segments, item.key, node)
        except KeyCollision:
            logger.warning("    COLLISION: '/%s' exists already; not replaced.", where)
            self.progress.skipped += 1
            return True
        except RegistrationRefused as err:
            logger.warning("    SKIPPED: The catalog refused %s: %s", _shown(item.paths[0]), err)
            self.progress.skipped += 1
            return True
        logger.info("    Registered '/%s' (%s)", where, item.mimetype)
        self.progress.registered += 1
        return True


async def _together(work: Iterable[Any]) -> list[Any]:
    """The results of ``work`` run concurrently. If one fails (the server is gone), the rest
    are cancelled and awaited before its error is raised: a request left running would end
    in ``asyncio.run``'s shutdown, which prints each one's error as unhandled."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in work]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# --- upstream's entry points -------------------------------------------------------------------


async def register(
    target: RegistrationTarget | Any,
    path: str | Path,
    prefix: str = "/",
    *,
    adapters_by_mimetype: Mapping[str, Any] | None = None,
    mimetypes_by_file_ext: Mapping[str, str] | None = None,
    mimetype_detection_hook: Callable | str | None = None,
    key_from_filename: Callable[[str], str] | str | None = None,
    filter: Callable[[Path], bool] | str | None = None,
    concurrency: int = 8,
) -> Progress:
    """Register the file or directory ``path`` (recursively) under ``prefix`` of ``target``:
    a :class:`RegistrationTarget`, or a container client (as upstream's ``register(node,
    path)``), whose server must be able to read ``path`` (its ``readable_storage``)."""
    settings = Settings.init(
        adapters_by_mimetype, mimetypes_by_file_ext, mimetype_detection_hook,
        key_from_filename, filter,
    )  # fmt: skip
    return await Walker(as_target(target), path, prefix, settings, concurrency).run()


async def watch(
    walker: Walker,
    *,
    initial_walk_complete: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Walk once, then reflect every change under the walker's path until ``stop`` is set.

    Watching starts before the first walk, so nothing changed meanwhile is missed; changes
    are handled in batches, each re-walking only the directories it touched.
    """
    import watchfiles

    stop = stop or asyncio.Event()
    changes: asyncio.Queue[set[tuple[Any, str]]] = asyncio.Queue()
    watching = asyncio.Event()

    async def listen() -> None:
        root = walker.root if walker.root.is_dir() else walker.root.parent

        def keep(change: Any, path: str) -> bool:
            return walker.settings.filter(Path(path))

        watcher = watchfiles.awatch(root, watch_filter=keep, stop_event=stop, yield_on_timeout=True)
        watching.set()
        async for batch in watcher:
            if batch:
                await changes.put(batch)

    listener = asyncio.create_task(listen())
    try:
        await watching.wait()
        await walker.run()
        if initial_walk_complete is not None:
            initial_walk_complete.set()
        logger.info("Watching for changes in '%s'", walker.root)
        while not stop.is_set():
            getting = asyncio.ensure_future(changes.get())
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if getting not in done:
                getting.cancel()
                break
            batch = set(getting.result())
            while not changes.empty():
                batch |= changes.get_nowait()
            for change, path in sorted(batch, key=lambda c: c[1]):
                logger.info("  %s '%s'", getattr(change, "name", change), path)
            try:
                await walker.rewalk(path for _, path in batch)
            except Exception:
                logger.exception("Could not reflect changes; will try again on the next ones")
    finally:
        stop.set()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener


__all__ = [
    "IMG_SEQUENCE_EMPTY_NAME_ROOT",
    "ClientTarget",
    "ExistingNode",
    "HTTPTarget",
    "Item",
    "KeyCollision",
    "MissingFile",
    "Progress",
    "RegistrationRefused",
    "RegistrationTarget",
    "Settings",
    "Walker",
    "default_filter",
    "identity",
    "include_extensions",
    "register",
    "resolve_mimetype",
    "strip_suffixes",
    "watch",
]

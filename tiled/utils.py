"""Small helpers shared across layers, and the names upstream Tiled keeps in ``tiled.utils``.

The client imports this module, so it imports nothing heavy at module level: numpy, orjson,
yaml, anyio and the client's own modules are imported inside the functions that need them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import logging
import operator
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from . import errors

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


async def run_sync(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work (reading storage, computing dask graphs) on a worker thread.

    This is the one place where the async hooks hand synchronous readers to a thread, so the
    event loop keeps serving other requests meanwhile.
    """
    import anyio.to_thread

    if kwargs:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))
    return await anyio.to_thread.run_sync(function, *args)


def is_coroutine_callable(call: Callable[..., Any]) -> bool:
    """Whether calling ``call`` returns an awaitable (an ``async def`` function or method, or
    an object whose ``__call__`` is one)."""
    if inspect.isroutine(call):
        return inspect.iscoroutinefunction(call)
    if inspect.isclass(call):
        return False
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


async def ensure_awaitable(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await ``func(...)`` if it is a coroutine function, else run it on a worker thread."""
    if is_coroutine_callable(func):
        return await func(*args, **kwargs)
    return await run_sync(func, *args, **kwargs)


# ---- importing ----


class UnimportableObject(ImportError, ValueError):
    """``import_object`` could not find what it was given: an ImportError for this project's
    callers, a ValueError as upstream raises."""


def import_object(path: Any, accept_live_object: bool = True) -> Any:
    """Import ``package.module:attribute`` (or ``package.module.attribute``); an object that
    is not a string is passed through as already imported, unless ``accept_live_object`` is
    False."""
    import importlib

    if not isinstance(path, str):
        if not accept_live_object:
            raise ValueError(f"Expected an import path like 'package.module:name', not {path!r}")
        return path
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    names = [*module_name.split("."), *(attribute.split(".") if attribute else [])]
    if not all(name.isidentifier() for name in names):
        raise UnimportableObject(
            f"Expected an import path like 'package.module:name', not {path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise  # the module exists but imports something missing: show that
        raise UnimportableObject(f"Cannot import {path!r}: no module {module_name!r}") from err
    try:
        return operator.attrgetter(attribute)(module) if attribute else module
    except AttributeError as err:
        raise UnimportableObject(
            f"Cannot import {path!r}: module {module_name!r} has no {attribute!r}"
        ) from err


def modules_available(*module_names: str) -> bool:
    """Whether every named module can be imported (without importing it)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in module_names)


@contextlib.contextmanager
def prepend_to_sys_path(*paths: str | Path) -> Iterator[None]:
    """Put ``paths`` first on ``sys.path`` for the duration of the block."""
    added = [str(p) for p in paths]
    sys.path[:0] = added
    try:
        yield
    finally:
        for item in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(item)


def filter_known_kwargs(target: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the keys ``target`` (a dataclass or a callable) does not accept, so that
    a newer server's extra fields do not break an older constructor; dropped keys are logged."""
    if dataclasses.is_dataclass(target):
        known = {f.name for f in dataclasses.fields(target)}
    else:
        parameters = inspect.signature(target).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return dict(data)
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        known = {p.name for p in parameters if p.kind in named}
    kept = {k: v for k, v in data.items() if k in known}
    if dropped := sorted(set(data) - known):
        logger.debug(
            "Ignoring unknown key(s) %s for %s", dropped, getattr(target, "__name__", target)
        )
    return kept


# ---- configuration files ----


def expand_environment_variables(config: T) -> T:
    """``$NAME`` and ``${NAME}`` expanded in every string of a nested configuration."""
    if isinstance(config, Mapping):
        return {k: expand_environment_variables(v) for k, v in config.items()}  # type: ignore[return-value]
    if isinstance(config, str):
        return os.path.expandvars(config)  # type: ignore[return-value]
    if isinstance(config, list | tuple | set):
        return type(config)(expand_environment_variables(v) for v in config)  # type: ignore[return-value]
    return config


def parse(file: str | Path) -> Any:
    """A YAML configuration file, with environment variables expanded."""
    import yaml

    with open(file) as stream:
        return expand_environment_variables(yaml.safe_load(stream))


# ---- errors upstream keeps here, as classes of this project's error tree ----


class MissingDependency(ModuleNotFoundError):
    """An optional package a feature needs is not installed."""


class UnrecognizedExtension(ValueError):
    """A file name extension no adapter is registered for."""


class SerializationError(errors.UnsupportedMediaType):
    """The data cannot be encoded in the requested format (the server's 406)."""


class UnsupportedShape(SerializationError):
    """The format cannot hold data of this shape (a 3-D array as PNG, say)."""


class UnsupportedQueryType(errors.UnsupportedQuery, TypeError):
    """A query type the node cannot evaluate (the server's 400); ``args[0]`` is the message."""


# The operation collides with existing state (the server's 409); also a ValueError.
Conflicts = errors.Conflict


class BrokenLink(errors.NotFound):
    """A link (an HDF5 soft or external link, say) whose target is missing: a KeyError, and
    the server's 404."""


class UnsafeIdentifier(errors.InvalidKey):
    """A name that cannot be used as a SQL identifier (the server's 422)."""


# ---- media types ----

# Arrow's registered media type (IANA, 2021).
APACHE_ARROW_FILE_MIME_TYPE = "application/vnd.apache.arrow.file"
XLSX_MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# The two media types a PATCH of a node's metadata and specs may be sent as.
patch_mimetypes = collections.namedtuple("patch_mimetypes", "JSON_PATCH MERGE_PATCH")(
    JSON_PATCH="application/json-patch+json",
    MERGE_PATCH="application/merge-patch+json",
)


def parse_mimetype(mimetype: str) -> tuple[str, dict[str, str]]:
    """``"text/csv;header=absent"`` -> ``("text/csv", {"header": "absent"})``; ValueError for a
    parameter that is not ``key=value``."""
    base, *tokens = mimetype.split(";")
    params = {}
    for token in tokens:
        key, equals, value = token.strip().partition("=")
        if not equals or not key:
            raise ValueError(f"Could not parse {token!r} as a 'key=value' media type parameter")
        params[key] = value
    return base.strip(), params


# ---- URIs and paths ----

SCHEME_PATTERN = re.compile(r"^[a-z0-9+]+://")


def path_from_uri(uri: str | Path) -> Path:
    """The local path a ``file://`` URI (any host but ``localhost`` refused), or a ``sqlite``
    or ``duckdb`` database URI (with or without a ``+driver``), names. ValueError for other
    schemes, and for plain paths: this reads URIs."""
    parts = urlsplit(str(uri))
    scheme = parts.scheme.partition("+")[0]
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r} names a file on another host ({parts.netloc!r})")
        return Path(unquote(parts.path))
    if scheme in ("sqlite", "duckdb"):
        # The database path follows the third slash: sqlite:///relative, sqlite:////absolute.
        return Path(unquote(parts.path[1:]))
    raise ValueError(
        f"Supported schemes are 'file', 'sqlite' and 'duckdb'; {uri!r} has {parts.scheme!r}"
    )


def ensure_uri(uri_or_path: str | Path) -> str:
    """A URI for a URI or a local path: a path becomes ``file://localhost/<absolute path>``,
    and a URI without a host gets ``localhost``."""
    text = str(uri_or_path)
    if not SCHEME_PATTERN.match(text):
        return "file://localhost" + quote(str(Path(text).absolute()))
    parts = urlsplit(text)
    if parts.netloc:
        return text
    return urlunsplit(parts._replace(netloc="localhost"))


def sanitize_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``uri`` without its credentials, and the username and password it held (or None): for
    logging or showing a database URI."""
    parts = urlsplit(uri)
    credentials, at, host = parts.netloc.rpartition("@")
    if not at:
        return uri, None, None
    username, colon, password = credentials.partition(":")
    return urlunsplit(parts._replace(netloc=host)), username, password if colon else None


# The async drivers this project runs SQL through, by the scheme a user may write.
ASYNC_SQL_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def ensure_specified_sql_driver(uri: str | os.PathLike) -> str:
    """``uri`` with this project's async driver when it names none (``sqlite://...`` ->
    ``sqlite+aiosqlite://...``, ``postgresql://`` -> ``postgresql+asyncpg://``); a plain path
    is a SQLite file; a driver given explicitly is kept (upstream's name)."""
    text = os.fspath(uri)
    if not SCHEME_PATTERN.match(text):
        return f"sqlite+aiosqlite:///{Path(text)}"
    scheme, rest = text.split("://", 1)
    return f"{ASYNC_SQL_DRIVERS.get(scheme, scheme)}://{rest}"


# ---- time and sizes ----

# Seconds per unit of a duration like "5m" or "1y" (a year is 365 days).
TIME_STRING_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
TIME_STRING_PATTERN = re.compile(r"(\d+)([smhdy])")


def parse_time_string(text: str) -> int:
    """``"3s"``, ``"7m"``, ``"5h"``, ``"1d"``, ``"2y"`` as seconds; ValueError otherwise."""
    matched = TIME_STRING_PATTERN.fullmatch(text)
    if matched is None:
        raise ValueError(f"Could not parse {text!r} as a number and a unit (s, m, h, d, y)")
    number, unit = matched.groups()
    return int(number) * TIME_STRING_UNITS[unit]


def bytesize_repr(num: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num < 1024 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# ---- JSON ----


def safe_json_dump(content: Any, *, auto_json_types: Sequence[type] | None = None) -> bytes:
    """JSON bytes of ``content`` by the metadata rule (``tiled.structures.json``: numpy values,
    bytes as a base64 data URI, paths, NaN as null, ...), and instances of ``auto_json_types``
    by their ``to_json()``; any other object is refused (TypeError), as upstream's is."""
    from .structures.json import dumps, refuse

    extra_types = tuple(auto_json_types or ())

    def fallback(value: Any) -> Any:
        if extra_types and isinstance(value, extra_types):
            return value.to_json()
        return refuse(value)

    return dumps(content, fallback)


# ---- read-only views and lazy maps ----


def _pretty(p: Any, value: Any) -> None:
    from pprint import pformat

    p.text(pformat(value))


class ListView(Sequence[V], Generic[V]):
    """A read-only view of a list."""

    def __init__(self, seq: Sequence[V]):
        self._internal_list = list(seq)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._internal_list!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """IPython's display: the list itself, pretty-printed."""
        _pretty(p, list(self._internal_list))

    def __getitem__(self, index: Any) -> Any:
        return self._internal_list[index]

    def __len__(self) -> int:
        return len(self._internal_list)

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("Setting values is not allowed.")

    def __delitem__(self, index: Any) -> None:
        raise TypeError("Deleting values is not allowed.")

    def __add__(self, other: Sequence[Any]) -> ListView[Any]:
        return type(self)(self._internal_list + list(other))

    def __eq__(self, other: object) -> bool:
        return self._internal_list == (list(other) if isinstance(other, ListView) else other)

    __hash__ = None  # type: ignore[assignment]


class DictView(Mapping[K, V], Generic[K, V]):
    """A read-only view of a dict."""

    def __init__(self, d: Mapping[K, V]):
        self._internal_dict = d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._internal_dict!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """IPython's display: the dict itself, pretty-printed."""
        _pretty(p, dict(self._internal_dict))

    def __getitem__(self, key: K) -> V:
        return self._internal_dict[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._internal_dict)

    def __len__(self) -> int:
        return len(self._internal_dict)

    def __setitem__(self, key: K, value: V) -> None:
        raise TypeError("Setting items is not allowed.")

    def __delitem__(self, key: K) -> None:
        raise TypeError("Deleting items is not allowed.")

    def __eq__(self, other: object) -> bool:
        return dict(self._internal_dict) == (dict(other) if isinstance(other, Mapping) else other)

    __hash__ = None  # type: ignore[assignment]


def _lazy_repr(
    kind: str, entries: Mapping[Any, Any], done: Callable[[Any], tuple[bool, Any]]
) -> str:
    shown = []
    for key in entries:
        evaluated, value = done(key)
        shown.append(f"{key!r}: {value!r}" if evaluated else f"{key!r}: <lazy>")
    return f"<{kind}({{{', '.join(shown)}}})>"


class _Pending:
    """A value of a OneShotCachedMap not computed yet: its factory."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Pending, (self.factory,))


class OneShotCachedMap(Mapping[K, V], Generic[K, V]):
    """A mapping of keys to factories, each called once, on first read, and its value kept."""

    def __init__(self, *args: Any, **kwargs: Callable[[], V]):
        self._lock = threading.Lock()
        self._entries: dict[Any, Any] = {k: _Pending(f) for k, f in dict(*args, **kwargs).items()}

    def __getitem__(self, key: K) -> V:
        with self._lock:  # one call of the factory even under concurrent first reads
            value = self._entries[key]
            if isinstance(value, _Pending):
                value = self._entries[key] = value.factory()
        return value

    def set(self, key: K, value_factory: Callable[[], V]) -> None:
        if not callable(value_factory):
            raise ValueError("This requires a callable that returns a value, not the value.")
        self._entries[key] = _Pending(value_factory)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def remove(self, key: K) -> None:
        del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries  # without computing the value

    def __getstate__(self) -> dict[Any, Any]:
        return self._entries

    def __setstate__(self, entries: dict[Any, Any]) -> None:
        self._entries = entries
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        def done(key: Any) -> tuple[bool, Any]:
            value = self._entries[key]
            return not isinstance(value, _Pending), value

        return _lazy_repr(type(self).__name__, self._entries, done)


class CachingMap(Mapping[K, V], Generic[K, V]):
    """A mapping of keys to factories whose values are kept in ``cache`` (a dict, an LRU
    cache...) and recomputed once evicted; with ``cache=None`` nothing is kept."""

    def __init__(self, mapping: dict[K, Callable[[], V]], cache: Any):
        self._mapping = mapping
        self._cache = cache

    def __getitem__(self, key: K) -> V:
        if self._cache is None:
            return self._mapping[key]()
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = self._mapping[key]()
            return value

    def set(self, key: K, value_factory: Callable[[], V]) -> None:
        if not callable(value_factory):
            raise ValueError("This requires a callable that returns a value, not the value.")
        self._mapping[key] = value_factory
        self.evict(key)  # a value cached for the old factory is stale

    def discard(self, key: K) -> None:
        self._mapping.pop(key, None)
        self.evict(key)

    def remove(self, key: K) -> None:
        del self._mapping[key]
        self.evict(key)

    def evict(self, key: K) -> None:
        """Forget the cached value (the key stays, and is recomputed on the next read)."""
        if self._cache is not None:
            self._cache.pop(key, None)

    def __len__(self) -> int:
        return len(self._mapping)

    def __iter__(self) -> Iterator[K]:
        return iter(self._mapping)

    def __contains__(self, key: object) -> bool:
        return key in self._mapping  # without computing the value

    def __getstate__(self) -> tuple[Any, Any]:
        return self._mapping, self._cache

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self._mapping, self._cache = state

    def __repr__(self) -> str:
        def done(key: Any) -> tuple[bool, Any]:
            if self._cache is None:
                return False, None
            try:
                return True, self._cache[key]
            except KeyError:
                return False, None

        return _lazy_repr(type(self).__name__, self._mapping, done)


# ---- trees ----


def walk(tree: Mapping[Any, Any], nodes: list[Any] | None = None) -> Iterator[list[Any]]:
    """The key paths of a nested mapping, depth first, parents before their children."""
    for key, value in tree.items():
        path = [*(nodes or []), key]
        yield path
        if hasattr(value, "items"):
            yield from walk(value, path)


def gen_tree(tree: Any, prefix: str = "") -> Iterator[str]:
    """The lines :func:`tree` prints, lazily (so that printing can stop early)."""
    entries = list(tree.items())
    for index, (key, value) in enumerate(entries):
        last = index == len(entries) - 1
        yield f"{prefix}{'└── ' if last else '├── '}{key}"
        if _is_container(value):
            yield from gen_tree(value, prefix + ("    " if last else "│   "))


def _is_container(value: Any) -> bool:
    item = getattr(value, "item", None)  # a client node knows its family without a request
    if isinstance(item, dict):
        return item.get("attributes", {}).get("structure_family") == "container"
    return hasattr(value, "items")


def tree(tree: Any, max_lines: int | None = 20) -> None:
    """Print the hierarchy below a container (a client node or any nested mapping), like the
    ``tree`` command; at most ``max_lines`` lines (None: all)."""
    if len(tree) == 0:
        print("<Empty>")
        return
    for count, line in enumerate(gen_tree(tree), start=1):
        if max_lines is not None and count > max_lines:
            print(
                f"<Output truncated at {max_lines} lines. "
                "Adjust tree's max_lines parameter to see more.>"
            )
            break
        print(line)


# ---- sentinels ----


class Sentinel:
    """A named marker object that copies (and deep-copies) to itself, so ``is`` tests hold."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def __copy__(self) -> Sentinel:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Sentinel:
        return self

    def __reduce__(self) -> str | tuple[Any, ...]:
        # The module-level sentinels unpickle as themselves.
        return self.name if globals().get(self.name) is self else (Sentinel, (self.name,))


UNCHANGED = Sentinel("UNCHANGED")
UNSET = Sentinel("UNSET")
SingleUserPrincipal = Sentinel("SingleUserPrincipal")

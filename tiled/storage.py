"""Where a server keeps the data it writes: directories, object stores and SQL databases.

The public names are upstream Tiled's (``tiled.storage``); this module is the one home of
storage locations in this package.

- :class:`FileStorage`: a directory (``file://``); :class:`ObjectStorage`: a bucket.
- :class:`SQLStorage`: a database holding appendable tables and ragged arrays, with a pool of
  ADBC connections; :class:`EmbeddedSQLStorage` (a SQLite or DuckDB file, one writer at a
  time) and :class:`RemoteSQLStorage` (PostgreSQL; credentials kept apart from the URI).

Storage objects are frozen values. :func:`parse_storage` makes one from configuration and
hands out one shared instance per configuration (so one connection pool);
:func:`register_storage` makes it findable by :func:`get_storage` from an asset's ``data_uri``,
which assets store without credentials. Matching goes by :func:`storage_registry_key`: for
PostgreSQL the database name alone, so assets stay readable when hosts, ports, credentials or
connection options change; a second, different configuration of the same location is refused
(:class:`AmbiguousStorage`). :func:`acquire_storage` / :func:`release_storage` count the
catalogs using a location and close its connections when the last one lets go.

Only the standard library is imported here; drivers and pools when a database is first used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import DataUnavailable
from .utils import ensure_uri, path_from_uri, sanitize_uri

__all__ = [
    "AmbiguousStorage",
    "EmbeddedSQLStorage",
    "FileStorage",
    "ObjectStorage",
    "RemoteSQLStorage",
    "SQLStorage",
    "Storage",
    "StorageNotConfigured",
    "UriStat",
    "acquire_storage",
    "get_storage",
    "mtime_from_uri",
    "parse_storage",
    "register_storage",
    "release_storage",
    "size_from_uri",
    "stat_uri",
    "storage_registry_key",
    "strip_connection_parameters",
    "strip_storage_uri_query_on_write",
    "unregister_storage",
]

# URI schemes of SQL storage, by the dialect they name (a "+driver" suffix is ignored).
SQL_SCHEMES = {"sqlite": "sqlite", "duckdb": "duckdb", "postgresql": "postgresql",
               "postgres": "postgresql"}  # fmt: skip
EMBEDDED_DIALECTS = ("sqlite", "duckdb")  # a file each: one writer at a time
POSTGRESQL_SCHEMES = frozenset({"postgresql", "postgres"})
# Object stores reached over HTTP(S) (S3-compatible endpoints); blobs are named by URI.
SUPPORTED_OBJECT_URI_SCHEMES = frozenset({"http", "https"})
# libpq parameters that say which server and database a URI reaches; the others (timeouts,
# sslmode, application_name, credentials) only say how to connect.
POSTGRESQL_LOCATION_QUERY_PARAMETERS = frozenset({"host", "hostaddr", "port", "dbname", "service"})
STRIP_QUERY_FLAG = "TILED_STRIP_STORAGE_URI_QUERY_ON_WRITE"


# --- URIs ----------------------------------------------------------------------------------------


def sql_dialect(uri: Any) -> str | None:
    """``"sqlite"``, ``"duckdb"`` or ``"postgresql"`` for a URI of such a database, else None."""
    scheme = urlsplit(str(uri)).scheme.partition("+")[0].lower()
    return SQL_SCHEMES.get(scheme)


def is_sql_uri(uri: Any) -> bool:
    return isinstance(uri, str) and "://" in uri and sql_dialect(uri) is not None


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``(decoded key, the pair as written)`` of each ``key=value`` of a query string."""
    return [(unquote(pair.partition("=")[0]), pair) for pair in query.split("&") if pair]


def strip_storage_uri_query_on_write() -> bool:
    """Whether assets are written with connection options stripped from their URI (the
    ``TILED_STRIP_STORAGE_URI_QUERY_ON_WRITE`` environment variable; read on each call)."""
    return bool(int(os.getenv(STRIP_QUERY_FLAG, "0") or "0"))


def strip_connection_parameters(uri: str) -> str:
    """A PostgreSQL URI without the query parameters that only tune the connection (those of
    :data:`POSTGRESQL_LOCATION_QUERY_PARAMETERS` are kept as written, in order); other URIs
    unchanged."""
    parts = urlsplit(uri)
    if parts.scheme not in POSTGRESQL_SCHEMES or not parts.query:
        return uri
    kept = [
        pair
        for key, pair in _query_pairs(parts.query)
        if key in POSTGRESQL_LOCATION_QUERY_PARAMETERS
    ]
    return urlunsplit(parts._replace(query="&".join(kept)))


def storage_registry_key(uri: str) -> str:
    """What identifies the storage of an asset's ``data_uri``: for PostgreSQL
    ``postgresql:///<database name>`` (``dbname`` in the query wins over the path, as in libpq),
    however it is reached; any other URI as it is."""
    parts = urlsplit(uri)
    if parts.scheme not in POSTGRESQL_SCHEMES:
        return uri
    name = unquote(parts.path.lstrip("/"))
    for key, pair in _query_pairs(parts.query):
        if key == "dbname":
            name = unquote(pair.partition("=")[2])
    return f"postgresql:///{quote(name, safe='')}"


# --- storage locations ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Storage:
    """A storage location, named by a URI (a path becomes a ``file://`` URI)."""

    uri: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", ensure_uri(self.uri))


@dataclasses.dataclass(frozen=True)
class FileStorage(Storage):
    """A directory."""

    @functools.cached_property
    def path(self) -> Path:
        return path_from_uri(self.uri)

    def get_obstore_location(self, uri: str | None = None) -> Any:
        """An ``obstore`` LocalStore rooted at ``uri`` (inside this storage), created."""
        from obstore.store import LocalStore

        uri = uri or self.uri
        if not uri.startswith(self.uri):
            raise ValueError(f"{uri} is not inside the storage {self.uri}")
        directory = path_from_uri(uri)
        directory.mkdir(parents=True, exist_ok=True)
        return LocalStore(directory)


@dataclasses.dataclass(frozen=True)
class ObjectStorage(Storage):
    """A bucket of an object store: ``uri`` is the endpoint and bucket (no prefix); its
    credentials come from the URI, or ``username`` and ``password``."""

    provider: Literal["s3", "azure", "google"] = "s3"
    bucket: str | None = None
    username: str | None = None
    password: str | None = None
    config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        uri = ensure_uri(self.uri)
        if self.parse_blob_uri(uri)[1] is None and self.config.get("bucket"):
            # Upstream's example names the bucket in the store's options, not in the URI.
            uri = f"{uri.rstrip('/')}/{self.config['bucket']}"
        base, bucket, prefix = self.parse_blob_uri(uri)
        if bucket is None:
            raise ValueError(f"The bucket storage {sanitize_uri(uri)[0]} names no bucket")
        # Said but not done is worse than refused: data would go elsewhere than configured.
        if prefix:
            raise ValueError(
                f"The bucket storage {sanitize_uri(uri)[0]} names a path inside the bucket; "
                "give the endpoint and the bucket only"
            )
        if self.config.get("bucket") not in (None, bucket):
            raise ValueError(
                f"The bucket storage {sanitize_uri(uri)[0]} names bucket {bucket!r} in its URI "
                f"and {self.config['bucket']!r} in its config"
            )
        base, username, password = sanitize_uri(base)
        if username is not None or password is not None:
            given = (
                self.username,
                self.password,
                *(self.config.get(k) for k in ("username", "password")),
            )
            if any(value is not None for value in given):
                raise ValueError("Credentials given both in the URI and separately")
            object.__setattr__(self, "username", username)
            object.__setattr__(self, "password", password)
        object.__setattr__(self, "uri", base)
        object.__setattr__(self, "bucket", bucket)

    def __repr__(self) -> str:
        return f"ObjectStorage(uri={self.uri!r}, provider={self.provider!r})"

    @classmethod
    def parse_blob_uri(cls, uri: str) -> tuple[str, str | None, str]:
        """``(endpoint and bucket, bucket, path in the bucket)`` of an HTTP(S) blob URI."""
        parts = urlsplit(uri)
        bucket, _, blob = parts.path.strip("/").partition("/")
        return f"{parts.scheme}://{parts.netloc}/{bucket}", bucket or None, blob

    @functools.cached_property
    def shared_store(self) -> Any:
        """The ``obstore`` store of the whole bucket that this process' nodes share (one
        client, one pool of connections)."""
        return self.get_obstore_location()

    def get_obstore_location(self, uri: str | None = None) -> Any:
        """An ``obstore`` store of this bucket, rooted at ``uri`` (inside it) if given."""
        from obstore.store import AzureStore, GCSStore, S3Store

        if uri is not None and not uri.startswith(self.uri):
            raise ValueError(f"{uri} is not inside the storage {self.uri}")
        location = urlsplit(self.uri)
        # The scheme and host only: the bucket's name may occur in the host name too.
        endpoint = f"{location.scheme}://{location.netloc}" if self.bucket else self.uri
        # Each provider's names for the endpoint and the credentials.
        options = {
            "s3": (S3Store, {"endpoint": endpoint, "bucket": self.bucket},
                   {"access_key_id": self.username, "secret_access_key": self.password}),
            "azure": (AzureStore, {"endpoint": self.uri},
                      {"client_id": self.username, "client_secret": self.password}),
            "google": (GCSStore, {"url": endpoint, "bucket": self.bucket},
                       {"service_account_key": self.password}),
        }  # fmt: skip
        store, location, credentials = options[self.provider]
        given = {name: value for name, value in credentials.items() if value is not None}
        prefix = uri[len(self.uri) :].lstrip("/") if uri else None
        config = {k: v for k, v in self.config.items() if k != "bucket"}  # in the URI now
        # A server answers "unavailable" within seconds rather than retrying a store that is
        # down for minutes (obstore's default), unless the configuration says otherwise.
        config.setdefault("retry_config", DEFAULT_OBJECT_STORE_RETRY)
        return store(**location, **given, **config, prefix=prefix)


def _default_retry() -> dict[str, Any]:
    import datetime

    return {
        "max_retries": 2,
        "retry_timeout": datetime.timedelta(seconds=10),
        "backoff": {"init_backoff": datetime.timedelta(milliseconds=100),
                    "max_backoff": datetime.timedelta(seconds=2), "base": 2},
    }  # fmt: skip


DEFAULT_OBJECT_STORE_RETRY = _default_retry()


# One writer at a time per database file in this process, whichever instance writes.
_WRITE_LOCKS: dict[str, threading.Lock] = defaultdict(threading.Lock)


@dataclasses.dataclass(frozen=True)
class SQLStorage(Storage):
    """A SQL database for appendable tables and ragged arrays, with a pool of connections
    (made on first use, closed by :meth:`dispose`, made again by the next use)."""

    pool_size: int = 5
    max_overflow: int = 10

    def __post_init__(self) -> None:
        if self.pool_size is None:
            object.__setattr__(self, "pool_size", 5)
        if self.max_overflow is None:
            object.__setattr__(self, "max_overflow", 10)
        super().__post_init__()

    @property
    def dialect(self) -> str:
        """``"sqlite"``, ``"duckdb"`` or ``"postgresql"``."""
        return sql_dialect(self.uri) or urlsplit(self.uri).scheme

    @property
    def key(self) -> str:
        return storage_registry_key(self.uri)

    @property
    def path(self) -> Path | None:
        """The database file (embedded databases), else None."""
        return path_from_uri(self.uri).absolute() if self.dialect in EMBEDDED_DIALECTS else None

    @property
    def write_lock(self) -> threading.Lock:
        """Held by a writer of a database file (see :meth:`transaction`)."""
        return _WRITE_LOCKS[self.key]

    def create_adbc_connection(self) -> Any:
        """A new DB-API (ADBC) connection to the database."""
        raise NotImplementedError

    def _prepare(self, connection: Any) -> None:
        """Settings of each pooled connection (none by default)."""

    @functools.cached_property
    def _adbc_connection(self) -> Any:
        # The pool's connections are clones of this one: they share the driver's database
        # handle (DuckDB admits one per process).
        return self.create_adbc_connection()

    @functools.cached_property
    def _connection_pool(self) -> Any:
        import sqlalchemy.pool

        template = self._adbc_connection
        lock = threading.Lock()

        def create() -> Any:
            with lock:
                connection = template.adbc_clone()
            self._prepare(connection)
            return connection

        return sqlalchemy.pool.QueuePool(
            create, pool_size=self.pool_size, max_overflow=self.max_overflow
        )

    def connect(self) -> Any:
        """A pooled connection; ``close()`` gives it back, rolled back."""
        return self._connection_pool.connect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection whose work is committed when the block ends, rolled back if it fails;
        a file database admits one such block at a time in this process."""
        lock = self.write_lock if self.dialect in EMBEDDED_DIALECTS else contextlib.nullcontext()
        with lock, contextlib.closing(self.connect()) as connection:
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def dispose(self) -> None:
        """Close the pool and its template connection (safe to repeat; the next
        :meth:`connect` opens new ones)."""
        pool = self.__dict__.pop("_connection_pool", None)
        template = self.__dict__.pop("_adbc_connection", None)
        if pool is not None:
            pool.dispose()
        if template is not None:
            template.close()


class PreparedInSQLTransaction:
    """For adapters whose ``prepare_storage(storage, data_source, connection)`` creates their
    rows inside a caller's transaction: upstream's ``init_storage`` runs it in one of its own."""

    @classmethod
    def init_storage(cls, storage: SQLStorage, data_source: Any, path_parts: Any = None) -> Any:
        with storage.transaction() as connection:
            return cls.prepare_storage(storage, data_source, connection)


@dataclasses.dataclass(frozen=True)
class EmbeddedSQLStorage(SQLStorage):
    """A SQLite or DuckDB database file."""

    def __repr__(self) -> str:
        return f"SQLStorage({self.uri!r})"

    def create_adbc_connection(self) -> Any:
        path = self.path
        assert path is not None
        if not path.parent.is_dir():
            raise DataUnavailable(f"The directory of the storage database {path} does not exist")
        if not os.access(path.parent, os.W_OK | os.X_OK) or (
            path.is_file() and not os.access(path, os.W_OK)
        ):
            raise DataUnavailable(f"The storage database {path} is not writable")
        if self.dialect == "duckdb":
            try:
                import adbc_driver_duckdb.dbapi
            except ImportError:
                raise DataUnavailable(
                    "DuckDB storage needs the duckdb package (pip install 'tiled[duckdb]')"
                ) from None
            return adbc_driver_duckdb.dbapi.connect(str(path))
        if self.dialect != "sqlite":
            raise ValueError(f"Not a SQLite or DuckDB URI: {self.uri}")
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(str(path))

    def _prepare(self, connection: Any) -> None:
        if self.dialect == "sqlite":
            with connection.cursor() as cursor:
                # Wait for another process' transaction instead of failing at once.
                cursor.execute("PRAGMA busy_timeout = 30000")


@dataclasses.dataclass(frozen=True)
class RemoteSQLStorage(SQLStorage):
    """A PostgreSQL database; credentials in the URI move to ``username`` and ``password``
    (so that ``uri``, which assets record, holds none)."""

    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if sql_dialect(self.uri) != "postgresql":
            raise ValueError(f"Not a PostgreSQL URI: {sanitize_uri(self.uri)[0]}")
        uri, username, password = sanitize_uri(self.uri)
        if username is not None or password is not None:
            if self.username is not None or self.password is not None:
                raise ValueError("Credentials given both in the URI and as username/password")
            object.__setattr__(self, "username", username)
            object.__setattr__(self, "password", password)
        object.__setattr__(self, "uri", uri)
        super().__post_init__()

    def __repr__(self) -> str:
        return f"SQLStorage(uri={self.uri!r}, username={self.username!r})"

    @functools.cached_property
    def authenticated_uri(self) -> str:
        """The URI to connect with: ``uri`` with the credentials put back."""
        if self.username is None and self.password is None:
            return self.uri
        parts = urlsplit(self.uri)
        # As they were written in the URI (sanitize_uri leaves them percent-encoded).
        credentials = self.username or ""
        if self.password is not None:
            credentials += ":" + self.password
        return urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))

    def create_adbc_connection(self) -> Any:
        import adbc_driver_postgresql.dbapi

        # The driver's own scheme: a "+asyncpg" suffix is the catalog's business.
        scheme, _, rest = self.authenticated_uri.partition("://")
        return adbc_driver_postgresql.dbapi.connect(f"postgresql://{rest}")


# --- configuration and lookup ---------------------------------------------------------------------

# One instance per distinct SQL configuration in the process: equal configurations (several
# catalogs mounting the same storage) share one instance, so one pool.
_SQL_STORAGE_INSTANCES: dict[SQLStorage, SQLStorage] = {}
# Configured storage by storage_registry_key, for get_storage.
_STORAGE: dict[str, Storage] = {}
# Users (started catalogs) of each location, by storage_registry_key.
_STORAGE_REFCOUNTS: defaultdict[str, int] = defaultdict(int)
_REGISTRY_LOCK = threading.RLock()


class AmbiguousStorage(ValueError):
    """Two different configurations of one storage location (for PostgreSQL, one database
    name): assets could not say which to use."""


class StorageNotConfigured(DataUnavailable, KeyError):
    """No configured storage holds a ``data_uri`` (a KeyError, as upstream's lookup raises)."""

    def __str__(self) -> str:
        return Exception.__str__(self)  # not KeyError's quoted form


def _sql_storage_class(dialect: str) -> type[SQLStorage]:
    return RemoteSQLStorage if dialect == "postgresql" else EmbeddedSQLStorage


def _parse(item: Path | str | dict, pool_size: int, max_overflow: int) -> Storage:
    if isinstance(item, dict):
        return ObjectStorage(
            uri=item["uri"], provider=item.get("provider", "s3"),
            username=item.get("username"), password=item.get("password"),
            config=dict(item.get("config") or {}),
        )  # fmt: skip
    uri = ensure_uri(item)
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        return FileStorage(uri)
    dialect = sql_dialect(uri)
    if dialect is None:
        raise ValueError(f"writable_storage item {sanitize_uri(uri)[0]} has an unrecognized scheme")
    # The canonical scheme (postgres:// and postgresql+asyncpg:// name the same database).
    uri = f"{dialect}://{uri.partition('://')[2]}"
    return _sql_storage_class(dialect)(uri, pool_size=pool_size, max_overflow=max_overflow)


def parse_storage(
    item: Path | str | dict, *, pool_size: int = 5, max_overflow: int = 10
) -> Storage:
    """The storage an item of ``writable_storage`` / ``readable_storage`` names: a path or
    ``file://`` URI, a SQL database URI, or a dict describing a bucket. An equal SQL
    configuration made before is returned as that same instance (sharing its pool)."""
    storage = _parse(item, pool_size, max_overflow)
    if isinstance(storage, SQLStorage):
        with _REGISTRY_LOCK:
            storage = _SQL_STORAGE_INSTANCES.setdefault(storage, storage)
    return storage


def _differing_fields(a: Storage, b: Storage) -> list[str]:
    """Names (never values: they may be credentials) of the fields in which a and b differ."""
    if type(a) is not type(b):
        return ["type"]
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


def register_storage(storage: Storage) -> None:
    """Make ``storage`` what :func:`get_storage` finds for its location; an equal one may be
    registered again, a different one for the same location is refused (AmbiguousStorage)."""
    key = storage_registry_key(storage.uri)
    with _REGISTRY_LOCK:
        existing = _STORAGE.get(key)
        if existing is not None and existing != storage:
            raise AmbiguousStorage(
                f"Storage {storage!r} conflicts with the storage {existing!r} configured "
                "already: they name the same location (for PostgreSQL, the same database "
                f"name) but differ (differing: {', '.join(_differing_fields(storage, existing))})."
                " Configure each storage location the same way everywhere (URI, hosts, query "
                "parameters, credentials and pool settings)."
            )
        _STORAGE[key] = storage


def unregister_storage(storage: Storage) -> None:
    """Forget ``storage``'s location (after :meth:`SQLStorage.dispose`)."""
    with _REGISTRY_LOCK:
        _STORAGE.pop(storage_registry_key(storage.uri), None)


def acquire_storage(storage: Storage) -> Storage:
    """Register ``storage`` and count one more user of it; returns the instance to use (an
    equal SQL storage made before, if any). Pair with :func:`release_storage`."""
    with _REGISTRY_LOCK:
        if isinstance(storage, SQLStorage):
            storage = _SQL_STORAGE_INSTANCES.setdefault(storage, storage)
        register_storage(storage)
        _STORAGE_REFCOUNTS[storage_registry_key(storage.uri)] += 1
    return storage


def release_storage(storage: Storage) -> None:
    """Count one user less; the last one closes the storage's connections, unregisters it
    and stops sharing the instance (a later :func:`parse_storage` makes a new one)."""
    key = storage_registry_key(storage.uri)
    with _REGISTRY_LOCK:
        _STORAGE_REFCOUNTS[key] -= 1
        if _STORAGE_REFCOUNTS[key] > 0:
            return
        del _STORAGE_REFCOUNTS[key]  # no zero or negative count left behind
        registered = _STORAGE.pop(key, storage)
        if isinstance(registered, SQLStorage):
            if _SQL_STORAGE_INSTANCES.get(registered) is registered:
                del _SQL_STORAGE_INSTANCES[registered]
    if isinstance(registered, SQLStorage):
        registered.dispose()


def get_storage(uri: str) -> Storage:
    """The configured storage holding ``uri`` (an asset's ``data_uri``); matched as
    :func:`storage_registry_key` says, so assets written under an earlier configuration of
    the same database still resolve. :class:`StorageNotConfigured` (a KeyError) if none."""
    if urlsplit(uri).scheme in SUPPORTED_OBJECT_URI_SCHEMES:
        uri = ObjectStorage.parse_blob_uri(uri)[0]
    key = storage_registry_key(uri)
    found = _STORAGE.get(key)
    if found is None and sql_dialect(uri) in EMBEDDED_DIALECTS:
        # The same database file may be written as another URI (relative, no host).
        path = path_from_uri(uri).absolute()
        found = next(
            (s for s in list(_STORAGE.values()) if isinstance(s, SQLStorage) and s.path == path),
            None,
        )
    if found is None:
        raise StorageNotConfigured(
            f"The storage {sanitize_uri(uri)[0]} is not configured on this server "
            "(writable_storage or readable_storage)"
        )
    return found


# --- facts about stored files -----------------------------------------------------------------------


def _object_head(data_uri: str) -> dict[str, Any]:
    storage = get_storage(data_uri)
    _, _, path = ObjectStorage.parse_blob_uri(data_uri)
    import obstore

    if not isinstance(storage, ObjectStorage):
        raise ValueError(f"{sanitize_uri(data_uri)[0]} is not in a bucket")
    return obstore.head(storage.shared_store, path)


def size_from_uri(data_uri: str) -> int:
    """The size in bytes of the file or blob at ``data_uri``; ValueError for other schemes
    (I/O errors propagate)."""
    scheme = urlsplit(data_uri).scheme
    if scheme == "file":
        return path_from_uri(data_uri).stat().st_size
    if scheme in SUPPORTED_OBJECT_URI_SCHEMES:
        return int(_object_head(data_uri)["size"])
    raise ValueError(f"Cannot stat URI with unsupported scheme {scheme!r}: {data_uri!r}")


def mtime_from_uri(data_uri: str) -> float:
    """When the file or blob at ``data_uri`` last changed (POSIX seconds)."""
    scheme = urlsplit(data_uri).scheme
    if scheme == "file":
        return path_from_uri(data_uri).stat().st_mtime
    if scheme in SUPPORTED_OBJECT_URI_SCHEMES:
        return _object_head(data_uri)["last_modified"].timestamp()
    raise ValueError(f"Cannot stat URI with unsupported scheme {scheme!r}: {data_uri!r}")


class UriStat(NamedTuple):
    """What :func:`stat_uri` found: whether it is a directory, and its size if known."""

    is_directory: bool
    size: int | None


def stat_uri(data_uri: str) -> UriStat:
    """``(is_directory, size)`` of ``data_uri`` for an asset's advisory fields; a directory
    has no size, and anything that cannot be inspected is ``(False, None)``."""
    try:
        if urlsplit(data_uri).scheme == "file" and path_from_uri(data_uri).is_dir():
            return UriStat(True, None)
        return UriStat(False, size_from_uri(data_uri))
    except Exception:  # noqa: BLE001 - advisory: never a reason to fail
        return UriStat(False, None)


def __getattr__(name: str) -> Any:
    # The awkward buffers' directory mapping lives with the awkward adapter (imports numpy).
    if name == "DirectoryContainer":
        from .adapters.awkward import DirectoryContainer

        return DirectoryContainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

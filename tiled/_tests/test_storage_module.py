"""``tiled.storage`` (upstream's module): storage parsed from configuration, shared per
configuration, found again from assets' URIs however the database was reached, refused when
configured two ways, and released with its connections; on real SQLite, DuckDB and
PostgreSQL databases and a live server."""

from __future__ import annotations

import contextlib

import pandas
import pyarrow
import pytest

from tiled.adapters.sql import SQLAdapter
from tiled.catalog import from_uri
from tiled.client import from_uri as client_from_uri
from tiled.errors import DataUnavailable
from tiled.server.app import build_app
from tiled.storage import (
    _STORAGE_REFCOUNTS,
    AmbiguousStorage,
    EmbeddedSQLStorage,
    FileStorage,
    RemoteSQLStorage,
    acquire_storage,
    get_storage,
    parse_storage,
    register_storage,
    release_storage,
    stat_uri,
    storage_registry_key,
    strip_connection_parameters,
    unregister_storage,
)
from tiled.structures.core import StructureFamily
from tiled.structures.data_source import DataSource, Management
from tiled.structures.table import TableStructure
from tiled.utils import sanitize_uri

from .live_server import serve
from .test_catalog import postgres_database  # noqa: F401 (fixture)


def new_table(storage) -> DataSource:
    table = pyarrow.table({"x": [1, 2, 3]})
    source = DataSource(
        structure_family=StructureFamily.table,
        structure=TableStructure.from_arrow_table(table, npartitions=1),
        mimetype="application/x-tiled-sql-table",
        management=Management.writable,
    )
    return SQLAdapter.init_storage(storage, source)


def select_one(storage) -> int:
    with contextlib.closing(storage.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        ((value,),) = cursor.fetchall()
    return value


def test_parse_storage_kinds_and_sharing(tmp_path):
    assert isinstance(parse_storage(tmp_path), FileStorage)
    assert parse_storage(tmp_path).path == tmp_path
    sqlite = parse_storage(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(sqlite, EmbeddedSQLStorage) and sqlite.dialect == "sqlite"
    assert parse_storage(f"sqlite:///{tmp_path}/a.db") is sqlite  # one pool per configuration
    assert parse_storage(f"sqlite:///{tmp_path}/a.db", pool_size=2) is not sqlite
    remote = parse_storage("postgres://user:pw@db.example:5432/data")
    assert isinstance(remote, RemoteSQLStorage)
    assert remote.uri == "postgresql://db.example:5432/data"  # what assets record
    assert (remote.username, remote.password) == ("user", "pw")
    assert remote.authenticated_uri == "postgresql://user:pw@db.example:5432/data"
    assert "pw" not in repr(remote)
    with pytest.raises(ValueError, match="unrecognized scheme"):
        parse_storage("ftp://example.com/x")


def test_uri_normalization():
    uri = "postgresql://a:1,b:2/data?connect_timeout=5&host=c&sslmode=require"
    assert strip_connection_parameters(uri) == "postgresql://a:1,b:2/data?host=c"
    assert storage_registry_key(uri) == "postgresql:///data"
    assert storage_registry_key("postgresql://h/ignored?dbname=real") == "postgresql:///real"
    assert storage_registry_key("duckdb:////tmp/x.duckdb") == "duckdb:////tmp/x.duckdb"


def test_postgresql_storage_is_found_by_database_name(postgres_database):  # noqa: F811
    configured = f"{postgres_database}?connect_timeout=5"
    storage = parse_storage(configured)
    register_storage(storage)
    try:
        source = new_table(storage)
        (asset,) = source.assets
        assert asset.data_uri == storage.uri  # without credentials
        name = postgres_database.rsplit("/", 1)[1]
        for written in (
            asset.data_uri,
            f"postgresql://elsewhere:6543/{name}",
            f"postgresql://localhost/other?dbname={name}",
        ):
            assert get_storage(written) is storage
            assert select_one(get_storage(written)) == 1
        with pytest.raises(KeyError):
            get_storage("postgresql://localhost/no_such_database")
        with pytest.raises(DataUnavailable, match="not configured"):
            get_storage("postgresql://localhost/no_such_database")
        # The same database configured differently: refused, naming fields, never values.
        with pytest.raises(AmbiguousStorage, match="differing: pool_size"):
            register_storage(parse_storage(configured, pool_size=2))
        assert get_storage(asset.data_uri) is storage
        other = configured.replace("postgres@", "postgres:hunter2@")
        with pytest.raises(AmbiguousStorage) as info:
            register_storage(parse_storage(other))
        assert "hunter2" not in str(info.value)
    finally:
        storage.dispose()
        unregister_storage(storage)


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb"])
def test_acquire_release_and_reuse(tmp_path, dialect):
    uri = f"{dialect}:///{tmp_path}/storage.{dialect}"
    storage = acquire_storage(parse_storage(uri))
    assert acquire_storage(parse_storage(uri)) is storage
    key = storage_registry_key(storage.uri)
    assert _STORAGE_REFCOUNTS[key] == 2
    new_table(storage)
    assert "_connection_pool" in storage.__dict__
    release_storage(storage)
    assert get_storage(storage.uri) is storage and select_one(storage) == 1
    release_storage(storage)
    # The last user gone: connections closed, unregistered, no longer shared.
    assert "_connection_pool" not in storage.__dict__
    assert key not in _STORAGE_REFCOUNTS
    with pytest.raises(KeyError):
        get_storage(storage.uri)
    assert parse_storage(uri) is not storage
    # A disposed storage opens new connections when used again.
    assert select_one(storage) == 1
    storage.dispose()
    storage.dispose()


def test_stat_uri(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"12345")
    assert stat_uri(blob.as_uri()) == (False, 5)
    assert stat_uri(tmp_path.as_uri()) == (True, None)
    assert stat_uri((tmp_path / "missing").as_uri()) == (False, None)


def test_server_writes_stripped_uris_and_reads_them(
    tmp_path,
    monkeypatch,
    postgres_database,  # noqa: F811
):
    """With TILED_STRIP_STORAGE_URI_QUERY_ON_WRITE, assets record the storage URI without
    connection options; the server still finds the storage from them."""
    monkeypatch.setenv("TILED_STRIP_STORAGE_URI_QUERY_ON_WRITE", "1")
    configured = f"{postgres_database}?connect_timeout=7&application_name=tiled"
    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}",
        writable_storage=[tmp_path / "data", configured],
        init_if_not_exists=True,
    )
    schema = pyarrow.schema([("x", pyarrow.int64())])
    try:
        with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
            client = client_from_uri(server.url, api_key="secret")
            table = client.create_appendable_table(schema, key="t")
            table.append_partition(0, pandas.DataFrame({"x": [1, 2]}))
            (source,) = client["t"].data_sources()
            # Without credentials and without the connection options.
            assert source.assets[0].data_uri == sanitize_uri(postgres_database)[0]
            assert "?" not in source.assets[0].data_uri
            assert client["t"].read()["x"].tolist() == [1, 2]
    finally:
        # The server's shutdown released the storage; a failure before it started may not have.
        with contextlib.suppress(KeyError):
            storage = get_storage(configured)
            storage.dispose()
            unregister_storage(storage)

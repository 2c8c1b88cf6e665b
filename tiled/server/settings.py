"""Server settings: the ``TILED_*`` environment (read here and nowhere else) and the immutable
settings of one application.

:class:`Environment` is the one reader of the server's environment variables (pydantic-settings,
prefix ``TILED_``). Everything else receives values: :func:`read_environment` returns them,
:meth:`Environment.document` places them where they go in a configuration document, and
:func:`variable` looks up the ``${NAME}`` references of configuration files.

Sources are layered in one order everywhere: explicit arguments (command-line options, Python
arguments), then ``TILED_*`` environment variables, then the configuration file(s), then
defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..zarr_format.model import ZarrOptions

# Each variable TILED_<FIELD> of Environment, and where its value goes in a configuration.
LOCATIONS: dict[str, tuple[str, ...]] = {
    "single_user_api_key": ("authentication", "single_user_api_key"),
    "allow_anonymous_access": ("authentication", "allow_anonymous_access"),
    "secret_keys": ("authentication", "secret_keys"),
    "access_token_max_age": ("authentication", "access_token_max_age"),
    "refresh_token_max_age": ("authentication", "refresh_token_max_age"),
    "session_max_age": ("authentication", "session_max_age"),
    "database_uri": ("database", "uri"),
    "database_init_if_not_exists": ("database", "init_if_not_exists"),
    "database_pool_size": ("database", "pool_size"),
    "database_pool_pre_ping": ("database", "pool_pre_ping"),
    "database_max_overflow": ("database", "max_overflow"),
    "allow_origins": ("allow_origins",),
    "response_bytesize_limit": ("response_bytesize_limit",),
    "exact_count_limit": ("exact_count_limit",),
    "reject_undeclared_specs": ("reject_undeclared_specs",),
    "expose_raw_assets": ("expose_raw_assets",),
    "catalog_pool_size": ("catalog_pool_size",),
    "catalog_max_overflow": ("catalog_max_overflow",),
    "storage_pool_size": ("storage_pool_size",),
    "storage_max_overflow": ("storage_max_overflow",),
    "create_mount_nodes_if_not_exist": ("create_mount_nodes_if_not_exist",),
    "streaming_cache_uri": ("streaming_cache", "uri"),
    "streaming_cache_sentinels": ("streaming_cache", "sentinels"),
    "streaming_cache_service_name": ("streaming_cache", "service_name"),
    "streaming_cache_password": ("streaming_cache", "password"),
    "streaming_cache_ssl": ("streaming_cache", "ssl"),
    "streaming_cache_data_ttl": ("streaming_cache", "data_ttl"),
    "streaming_cache_seq_ttl": ("streaming_cache", "seq_ttl"),
    "streaming_cache_socket_timeout": ("streaming_cache", "socket_timeout"),
    "streaming_cache_socket_connect_timeout": ("streaming_cache", "socket_connect_timeout"),
    "streaming_cache_health_check_interval": ("streaming_cache", "health_check_interval"),
    # Upstream reads TILED_CATALOG_<KEY> into the keys of the ``catalog`` section, where a
    # configuration has one (see tiled.config.validate_config); a pool size of the catalog
    # is therefore TILED_CATALOG_CATALOG_POOL_SIZE.
    **{
        f"catalog_{key}": ("catalog", key)
        for key in (
            "uri",
            "writable_storage",
            "readable_storage",
            "init_if_not_exists",
            "metadata",
            "specs",
            "adapters_by_mimetype",
            "top_level_access_tags",
            "mount_node",
            "catalog_pool_size",
            "catalog_max_overflow",
            "storage_pool_size",
            "storage_max_overflow",
        )
    },
    "webhooks_secret_keys": ("webhooks", "secret_keys"),
    "webhooks_blocked_networks": ("webhooks", "blocked_networks"),
    "webhooks_allow_delivery_hosts": ("webhooks", "allow_delivery_hosts"),
    "webhooks_allow_http": ("webhooks", "allow_http"),
    "webhooks_allow_private_addresses": ("webhooks", "allow_private_addresses"),
}
SERVER_SETTINGS = (
    "allow_origins", "response_bytesize_limit", "exact_count_limit", "expose_raw_assets",
    "reject_undeclared_specs",
)  # fmt: skip


def _string_list(value: Any) -> Any:
    """A JSON list of strings, or one plain string standing for a list of one."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("must be a JSON list of strings") from None
    return [text] if text else []


StringList = Annotated[list[str] | None, NoDecode]


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise ValueError("must be JSON") from None


def _path_or_json_list(value: Any) -> Any:
    return _json(value) if isinstance(value, str) and value.strip().startswith("[") else value


# Parsed here (not by pydantic-settings, whose JSON errors are no ValidationError).
JSONValue = Annotated[Any, NoDecode, BeforeValidator(_json)]


class Environment(BaseSettings):
    """The ``TILED_*`` variables: ``TILED_CONFIG`` and one per entry of :data:`LOCATIONS`."""

    model_config = SettingsConfigDict(env_prefix="TILED_", extra="ignore", frozen=True)

    config: str | None = None
    single_user_api_key: str | None = None
    allow_anonymous_access: bool | None = None
    secret_keys: StringList = None
    access_token_max_age: timedelta | None = None
    refresh_token_max_age: timedelta | None = None
    session_max_age: timedelta | None = None
    database_uri: str | None = None
    database_init_if_not_exists: bool | None = None
    database_pool_size: int | None = None
    database_pool_pre_ping: bool | None = None
    database_max_overflow: int | None = None
    allow_origins: StringList = None
    response_bytesize_limit: int | None = None
    exact_count_limit: int | None = None
    reject_undeclared_specs: bool | None = None
    expose_raw_assets: bool | None = None
    catalog_pool_size: int | None = None
    catalog_max_overflow: int | None = None
    storage_pool_size: int | None = None
    storage_max_overflow: int | None = None
    create_mount_nodes_if_not_exist: bool | None = None
    streaming_cache_uri: str | None = None
    streaming_cache_sentinels: StringList = None
    streaming_cache_service_name: str | None = None
    streaming_cache_password: str | None = None
    streaming_cache_ssl: bool | None = None
    streaming_cache_data_ttl: int | None = None
    streaming_cache_seq_ttl: int | None = None
    streaming_cache_socket_timeout: int | None = None
    streaming_cache_socket_connect_timeout: int | None = None
    streaming_cache_health_check_interval: int | None = None
    webhooks_secret_keys: StringList = None
    webhooks_blocked_networks: StringList = None
    webhooks_allow_delivery_hosts: StringList = None
    webhooks_allow_http: bool | None = None
    webhooks_allow_private_addresses: bool | None = None
    catalog_uri: str | None = None
    catalog_writable_storage: StringList = None
    catalog_readable_storage: StringList = None
    catalog_init_if_not_exists: bool | None = None
    catalog_metadata: JSONValue = None
    catalog_specs: JSONValue = None
    catalog_adapters_by_mimetype: JSONValue = None
    catalog_top_level_access_tags: StringList = None
    catalog_mount_node: Annotated[Any, NoDecode, BeforeValidator(_path_or_json_list)] = None
    catalog_catalog_pool_size: int | None = None
    catalog_catalog_max_overflow: int | None = None
    catalog_storage_pool_size: int | None = None
    catalog_storage_max_overflow: int | None = None

    @field_validator(
        "secret_keys", "allow_origins", "webhooks_secret_keys", "webhooks_blocked_networks",
        "webhooks_allow_delivery_hosts", "streaming_cache_sentinels", "catalog_writable_storage",
        "catalog_readable_storage", "catalog_top_level_access_tags", mode="before",
    )  # fmt: skip
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator(
        "access_token_max_age", "refresh_token_max_age", "session_max_age", mode="before"
    )
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # A number of seconds, as in configuration files (ISO 8601 durations work too).
        try:
            return float(value) if isinstance(value, str) else value
        except ValueError:
            return value

    def document(self) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
        """The values that are set, nested as in a configuration document, and for each
        location the variable it came from (for error messages)."""
        document: dict[str, Any] = {}
        origins: dict[tuple[str, ...], str] = {}
        for name, location in LOCATIONS.items():
            value = getattr(self, name)
            if value is None:
                continue
            level = document
            for key in location[:-1]:
                level = level.setdefault(key, {})
            level[location[-1]] = value
            origins[location] = f"TILED_{name.upper()}"
        return document, origins

    def section(self, name: str) -> dict[str, Any]:
        """The values set for one section of the configuration (``authentication``...)."""
        return dict(self.document()[0].get(name, {}))

    def server_settings(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in SERVER_SETTINGS}
        settings = {name: value for name, value in values.items() if value is not None}
        webhooks = self.section("webhooks")
        if webhooks:  # any TILED_WEBHOOKS_* variable turns webhooks on
            settings["webhooks"] = webhooks
        streaming_cache = self.section("streaming_cache")
        if streaming_cache:  # as upstream: the variables are a whole section (with its uri)
            settings["streaming_cache"] = streaming_cache
        return settings


def read_environment() -> Environment:
    """The ``TILED_*`` variables now; a bad value is a ``ConfigError`` naming the variable."""
    from ..config.errors import ConfigError

    try:
        return Environment()
    except ValidationError as err:
        problems = []
        for error in err.errors():
            name = f"TILED_{str(error['loc'][0]).upper()}" if error["loc"] else "TILED_*"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"environment variable {name}: {message}")
        raise ConfigError(problems) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Environment:
    """The ``TILED_*`` environment, read once; ``get_settings.cache_clear()`` reads it again
    (upstream's name, which its tests use)."""
    return read_environment()


def variable(name: str) -> str | None:
    """The environment variable ``name`` (for ``${NAME}`` in configuration files)."""
    return os.environ.get(name)


@dataclass(unsafe_hash=True)
class DatabaseSettings:
    """Where a database is and how its connection pool is sized (upstream's name and fields).

    Hashable: :mod:`tiled.server.connection_pool` keeps one engine per distinct settings object.
    """

    uri: str | None = None
    pool_size: int = 5
    pool_pre_ping: bool = True
    max_overflow: int = 5


@dataclass(frozen=True)
class WebhookOptions:
    """The ``webhooks`` section as the server uses it (see ``tiled.config.WebhooksConfig``)."""

    secret_keys: tuple[str, ...] = ()
    blocked_networks: tuple[str, ...] = ()
    allow_delivery_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    allow_private_addresses: bool = False

    @classmethod
    def from_value(cls, value: Any) -> WebhookOptions:
        """From a mapping, or an object with these attributes (upstream's ``WebhooksConfig``,
        which its ``build_app`` callers pass in ``server_settings``); checked as in a
        configuration file."""
        from ..config import WebhooksConfig

        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            value = {name: getattr(value, name) for name in WebhooksConfig.model_fields}
        checked = WebhooksConfig.model_validate(dict(value))
        return cls(
            secret_keys=tuple(checked.secret_keys),
            blocked_networks=tuple(checked.blocked_networks),
            allow_delivery_hosts=tuple(checked.allow_delivery_hosts),
            allow_http=checked.allow_http,
            allow_private_addresses=checked.allow_private_addresses,
        )


@dataclass(frozen=True)
class StreamingOptions:
    """The ``streaming_cache`` section as the server uses it (see
    ``tiled.config.StreamingCacheConfig``, which holds the names, defaults and rules)."""

    uri: str | None = None
    sentinels: tuple[str, ...] = ()
    service_name: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    data_ttl: int = 3600
    seq_ttl: int = 2_592_000
    socket_timeout: int = 86_400
    socket_connect_timeout: int = 10
    health_check_interval: int = 10

    @property
    def in_memory(self) -> bool:
        """Whether updates are kept in the server process (one process only)."""
        return self.uri == "memory"

    @classmethod
    def from_value(cls, value: Any) -> StreamingOptions:
        """From a mapping, or an object with these attributes (upstream's
        ``StreamingCacheConfig``, which its ``build_app`` callers pass in
        ``server_settings``); checked as in a configuration file."""
        from ..config import StreamingCacheConfig

        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            value = {name: getattr(value, name, None) for name in StreamingCacheConfig.model_fields}
        # Upstream's from_uri callers pass its whole model_dump, 'datastore' (derived) included.
        fields = {k: v for k, v in value.items() if k != "datastore"}
        checked = StreamingCacheConfig.model_validate(fields)
        values = checked.model_dump()
        values["sentinels"] = tuple(values["sentinels"] or ())
        return cls(**values)


@dataclass(frozen=True)
class ServerSettings:
    root_path: str = ""
    allow_origins: tuple[str, ...] = ()
    response_bytesize_limit: int = 300_000_000
    exact_count_limit: int = 100
    # Responses smaller than this are not worth compressing.
    compression_min_bytes: int = 1000
    zarr: ZarrOptions = field(default_factory=ZarrOptions)
    # Above this many nodes a consolidated zarr document is not offered (listing still works).
    zarr_consolidated_max_nodes: int = 1000
    zarr_cache_control: str | None = None
    zarr_listing_max: int = 10_000
    # Writes through /zarr: the compressors an array written there may use (uncompressed is
    # always allowed; only codecs whose chunks pass through are possible), and the largest
    # request body (a chunk or a document) accepted.
    zarr_write_compressors: tuple[str, ...] = ("blosc", "zstd", "gzip")
    zarr_write_max_bytes: int = 256 * 1024 * 1024
    # Writes through /api/v1: the largest request body accepted where the node's structure
    # does not size it (tables, sparse, awkward and ragged arrays, bodies of registered
    # decoders); a raw array body is held to the exact size of the region written.
    write_max_bytes: int = 256 * 1024 * 1024
    # Seconds: chunk GETs of arrays whose stored chunks pass through, stored in a bucket, are
    # answered 307 to a presigned URL of the object, valid this long (None: served here).
    zarr_direct_reads: float | None = None
    # Upstream's name and default: /asset/bytes, /asset/manifest and DELETE /asset are served.
    expose_raw_assets: bool = True
    # Upstream's name and default: a node may declare specs that have no validator.
    reject_undeclared_specs: bool = False
    # Upstream's ``metrics: {prometheus: ...}`` and its default: /api/v1/metrics is served.
    prometheus: bool = True
    # Upstream's ``webhooks`` section; None: no /api/v1/webhooks, no deliveries.
    webhooks: WebhookOptions | None = None
    # Upstream's ``streaming_cache`` section; None: writes are published to no one.
    streaming_cache: StreamingOptions | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ServerSettings:
        """Build from upstream-style ``server_settings`` (unknown keys are ignored)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known and v is not None}
        if "allow_origins" in kwargs:
            kwargs["allow_origins"] = tuple(kwargs["allow_origins"] or ())
        if "zarr_write_compressors" in kwargs:
            kwargs["zarr_write_compressors"] = tuple(kwargs["zarr_write_compressors"])
        metrics = values.get("metrics")
        prometheus = getattr(metrics, "prometheus", None)
        if isinstance(metrics, Mapping):
            prometheus = metrics.get("prometheus")
        if prometheus is not None:
            kwargs["prometheus"] = bool(prometheus)
        zarr = values.get("zarr")
        if isinstance(zarr, Mapping):
            kwargs["zarr"] = ZarrOptions(**zarr)
        if "webhooks" in kwargs:
            kwargs["webhooks"] = WebhookOptions.from_value(kwargs["webhooks"])
        if "streaming_cache" in kwargs:
            kwargs["streaming_cache"] = StreamingOptions.from_value(kwargs["streaming_cache"])
        return cls(**kwargs)

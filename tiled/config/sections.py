"""The sections of a configuration: one pydantic model each, with upstream's keys.

``null`` means "not set"; unknown keys are errors. A key naming an upstream feature this server
does not implement is declared too, and refused with the reason from :data:`UNSUPPORTED`, so
that the error names the key and says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from . import build

# Why each upstream setting that this server does not implement is refused.
UNSUPPORTED = {
    "bucket_storage": (
        "buckets are configured as a mapping {provider: s3, uri: http(s)://endpoint/bucket, "
        "config: {...}}, not as a URI; only S3-compatible stores (provider s3) are supported"
    ),
}
# The largest count or size a setting may hold: what a database's (or C's) 64-bit integer holds.
LARGEST = 2**63 - 1
UNSUPPORTED_AUTHENTICATORS = {"SAMLAuthenticator": "SAML login"}


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: item for key, item in value.items() if item is not None}
    return value


def _mount_node(value: Any) -> Any:
    if value is not None:
        from ..catalog import mount_segments  # the SQL catalog, only where one is mounted

        mount_segments(value)
    return value


# Checked by the catalog's own rule, which says what a mount_node may be in one line.
MountNode = Annotated[Any, AfterValidator(_mount_node)]


class _Section(BaseModel):
    """A configuration section: unknown keys are errors, ``null`` means 'not set'."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, value: Any) -> Any:
        return _drop_nulls(value)


class AuthenticationProviderSpec(BaseModel):
    """One identity provider: a name, an authenticator (import string, class or object), args."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    provider: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    authenticator: Any
    args: Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v)] = {}

    @field_validator("authenticator")
    @classmethod
    def _implemented(cls, value: Any) -> Any:
        name = re.split(r"[:.]", value)[-1] if isinstance(value, str) else None
        if (
            isinstance(value, str)
            and value.startswith("tiled.")
            and name in UNSUPPORTED_AUTHENTICATORS
        ):
            raise ValueError(
                f"not supported by this server: {UNSUPPORTED_AUTHENTICATORS[name]} ({name}) is "
                "not implemented; use tiled.authenticators:OIDCAuthenticator, "
                "LDAPAuthenticator or PAMAuthenticator"
            )
        return value

    def build(self) -> Any:
        """The authenticator object: import it if named, instantiate it if it is a class."""
        built = build.authenticators([self], None)[0]
        return built.authenticator


class Authentication(BaseModel):
    """How a server authenticates requests (upstream's ``authentication`` section).

    With no providers the server is single-user: ``single_user_api_key`` (or a random key)
    grants every scope, and ``allow_anonymous_access`` lets requests without credentials read.
    With providers it is multi-user: users log in to get JWT sessions and create API keys,
    which are kept in the authentication database (see :class:`Database`). Token ages are
    seconds (or durations); ``null`` means the default.
    """

    model_config = ConfigDict(frozen=True)

    providers: list[AuthenticationProviderSpec] = []
    tiled_admins: list[dict[str, str]] = []
    secret_keys: list[str] = []
    allow_anonymous_access: bool = False
    single_user_api_key: str | None = None
    access_token_max_age: timedelta = timedelta(minutes=15)
    refresh_token_max_age: timedelta = timedelta(days=7)
    session_max_age: timedelta = timedelta(days=365)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, value: Any) -> Any:
        return _drop_nulls(value)

    @field_validator("single_user_api_key")
    @classmethod
    def _alphanumeric(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]+", value):
            raise ValueError("single_user_api_key must be a non-empty alphanumeric string")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _no_empty_key(cls, value: list[str]) -> list[str]:
        if any(not key for key in value):
            raise ValueError("a secret key is empty (tokens signed with it could be forged)")
        return value

    @field_validator("access_token_max_age", "refresh_token_max_age", "session_max_age")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration (tokens would expire as issued)")
        if value > timedelta(days=36500):
            raise ValueError("must be at most 100 years (3153600000 seconds)")
        return value

    @field_validator("tiled_admins")
    @classmethod
    def _admin_entries(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for entry in value:
            if set(entry) != {"provider", "id"}:
                raise ValueError("each tiled_admins entry needs exactly 'provider' and 'id'")
        return value

    @model_validator(mode="after")
    def _providers_consistent(self) -> Authentication:
        names = [spec.provider for spec in self.providers]
        if len(names) != len(set(names)):
            raise ValueError(f"provider names must be unique, got {names}")
        unknown = {entry["provider"] for entry in self.tiled_admins} - set(names)
        if unknown:
            raise ValueError(f"tiled_admins name providers that are not configured: {unknown}")
        return self

    @property
    def authenticators(self) -> dict[str, Any]:
        """Provider name -> authenticator object (built anew on each access)."""
        return {spec.provider: spec.build() for spec in self.providers}


class Database(_Section):
    """The authentication database (principals, API keys, sessions): the ``database`` section.

    ``uri``: ``sqlite:///path.db`` / ``sqlite+aiosqlite:///path.db`` or ``postgresql://...``;
    None is an in-memory SQLite database, lost when the server stops. ``schema`` (PostgreSQL
    only) keeps the tables in a schema of their own.
    """

    uri: str | None = None
    init_if_not_exists: bool = False
    pool_size: int = Field(5, ge=2, le=LARGEST)
    pool_pre_ping: bool = True
    max_overflow: int = Field(5, ge=0, le=LARGEST)
    schema_: str | None = Field(None, alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


BUCKET_KEYS = frozenset({"provider", "uri", "config", "username", "password"})


def _bucket_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A bucket of ``writable_storage`` (upstream's form), checked before anything starts."""
    unknown = sorted(set(item) - BUCKET_KEYS)
    if unknown:
        raise ValueError(f"unknown keys of a bucket storage: {unknown}")
    if item.get("provider", "s3") != "s3":
        raise ValueError(f"not supported by this server: {UNSUPPORTED['bucket_storage']}")
    uri = item.get("uri")
    if not isinstance(uri, str) or uri.partition("://")[0].lower() not in ("http", "https"):
        raise ValueError("a bucket storage needs a uri http(s)://endpoint/bucket")
    config = item.get("config") or {}
    if not isinstance(config, Mapping):
        raise ValueError("the config of a bucket storage must be a mapping")
    from ..storage import ObjectStorage

    try:
        ObjectStorage(uri=uri, provider="s3", config=dict(config))  # names a bucket?
    except ValueError as err:
        raise ValueError(str(err)) from None
    return {"provider": "s3", **dict(item), "config": dict(config)}


def _storage_item(item: Any) -> Any:
    if isinstance(item, Mapping):
        return _bucket_item(item)
    # Any path object (pathlib, py.path as upstream's tests pass), not only pathlib's.
    text = item.__fspath__() if hasattr(item, "__fspath__") else item
    if not isinstance(text, str) or not text:
        raise ValueError("must be a directory path or a file:// URI")
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in ("", "file"):
        return text
    if scheme.split("+")[0] in ("duckdb", "sqlite", "postgresql", "postgres"):
        return text  # SQL storage of appendable tables
    if scheme in ("s3", "gs", "gcs", "az", "abfs", "azure", "http", "https"):
        raise ValueError(f"not supported by this server: {UNSUPPORTED['bucket_storage']}")
    raise ValueError(f"{text!r}: unrecognized storage URI scheme {scheme!r}")


def _storage_list(value: Any) -> Any:
    """``writable_storage: ./data`` means ``[./data]``; absent means ``[]``."""
    if isinstance(value, Mapping):  # upstream's bucket form, {bucket: {uri, key, secret}}
        raise ValueError(f"not supported by this server: {UNSUPPORTED['bucket_storage']}")
    return [value] if isinstance(value, str | Path) else value


Storage = Annotated[
    list[Annotated[Any, AfterValidator(_storage_item)]], BeforeValidator(_storage_list)
]


class CatalogConfig(_Section):
    """A SQL catalog: the ``catalog`` section, or the ``args`` of ``tree: catalog``.

    Without ``writable_storage`` the catalog is read-only. ``top_level_access_tags`` (upstream
    0.2.20) becomes the root's ``access_blob`` ``{"tags": [...]}``.
    """

    uri: str
    writable_storage: Storage = []
    readable_storage: Storage = []
    init_if_not_exists: bool = False
    metadata: dict[str, Any] | None = None
    specs: list[Any] | None = None
    adapters_by_mimetype: dict[str, Any] = {}
    top_level_access_tags: list[str] | None = None
    top_level_access_blob: dict[str, Any] | None = None
    catalog_pool_size: int | None = Field(None, ge=1, le=LARGEST)
    catalog_max_overflow: int | None = Field(None, ge=0, le=LARGEST)
    # Connection pools of the SQL storage of appendable tables.
    storage_pool_size: int | None = Field(None, ge=1, le=LARGEST)
    storage_max_overflow: int | None = Field(None, ge=0, le=LARGEST)
    # Seconds a resolved node is reused without a query (writes of this process drop it).
    lookup_cache_ttl: float | None = Field(None, ge=0)

    @field_validator("specs")
    @classmethod
    def _specs(cls, value: Any) -> Any:
        # Checked here (not only when the catalog is built) so a bad value, from a file or a
        # TILED_CATALOG_SPECS variable, is an error naming where it came from.
        from ..errors import InvalidSpecs
        from ..structures.core import normalize_specs

        try:
            normalize_specs(value)
        except InvalidSpecs as err:
            raise ValueError(str(err)) from None
        return value

    # Serve the container at this path of the database as the root (upstream's mount_node).
    mount_node: MountNode = None
    create_mount_nodes_if_not_exist: bool | None = None
    # Upstream's per-catalog copies of the ``streaming_cache`` section and of
    # ``webhooks.secret_keys``: its configuration loader overwrites whatever a file gives here,
    # so files that carry them load, and the top-level sections are the ones used.
    cache_config: dict[str, Any] | None = None
    webhook_secret_keys: list[str] | None = None

    def from_uri_kwargs(
        self, defaults: Mapping[str, Any], directory: Path | None, where: str = "catalog."
    ) -> dict:
        """The arguments of ``tiled.catalog.from_uri``; ``defaults`` are the top-level values
        of the keys a catalog may set too (pool sizes, ``create_mount_nodes_if_not_exist``),
        ``where`` what a key is named after in messages."""
        kwargs: dict[str, Any] = {
            "uri": self.uri,
            "writable_storage": list(self.writable_storage),
            "readable_storage": list(self.readable_storage),
            "init_if_not_exists": self.init_if_not_exists,
        }
        for name in ("metadata", "specs", "lookup_cache_ttl", "top_level_access_blob"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.top_level_access_tags is not None:
            kwargs["top_level_access_blob"] = {"tags": list(self.top_level_access_tags)}
        if self.mount_node is not None:
            kwargs["mount_node"] = self.mount_node
        for name in (
            "catalog_pool_size", "catalog_max_overflow", "storage_pool_size",
            "storage_max_overflow", "create_mount_nodes_if_not_exist",
        ):  # fmt: skip
            value = getattr(self, name) if getattr(self, name) is not None else defaults.get(name)
            if value is not None:
                kwargs[name] = value
        if self.adapters_by_mimetype:
            kwargs["adapters_by_mimetype"] = {
                mimetype: build.resolve(ref, directory, f"{where}adapters_by_mimetype.{mimetype}")
                for mimetype, ref in self.adapters_by_mimetype.items()
            }
        return kwargs


def _normalized_tree(value: Any) -> Any:
    return "catalog" if value == "tiled.catalog:from_uri" else value


def _tree_kind(value: Any) -> str:
    tree = value.get("tree") if isinstance(value, Mapping) else getattr(value, "tree", None)
    return "catalog" if _normalized_tree(tree) == "catalog" else "object"


class _TreeBase(_Section):
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        segments = [segment for segment in value.split("/") if segment]
        if any(segment in (".", "..") for segment in segments):
            raise ValueError(f"{value!r} may not contain '.' or '..' segments")
        return "/" + "/".join(segments)  # upstream accepts "a" for "/a" too

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(segment for segment in self.path.split("/") if segment)


class TreeSpec(_TreeBase):
    """One entry of ``trees``: ``tree`` (an import path ``package.module:attribute``, a file
    ``path/to/file.py:attribute`` or the object itself) served at ``path``; an imported class
    or function is called with ``args``."""

    tree: Any
    args: dict[str, Any] = {}

    @field_validator("tree")
    @classmethod
    def _tree_reference(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.search(r"[:.]", value):
            raise ValueError(
                f"{value!r} is neither 'catalog' nor an import path 'package.module:attribute'"
            )
        return value


class CatalogTreeSpec(_TreeBase):
    """A ``trees`` entry ``tree: catalog`` (or ``tiled.catalog:from_uri``): a SQL catalog."""

    tree: Annotated[Literal["catalog"], BeforeValidator(_normalized_tree)]
    args: CatalogConfig

    @model_validator(mode="before")
    @classmethod
    def _needs_args(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and not value.get("args"):
            raise ValueError("a 'catalog' tree needs args.uri (the catalog database)")
        return value


AnyTreeSpec = Annotated[
    Annotated[TreeSpec, Tag("object")] | Annotated[CatalogTreeSpec, Tag("catalog")],
    Discriminator(_tree_kind),
]
_TAGS = ("object", "catalog")


class AccessControl(_Section):
    """The ``access_control`` section: a policy (import path, class or object) and its args."""

    access_policy: Any = None
    args: dict[str, Any] = {}

    def build(self, directory: str | Path | None = None) -> Any:
        if self.access_policy is None:
            return None
        return build.access_policy(self.access_policy, self.args, directory)


class ZarrConfig(_Section):
    """The ``zarr`` section: how the zarr views encode chunks."""

    codec: str = "blosc-lz4"
    chunk_budget_bytes: int = Field(4 * 1024 * 1024, ge=1, le=LARGEST)

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        from ..zarr_format.codecs import CODEC_NAMES

        if value not in CODEC_NAMES:
            raise ValueError(f"unknown codec {value!r}; choose one of {list(CODEC_NAMES)}")
        return value


class UvicornConfig(_Section):
    """The ``uvicorn`` section: ``uvicorn.run``'s arguments for ``tiled serve config``.

    ``host``/``port`` yield to ``--host``/``--port``; ``root_path`` goes to the application.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    root_path: str | None = None
    workers: int | None = Field(None, ge=1)
    log_level: str | int | None = None

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str | int | None) -> str | int | None:
        names = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
        if isinstance(value, str) and value.lower() not in names:
            raise ValueError(f"unknown log level {value!r}; choose one of {list(names)}")
        return value

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str | None) -> str | None:
        stripped = (value or "").strip("/")  # "tiled", "/tiled/" -> "/tiled", as upstream
        return f"/{stripped}" if stripped else None

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """What goes to ``uvicorn.run`` besides host and port."""
        values = self.model_dump(exclude_none=True)
        for name in ("host", "port", "root_path", "workers"):
            values.pop(name, None)
        return values


class MetricsConfig(_Section):
    """Upstream's ``metrics`` section: ``prometheus: false`` turns ``/api/v1/metrics`` (and
    the counting) off."""

    prometheus: bool | None = None


class WebhooksConfig(_Section):
    """Upstream's ``webhooks`` section: present, the server serves ``/api/v1/webhooks`` and
    delivers the events of its catalogs (see :mod:`tiled.catalog.webhooks`).

    ``secret_keys`` encrypt webhooks' signing secrets in the catalog (the first encrypts, any
    decrypts: add a new key first to rotate); without them, webhooks cannot have secrets.
    Deliveries go to HTTPS URLs on public addresses only, unless ``allow_http`` and
    ``allow_private_addresses`` say otherwise; ``blocked_networks`` (CIDR) adds to the private
    and reserved ranges refused, and ``allow_delivery_hosts`` names hosts accepted wherever
    they resolve to.
    """

    secret_keys: list[str] = []
    blocked_networks: list[str] = []
    allow_delivery_hosts: list[str] = []
    allow_http: bool = False
    allow_private_addresses: bool = False

    @field_validator("blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for network in value:
            try:
                ipaddress.ip_network(network)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (e.g. 10.1.0.0/16)") from None
        return value

    @field_validator("allow_delivery_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        import ipaddress

        for host in value:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue
            raise ValueError(f"{host!r} is an address: allow_delivery_hosts names hosts")
        return value


class StreamingCacheConfig(_Section):
    """Upstream's ``streaming_cache`` section: present, writes to catalog nodes are published
    to live subscribers (``/api/v1/stream/single/{path}``; see :mod:`tiled.streaming`).

    ``uri`` is ``memory`` (one server process) or ``redis://`` / ``rediss://`` (one Redis
    node); or ``sentinels`` (``host:port`` each), ``service_name`` and ``password`` name a
    Redis Sentinel cluster, ``ssl`` encrypting it. Updates are kept ``data_ttl`` seconds for
    replay, a node's sequence counter ``seq_ttl`` seconds after its last update. Upstream's
    names and defaults throughout.
    """

    uri: str | None = None
    sentinels: list[str] | None = None
    service_name: str | None = None
    password: str | None = None
    ssl: bool = False
    data_ttl: int = Field(3600, ge=1, le=LARGEST)
    seq_ttl: int = Field(2_592_000, ge=1, le=LARGEST)
    socket_timeout: int = Field(86_400, ge=1, le=LARGEST)
    socket_connect_timeout: int = Field(10, ge=1, le=LARGEST)
    health_check_interval: int = Field(10, ge=0, le=LARGEST)

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and value != "memory":
            scheme = value.partition("://")[0].lower() if "://" in value else ""
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(f"{value!r}: use 'memory' or a redis:// or rediss:// URI")
        return value

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            host, colon, port = entry.rpartition(":")
            if not (colon and host and port.isdigit()):
                raise ValueError(f"sentinel entry {entry!r} must be 'host:port'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> StreamingCacheConfig:
        # Upstream's rules: a Sentinel-only key beside a plain uri is a mistake to say, not
        # to ignore (an 'ssl' ignored would leave a connection believed encrypted in clear).
        if self.uri and self.sentinels:
            raise ValueError("set only one of 'uri' or 'sentinels', not both")
        if self.sentinels:
            if not self.service_name:
                raise ValueError("'service_name' is required when 'sentinels' is set")
        elif self.uri:
            if self.ssl:
                raise ValueError(
                    "'ssl' applies to 'sentinels'; for one Redis node use a rediss:// uri"
                )
            for name in ("service_name", "password"):
                if getattr(self, name):
                    raise ValueError(
                        f"'{name}' is only used with 'sentinels'; for one Redis node put "
                        "the password in the uri"
                    )
        else:
            raise ValueError("set either 'uri' or 'sentinels' and 'service_name'")
        return self


class SpecDeclaration(_Section):
    """A spec the server knows: with a validator (an import path or a function), nodes that
    declare it are validated; without one, declaring it is accepted as it is."""

    spec: str
    validator: Any = None

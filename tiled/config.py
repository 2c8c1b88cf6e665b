"""Configuration models shared by ``build_app``, the YAML config and the command line.

``Authentication`` and ``Database`` are what ``build_app`` takes. ``Config`` validates a whole
YAML configuration (``tiled serve config``); :func:`parse_configs` reads one from a file or a
directory of files, and :func:`construct_build_app_kwargs` turns it into ``build_app``'s
arguments (``tiled.server.app.build_app_from_config`` does both steps).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)


class AuthenticationProviderSpec(BaseModel):
    """One identity provider: a name, an authenticator (import string, class or object), args."""

    provider: str
    authenticator: Any
    args: dict[str, Any] = {}

    @field_validator("provider")
    @classmethod
    def _url_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError("provider names may use letters, digits, '_', '.' and '-' only")
        return value

    def build(self) -> Any:
        """The authenticator object: import it if named, instantiate it if it is a class."""
        from .utils import import_object

        target = self.authenticator
        if isinstance(target, str):
            target = import_object(target)
        if isinstance(target, type):
            return target(**self.args)
        if self.args:
            raise ValueError(
                f"Provider {self.provider!r}: 'args' are given but the authenticator is "
                "already an object, not an import path or a class"
            )
        return target


class Authentication(BaseModel):
    """How a server authenticates requests (upstream's ``tiled.config.Authentication``).

    With no providers the server is single-user: ``single_user_api_key`` (or a random key)
    grants every scope, and ``allow_anonymous_access`` lets requests without credentials read.
    With providers it is multi-user: users log in to get JWT sessions and create API keys,
    which are kept in the authentication database (see :class:`Database`).
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

    @field_validator("single_user_api_key")
    @classmethod
    def _alphanumeric(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]+", value):
            raise ValueError("single_user_api_key must be a non-empty alphanumeric string")
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


class Database(BaseModel):
    """The authentication database (principals, API keys, sessions): the YAML ``database:``.

    ``uri`` may be ``sqlite:///path.db`` / ``sqlite+aiosqlite:///path.db``, or
    ``postgresql://...`` / ``postgresql+asyncpg://...``; None means an in-memory SQLite
    database, lost when the server stops. ``schema`` (PostgreSQL only) keeps the tables in a
    schema of their own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str | None = None
    init_if_not_exists: bool = False
    pool_size: int = Field(5, ge=2)
    pool_pre_ping: bool = True
    max_overflow: int = Field(5, ge=0)
    schema_: str | None = Field(None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("schema must be a plain SQL identifier")
        return value


# --- the YAML configuration ---------------------------------------------------------------------


class ConfigError(ValueError):
    """A configuration that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _storage_list(value: Any) -> Any:
    """``writable_storage: ./data`` means ``[./data]``; absent means ``[]``."""
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [value]
    return value


class TreeSpec(BaseModel):
    """One entry of ``trees:``: what to serve (``tree``) where (``path``).

    ``tree`` is ``"catalog"`` (a SQL catalog; ``args`` are ``tiled.catalog.from_uri``'s, with
    ``uri`` required), an import path ``package.module:attribute`` (or
    ``path/to/file.py:attribute``), or the object itself. An imported class or function is
    called with ``args``; an adapter is served as it is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    path: str
    tree: Any
    args: dict[str, Any] = {}

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/' (use '/' for the root)")
        segments = [segment for segment in value.split("/") if segment]
        if any(segment in (".", "..") for segment in segments):
            raise ValueError(f"{value!r} may not contain '.' or '..' segments")
        return "/" + "/".join(segments)

    @field_validator("tree")
    @classmethod
    def _tree_reference(cls, value: Any) -> Any:
        if value is None:
            raise ValueError(
                "must be 'catalog', an import path 'package.module:attribute' or a tree"
            )
        if isinstance(value, str) and value != "catalog" and not re.search(r"[:.]", value):
            raise ValueError(
                f"{value!r} is neither 'catalog' nor an import path 'package.module:attribute'"
            )
        return value

    @field_validator("args", mode="before")
    @classmethod
    def _no_args(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _catalog_needs_uri(self) -> TreeSpec:
        if self.tree == "catalog" and "uri" not in self.args:
            raise ValueError("a 'catalog' tree needs args.uri (the catalog database)")
        return self

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(segment for segment in self.path.split("/") if segment)


class CatalogConfig(BaseModel):
    """The ``catalog:`` section: one SQL catalog served at the root (``tiled.catalog.from_uri``).

    ``uri`` is ``sqlite:///path.db``, ``postgresql://...`` or a plain file path (SQLite).
    Without ``writable_storage`` the catalog is read-only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    writable_storage: list[str] = []
    readable_storage: list[str] = []
    init_if_not_exists: bool = False
    metadata: dict[str, Any] | None = None
    specs: list[Any] | None = None
    # Seconds a resolved node is reused without a query (writes of this process drop it).
    lookup_cache_ttl: float | None = None

    @field_validator("writable_storage", "readable_storage", mode="before")
    @classmethod
    def _storage(cls, value: Any) -> Any:
        return _storage_list(value)

    def from_uri_kwargs(self) -> dict[str, Any]:
        kwargs = self.model_dump(exclude_none=True)
        return {k: v for k, v in kwargs.items() if v != [] or k == "uri"}


class AccessControl(BaseModel):
    """The ``access_control:`` section: a policy (import path, class or object) and its args.

    For example ``{access_policy: "tiled.access.policies:SimpleAccessPolicy",
    args: {access_lists: {alice: [a, b]}, public: [a]}}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    access_policy: Any
    args: dict[str, Any] = {}

    @field_validator("args", mode="before")
    @classmethod
    def _no_args(cls, value: Any) -> Any:
        return {} if value is None else value

    def build(self, directory: str | Path | None = None) -> Any:
        target = self.access_policy
        if isinstance(target, str):
            target = import_from_config(target, directory, "access_control.access_policy")
        if isinstance(target, type) or (callable(target) and not hasattr(target, "allowed_scopes")):
            try:
                return target(**self.args)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"access_control: could not build the policy: {err}") from err
        if self.args:
            raise ConfigError(
                "access_control: 'args' are given but the access_policy is already an object"
            )
        return target


class ZarrConfig(BaseModel):
    """The ``zarr:`` section: how the zarr views encode chunks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: str = "blosc-lz4"
    chunk_budget_bytes: int = Field(4 * 1024 * 1024, ge=1)

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        from .structures.zarr_meta import CODEC_NAMES

        if value not in CODEC_NAMES:
            raise ValueError(f"unknown codec {value!r}; choose one of {list(CODEC_NAMES)}")
        return value


class UvicornConfig(BaseModel):
    """The ``uvicorn:`` section: passed to ``uvicorn.run`` by ``tiled serve config``.

    ``host`` and ``port`` are overridden by ``--host`` / ``--port``; ``root_path`` is given to
    the application (the path prefix behind a proxy). Other keys go to uvicorn as they are.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    root_path: str | None = None
    workers: int | None = Field(None, ge=1)
    log_level: str | None = None

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """What goes to ``uvicorn.run`` besides host and port."""
        values = self.model_dump(exclude_none=True)
        for name in ("host", "port", "root_path", "workers"):
            values.pop(name, None)
        return values


# Upstream Tiled settings that this server does not implement: named as such when they appear.
UNSUPPORTED_UPSTREAM_KEYS = frozenset(
    {
        "streaming_cache",
        "webhooks",
        "create_mount_nodes_if_not_exist",
        "catalog_pool_size",
        "storage_pool_size",
        "catalog_max_overflow",
        "storage_max_overflow",
        "validation",
        "object_cache",
    }
)
# Accepted so that upstream configurations load, but without effect here (logged when set).
ACCEPTED_WITHOUT_EFFECT = (
    "file_extensions",
    "specs",
    "reject_undeclared_specs",
    "expose_raw_assets",
    "metrics",
)
# Top-level lists that concatenate when a directory of files is merged.
CONCATENATED_KEYS = ("allow_origins", "trees", "specs", "routers")


class Config(BaseModel):
    """A whole server configuration: the YAML file(s) of ``tiled serve config``.

    Exactly one of ``trees`` and ``catalog`` says what to serve. Unknown keys are errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    trees: list[TreeSpec] | None = None
    catalog: CatalogConfig | None = None
    authentication: Authentication = Field(default_factory=Authentication)
    database: Database | None = None
    access_control: AccessControl | None = None
    uvicorn: UvicornConfig = Field(default_factory=UvicornConfig)
    allow_origins: list[str] = []
    response_bytesize_limit: int | None = Field(None, ge=1)
    exact_count_limit: int | None = Field(None, ge=0)
    zarr: ZarrConfig | None = None
    zarr_consolidated_max_nodes: int | None = Field(None, ge=0)
    zarr_cache_control: str | None = None
    zarr_listing_max: int | None = Field(None, ge=1)
    # Import paths in files; the objects themselves may be given from Python.
    media_types: dict[str, dict[str, Any]] = {}
    routers: list[Any] = []
    file_extensions: dict[str, str] = {}
    specs: list[dict[str, Any]] = []
    reject_undeclared_specs: bool = False
    expose_raw_assets: bool = True
    metrics: dict[str, Any] = {}

    # The file or directory the configuration was read from: import paths and relative file
    # paths are resolved from its directory.
    _source: Path | None = PrivateAttr(None)

    @field_validator("authentication", mode="before")
    @classmethod
    def _known_authentication_keys(cls, value: Any) -> Any:
        # Authentication itself tolerates unknown keys (build_app callers pass upstream dicts);
        # in a configuration file an unknown key is a typo.
        if value is None:
            return {}
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(Authentication.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown key(s) {unknown}; allowed: {sorted(Authentication.model_fields)}"
                )
            for index, provider in enumerate(value.get("providers") or []):
                if isinstance(provider, Mapping):
                    extra = sorted(set(provider) - {"provider", "authenticator", "args"})
                    if extra:
                        raise ValueError(
                            f"providers[{index}] has unknown key(s) {extra}; "
                            "allowed: provider, authenticator, args"
                        )
        return value

    @field_validator("uvicorn", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _what_to_serve(self) -> Config:
        if self.trees is not None and self.catalog is not None:
            raise ValueError("'trees' and 'catalog' are mutually exclusive: use one of them")
        if self.trees is None and self.catalog is None:
            raise ValueError("nothing to serve: the configuration needs 'trees' or 'catalog'")
        if self.trees is not None:
            if not self.trees:
                raise ValueError("'trees' is empty: list at least one tree")
            paths = sorted((spec.segments, spec.path) for spec in self.trees)
            for (outer, outer_path), (inner, inner_path) in zip(paths, paths[1:], strict=False):
                if inner[: len(outer)] == outer:
                    what = "appears twice" if inner == outer else f"contains {inner_path!r}"
                    raise ValueError(f"tree paths may not nest: {outer_path!r} {what}")
        return self

    @property
    def source(self) -> Path | None:
        """The file or directory this configuration was read from (None if built in Python)."""
        return self._source

    @property
    def directory(self) -> Path | None:
        """The directory relative paths and import paths are resolved from."""
        if self._source is None:
            return None
        return self._source if self._source.is_dir() else self._source.parent

    def with_overrides(self, *, public: bool | None = None, api_key: str | None = None) -> Config:
        """A copy with the command line's ``--public`` / ``--api-key`` applied."""
        update: dict[str, Any] = {}
        if public:
            update["allow_anonymous_access"] = True
        if api_key is not None:
            update["single_user_api_key"] = api_key
        if not update:
            return self
        fields = self.authentication.model_dump(exclude_unset=True)
        authentication = Authentication.model_validate({**fields, **update})
        copy = self.model_copy(update={"authentication": authentication})
        copy._source = self._source
        return copy


# --- reading files -------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment_variables(value: Any, *, where: str = "", _path: str = "") -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string of a parsed YAML document.

    ``$${VAR}`` stands for a literal ``${VAR}``. An unset variable without a default is a
    :class:`ConfigError` naming it.
    """
    if isinstance(value, Mapping):
        return {
            key: expand_environment_variables(
                item, where=where, _path=f"{_path}.{key}" if _path else str(key)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            expand_environment_variables(item, where=where, _path=f"{_path}[{index}]")
            for index, item in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}{_path or 'value'}: the environment variable {name} is not set "
            f"(write ${{{name}:-default}} to give a default)"
        )

    return _VARIABLE.sub(substitute, value)


_RELATIVE_DB = re.compile(r"^(?P<scheme>(sqlite|duckdb)(\+\w+)?):///(?P<path>[^/?].*)$")


def resolve_relative_path(value: Any, directory: Path) -> Any:
    """A file path or SQLite/DuckDB URI made absolute against ``directory``.

    ``./data`` and ``data`` become ``{directory}/data``; ``sqlite:///catalog.db`` (three
    slashes: relative) becomes ``sqlite:////{directory}/catalog.db``. Absolute paths, other URIs
    (``postgresql://``, ``file://``, ``s3://``) and ``:memory:`` are left as they are.
    """
    if not isinstance(value, str) or not value:
        return value
    match = _RELATIVE_DB.match(value)
    if match:
        path, _, query = match.group("path").partition("?")
        if path.startswith(":memory:"):
            return value
        absolute = os.path.normpath(directory / path)
        return f"{match.group('scheme')}:///{absolute}" + (f"?{query}" if query else "")
    if "://" in value or value.startswith(":memory:") or os.path.isabs(value):
        return value
    return os.path.normpath(directory / os.path.expanduser(value))


def _resolve_catalog_paths(section: Any, directory: Path) -> Any:
    if not isinstance(section, Mapping):
        return section
    section = dict(section)
    if "uri" in section:
        section["uri"] = resolve_relative_path(section["uri"], directory)
    for key in ("writable_storage", "readable_storage"):
        if key in section:
            value = section[key]
            items = value if isinstance(value, list) else [value]
            items = [resolve_relative_path(item, directory) for item in items]
            section[key] = items if isinstance(value, list) else items[0]
    return section


def resolve_relative_paths(document: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """Make the file paths of one configuration document absolute against its directory.

    Resolved: ``catalog.uri``, ``catalog.writable_storage``, ``catalog.readable_storage``, the
    same keys in the ``args`` of ``tree: catalog`` entries, ``database.uri`` and
    ``uvicorn.log_config``. (Import paths are resolved when they are imported.)
    """
    document = dict(document)
    if "catalog" in document:
        document["catalog"] = _resolve_catalog_paths(document["catalog"], directory)
    if isinstance(document.get("trees"), list):
        trees = []
        for spec in document["trees"]:
            if isinstance(spec, Mapping) and spec.get("tree") == "catalog":
                spec = {**spec, "args": _resolve_catalog_paths(spec.get("args"), directory)}
            trees.append(spec)
        document["trees"] = trees
    database = document.get("database")
    if isinstance(database, Mapping) and "uri" in database:
        document["database"] = {
            **database,
            "uri": resolve_relative_path(database["uri"], directory),
        }
    server = document.get("uvicorn")
    if isinstance(server, Mapping) and isinstance(server.get("log_config"), str):
        document["uvicorn"] = {
            **server,
            "log_config": resolve_relative_path(server["log_config"], directory),
        }
    return document


def _load_document(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file: {err.strerror}") from err
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML: {problem}{where}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{path}: the configuration must be a mapping of keys, not {type(document).__name__}"
        )
    document = expand_environment_variables(document, where=str(path))
    return resolve_relative_paths(document, path.parent.absolute())


def _config_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise ConfigError(f"{path}: the directory holds no .yml or .yaml files")
        return files
    if path.exists():
        return [path]
    raise ConfigError(f"{path}: no such configuration file or directory")


def merge_documents(
    documents: list[tuple[Path, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge parsed files: lists in :data:`CONCATENATED_KEYS` concatenate; any other key may
    appear in one file only. Returns the merged document and where each value came from
    (``origins[key]`` is a file, or for concatenated lists a list of files, one per item)."""
    merged: dict[str, Any] = {}
    origins: dict[str, Any] = {}
    for path, document in documents:
        for key, value in document.items():
            if key in CONCATENATED_KEYS and isinstance(value, list):
                if key in merged and not isinstance(merged[key], list):
                    raise ConfigError(f"{origins[key]}: {key!r} must be a list")
                merged.setdefault(key, []).extend(value)
                origins.setdefault(key, []).extend([path] * len(value))
            elif key in merged:
                first = origins[key][0] if isinstance(origins[key], list) else origins[key]
                raise ConfigError(
                    f"the key {key!r} is set in both {first} and {path}; "
                    "only list keys (" + ", ".join(CONCATENATED_KEYS) + ") may be repeated"
                )
            else:
                merged[key] = value
                origins[key] = path
    return merged, origins


def _origin_of(location: tuple, origins: Mapping[str, Any], source: Path | None) -> Any:
    if not location:
        return source
    origin = origins.get(location[0], source)
    if isinstance(origin, list):
        if len(location) > 1 and isinstance(location[1], int) and location[1] < len(origin):
            return origin[location[1]]
        return ", ".join(dict.fromkeys(str(o) for o in origin))
    return origin


def _describe(error: Mapping[str, Any]) -> str:
    location = tuple(error["loc"])
    dotted = ""
    for part in location:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        key = location[-1] if location else "?"
        if len(location) == 1 and key in UNSUPPORTED_UPSTREAM_KEYS:
            return f"{key!r} is an upstream Tiled setting that this server does not support"
        if len(location) == 1:
            allowed = ", ".join(Config.model_fields)
            return f"unknown key {key!r} (allowed top-level keys: {allowed})"
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else dotted
        return f"{parent}: unknown key {key!r}"
    return f"{dotted}: {message}" if dotted else message


def validate_config(
    document: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    origins: Mapping[str, Any] | None = None,
) -> Config:
    """Validate a parsed document as a :class:`Config`; errors become one line each."""
    source = Path(source) if source is not None else None
    try:
        config = Config.model_validate(dict(document))
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = _origin_of(tuple(error["loc"]), origins or {}, source)
            text = _describe(error)
            problems.append(f"{where}: {text}" if where else text)
        raise ConfigError(problems) from None
    config._source = source.absolute() if source is not None else None
    return config


def parse_configs(path: str | Path) -> Config:
    """Read and validate a configuration file, or a directory of ``.yml``/``.yaml`` files.

    Files of a directory are read in name order and merged (see :func:`merge_documents`).
    ``${VAR}`` environment variables are expanded and relative file paths made absolute
    against the configuration's directory. Raises :class:`ConfigError`.
    """
    path = Path(path).expanduser()
    files = _config_files(path)
    documents = [(file, _load_document(file)) for file in files]
    merged, origins = merge_documents(documents)
    return validate_config(merged, source=path, origins=origins)


# --- building the application's arguments --------------------------------------------------------


def import_from_config(reference: str, directory: str | Path | None, what: str) -> Any:
    """Import ``package.module:attribute`` or ``path/to/file.py:attribute``.

    Modules next to the configuration are importable: its directory is put on ``sys.path``
    (once, ahead of the rest). A ``.py`` file path is relative to the directory.
    """
    from .utils import import_object

    module_part, colon, attribute = reference.partition(":")
    try:
        if module_part.endswith(".py") or "/" in module_part:
            file = Path(module_part).expanduser()
            if not file.is_absolute() and directory is not None:
                file = Path(directory) / file
            if not file.is_file():
                raise ImportError(f"no such file {str(file)!r}")
            digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
            name = f"_tiled_config_{file.stem}_{digest}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, file)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            obj: Any = module
            for part in attribute.split(".") if colon and attribute else []:
                obj = getattr(obj, part)
            return obj
        if directory is not None and str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
        return import_object(reference)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what}: cannot import {reference!r}: {err}") from err


def _is_adapter(obj: Any) -> bool:
    return hasattr(obj, "structure_family")


def _instantiate_tree(spec: TreeSpec, index: int, directory: Path | None) -> Any:
    what = f"trees[{index}] ({spec.path})"
    if spec.tree == "catalog":
        try:
            from .catalog import from_uri
        except ImportError as err:
            raise ConfigError(f"{what}: the SQL catalog is not available: {err}") from err
        try:
            tree = from_uri(**spec.args)
        except TypeError as err:
            raise ConfigError(f"{what}: bad catalog args: {err}") from err
        return tree
    target = spec.tree
    if isinstance(target, str):
        target = import_from_config(target, directory, what)
    if isinstance(target, type) or (callable(target) and not _is_adapter(target)):
        try:
            target = target(**spec.args)
        except TypeError as err:
            raise ConfigError(f"{what}: could not call {spec.tree!r}: {err}") from err
        if inspect.isawaitable(target):
            if inspect.iscoroutine(target):
                target.close()  # never to be awaited
            raise ConfigError(f"{what}: {spec.tree!r} returned a coroutine, not a tree")
    elif spec.args:
        raise ConfigError(f"{what}: 'args' are given but {spec.tree!r} is not callable")
    if isinstance(target, type) or not _is_adapter(target):
        raise ConfigError(f"{what}: {spec.tree!r} is a {type(target).__name__}, not a tree")
    return target


def _mount(trees: list[tuple[tuple[str, ...], Any]]) -> Any:
    """One root for several trees: synthetic ``MapAdapter`` parents make up the paths."""
    from .adapters.mapping import MapAdapter

    if len(trees) == 1 and trees[0][0] == ():
        return trees[0][1]
    nested: dict[str, Any] = {}
    for segments, tree in trees:
        level = nested
        for segment in segments[:-1]:
            level = level.setdefault(segment, {})
        level[segments[-1]] = tree

    def build(level: dict[str, Any]) -> Any:
        return MapAdapter(
            {
                key: build(value) if isinstance(value, dict) else value
                for key, value in level.items()
            }
        )

    root = build(nested)
    # Which trees were mounted where (the command line checks catalogs before serving).
    root.mounted_trees = [("/" + "/".join(segments), tree) for segments, tree in trees]
    return root


def _env_bool(name: str) -> bool:
    text = os.environ[name].strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"environment variable {name}={os.environ[name]!r} is not a boolean")


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={os.environ[name]!r} is not an integer"
        ) from None


def _env_list(name: str) -> list[str]:
    text = os.environ[name].strip()
    try:
        value = json.loads(text) if text.startswith("[") else [text]
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"environment variable {name} must be a JSON list of strings")
    return value


def _authentication(config: Config) -> Authentication:
    """The configured authentication, with environment variables filling unset fields."""
    authentication = config.authentication
    given = authentication.model_fields_set
    update: dict[str, Any] = {}
    if (
        not authentication.providers
        and "single_user_api_key" not in given
        and os.environ.get("TILED_SINGLE_USER_API_KEY")
    ):
        update["single_user_api_key"] = os.environ["TILED_SINGLE_USER_API_KEY"]
    if "allow_anonymous_access" not in given and "TILED_ALLOW_ANONYMOUS_ACCESS" in os.environ:
        update["allow_anonymous_access"] = _env_bool("TILED_ALLOW_ANONYMOUS_ACCESS")
    if not update:
        return authentication
    try:
        return Authentication.model_validate(
            {**authentication.model_dump(exclude_unset=True), **update}
        )
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise ConfigError([f"from the environment: {p}" for p in problems]) from None


def _server_settings(config: Config) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    given = config.model_fields_set
    if "allow_origins" in given:
        settings["allow_origins"] = list(config.allow_origins)
    elif "TILED_ALLOW_ORIGINS" in os.environ:
        settings["allow_origins"] = _env_list("TILED_ALLOW_ORIGINS")
    for name in ("response_bytesize_limit", "exact_count_limit"):
        variable = f"TILED_{name.upper()}"
        if getattr(config, name) is not None:
            settings[name] = getattr(config, name)
        elif name not in given and variable in os.environ:
            settings[name] = _env_int(variable)
    for name in ("zarr_consolidated_max_nodes", "zarr_cache_control", "zarr_listing_max"):
        if getattr(config, name) is not None:
            settings[name] = getattr(config, name)
    if config.zarr is not None:
        settings["zarr"] = config.zarr.model_dump()
    if config.database is not None:
        settings["database"] = config.database
    if config.uvicorn.root_path:
        settings["root_path"] = config.uvicorn.root_path
    return settings


def _serialization_registry(config: Config, directory: Path | None) -> Any:
    if not config.media_types:
        return None
    from .serialization import SerializationRegistry, register_defaults

    registry = register_defaults(SerializationRegistry())
    for key, encoders in config.media_types.items():
        for media_type, reference in encoders.items():
            encoder = (
                import_from_config(reference, directory, f"media_types.{key}.{media_type}")
                if isinstance(reference, str)
                else reference
            )
            registry.register(key, media_type, encoder)
    return registry


def _providers_imported(authentication: Authentication, directory: Path | None) -> Authentication:
    """Import authenticators named by path here, so paths relative to the config work."""
    if not any(isinstance(spec.authenticator, str) for spec in authentication.providers):
        return authentication
    providers = [
        spec.model_copy(
            update={
                "authenticator": import_from_config(
                    spec.authenticator, directory, f"authentication.providers[{index}]"
                )
            }
        )
        if isinstance(spec.authenticator, str)
        else spec
        for index, spec in enumerate(authentication.providers)
    ]
    return authentication.model_copy(update={"providers": providers})


def construct_build_app_kwargs(
    config: Config | Mapping[str, Any], *, source_filepath: str | Path | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``build_app`` that a configuration describes.

    Imports and builds the trees (mounting several under synthetic ``MapAdapter`` parents,
    with their startup/background/shutdown tasks and routers carried up to the root), the
    access policy, routers and media types. Environment variables fill settings the
    configuration leaves unset: ``TILED_SINGLE_USER_API_KEY``, ``TILED_ALLOW_ANONYMOUS_ACCESS``,
    ``TILED_ALLOW_ORIGINS``, ``TILED_RESPONSE_BYTESIZE_LIMIT``, ``TILED_EXACT_COUNT_LIMIT``
    (and, in ``build_app``, ``TILED_SECRET_KEYS`` and ``TILED_DATABASE_URI``).
    """
    if not isinstance(config, Config):
        config = validate_config(config, source=source_filepath)
    directory = config.directory
    if directory is None and source_filepath is not None:
        source = Path(source_filepath).absolute()
        directory = source if source.is_dir() else source.parent

    if config.catalog is not None:
        specs = [TreeSpec(path="/", tree="catalog", args=config.catalog.from_uri_kwargs())]
    else:
        specs = list(config.trees or [])
    mounted = [
        (spec.segments, _instantiate_tree(spec, index, directory))
        for index, spec in enumerate(specs)
    ]
    tree = _mount(mounted)
    tasks: dict[str, list] = {"startup": [], "background": [], "shutdown": []}
    routers: list[Any] = []
    if tree is not mounted[0][1]:  # build_app collects the tasks of the root only
        seen: set[int] = set()
        for _, subtree in mounted:
            if id(subtree) in seen:
                continue
            seen.add(id(subtree))
            for kind in tasks:
                tasks[kind].extend(getattr(subtree, f"{kind}_tasks", []))
            routers.extend(getattr(subtree, "include_routers", []))
    routers.extend(
        import_from_config(reference, directory, f"routers[{index}]")
        if isinstance(reference, str)
        else reference
        for index, reference in enumerate(config.routers)
    )
    for name in ACCEPTED_WITHOUT_EFFECT:
        if name in config.model_fields_set:
            logger.warning(
                "Configuration key %r is accepted for compatibility with upstream Tiled "
                "but has no effect on this server.",
                name,
            )
    return {
        "tree": tree,
        "authentication": _providers_imported(_authentication(config), directory),
        "server_settings": _server_settings(config),
        "access_policy": (
            config.access_control.build(directory) if config.access_control is not None else None
        ),
        "include_routers": routers,
        "serialization_registry": _serialization_registry(config, directory),
        "tasks": tasks if any(tasks.values()) else None,
    }

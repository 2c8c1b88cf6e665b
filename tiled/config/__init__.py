"""Server configuration: the YAML file(s) of ``tiled serve config`` and ``build_app``'s inputs.

Every configuration that upstream Tiled 0.2.20 accepts is accepted here with the same meaning;
a setting this server does not implement is an error naming the key and saying why
(``docs/source/reference/configuration.md`` lists every key). Sources, highest first:
explicit arguments (``overrides=``, :meth:`Config.with_overrides`), the ``TILED_*``
environment variables (read by :mod:`tiled.server.settings`, nowhere else), the file(s).

::

    parse_configs(path) ──> Config ──> construct_build_app_kwargs(config) ──> build_app(**kwargs)
      .files: YAML, ${NAME},           .build: imports, trees, registries, policies
      relative paths, merging
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from . import build
from .errors import ConfigError, UnsupportedSetting
from .files import (
    CONCATENATED_KEYS,
    expand_environment_variables,
    merge_documents,
    read_documents,
    resolve_relative_path,
    resolve_relative_paths,
)
from .sections import (
    _TAGS,
    LARGEST,
    AccessControl,
    AnyTreeSpec,
    Authentication,
    AuthenticationProviderSpec,
    CatalogConfig,
    CatalogTreeSpec,
    Database,
    MetricsConfig,
    SpecDeclaration,
    StreamingCacheConfig,
    TreeSpec,
    UvicornConfig,
    WebhooksConfig,
    ZarrConfig,
    _Section,
)

__all__ = [
    "CONCATENATED_KEYS", "AccessControl", "Authentication", "AuthenticationProviderSpec",
    "CatalogConfig", "CatalogTreeSpec", "Config", "ConfigError", "Database", "MetricsConfig",
    "SpecDeclaration", "StreamingCacheConfig", "TreeSpec", "UnsupportedSetting", "UvicornConfig",
    "WebhooksConfig", "ZarrConfig",
    "construct_build_app_kwargs", "expand_environment_variables", "import_from_config",
    "merge_documents", "parse_configs", "resolve_relative_path", "resolve_relative_paths",
    "validate_config",
]  # fmt: skip

logger = logging.getLogger(__name__)
import_from_config = build.import_from_config


class Config(_Section):
    """A whole server configuration. Exactly one of ``trees`` and ``catalog`` says what to
    serve; unknown keys are errors, and so are upstream settings this server lacks."""

    trees: list[AnyTreeSpec] | None = None
    catalog: CatalogConfig | None = None
    authentication: Authentication = Field(default_factory=Authentication)
    database: Database | None = None
    access_control: AccessControl | None = None
    uvicorn: UvicornConfig = Field(default_factory=UvicornConfig)
    allow_origins: list[str] | None = None
    response_bytesize_limit: int | None = Field(None, ge=1, le=LARGEST)
    exact_count_limit: int | None = Field(None, ge=0, le=LARGEST)
    media_types: dict[str, dict[str, Any]] = {}
    file_extensions: dict[str, str] = {}
    routers: list[Any] = []
    specs: list[SpecDeclaration] = []
    catalog_pool_size: int | None = Field(None, ge=1, le=LARGEST)
    catalog_max_overflow: int | None = Field(None, ge=0, le=LARGEST)
    # Defaults of the catalogs' SQL storage pools (appendable tables).
    storage_pool_size: int | None = Field(None, ge=1, le=LARGEST)
    storage_max_overflow: int | None = Field(None, ge=0, le=LARGEST)
    object_cache: dict[str, Any] | None = None  # deprecated upstream, no effect there either
    reject_undeclared_specs: bool | None = None
    expose_raw_assets: bool | None = None
    metrics: MetricsConfig | None = None
    streaming_cache: StreamingCacheConfig | None = None
    webhooks: WebhooksConfig | None = None
    # Mounted catalogs (mount_node) create the containers along their path when missing.
    create_mount_nodes_if_not_exist: bool | None = None
    # This server's own settings.
    zarr: ZarrConfig | None = None
    zarr_consolidated_max_nodes: int | None = Field(None, ge=0, le=LARGEST)
    zarr_cache_control: str | None = None
    zarr_listing_max: int | None = Field(None, ge=1, le=LARGEST)
    zarr_write_compressors: list[Literal["blosc", "zstd", "gzip"]] | None = None
    zarr_write_max_bytes: int | None = Field(None, ge=1, le=LARGEST)
    write_max_bytes: int | None = Field(None, ge=1, le=LARGEST)
    # S3 presigns a URL for at most seven days.
    zarr_direct_reads: float | None = Field(None, gt=0, le=7 * 24 * 3600)

    # The file or directory the configuration was read from: import paths and relative file
    # paths are resolved from its directory.
    _source: Path | None = PrivateAttr(None)
    # The file each top-level value came from (a list, one per item, for merged lists).
    _origins: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("authentication", mode="before")
    @classmethod
    def _known_authentication_keys(cls, value: Any) -> Any:
        # Authentication tolerates unknown keys (build_app callers pass upstream dicts); in a
        # configuration an unknown key is a typo.
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
                        raise ValueError(f"providers[{index}] has unknown key(s) {extra}")
        return value

    @model_validator(mode="after")
    def _what_to_serve(self) -> Config:
        if self.trees and self.catalog is not None:
            raise ValueError("'trees' and 'catalog' are mutually exclusive: use one of them")
        if self.trees is None and self.catalog is None:
            raise ValueError("nothing to serve: the configuration needs 'trees' or 'catalog'")
        if self.trees is not None and not self.trees and self.catalog is None:
            raise ValueError("'trees' is empty: list at least one tree")
        paths = sorted((spec.segments, spec.path) for spec in self.trees or [])
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

    @property
    def tree_specs(self) -> list[TreeSpec | CatalogTreeSpec]:
        """What to serve where; the ``catalog`` section is a catalog tree at ``/``."""
        if self.catalog is not None:
            return [CatalogTreeSpec(path="/", tree="catalog", args=self.catalog)]
        return list(self.trees or [])

    def with_overrides(self, *, public: bool | None = None, api_key: str | None = None) -> Config:
        """A copy with the command line's ``--public`` / ``--api-key`` applied."""
        update: dict[str, Any] = {}
        if public:
            update["allow_anonymous_access"] = True
        if api_key is not None:
            update["single_user_api_key"] = api_key
        if not update:
            return self
        authentication = _with_fields(self.authentication, update)
        copy = self.model_copy(update={"authentication": authentication})
        copy._source, copy._origins = self._source, self._origins
        return copy


def _with_fields(authentication: Authentication, values: Mapping[str, Any]) -> Authentication:
    fields = {name: getattr(authentication, name) for name in authentication.model_fields_set}
    return Authentication.model_validate({**fields, **values})


# --- validation, with one line per problem ------------------------------------------------------


def _overlay(base: Any, top: Any) -> Any:
    """``top`` over ``base``, merging mappings (and models' set fields) key by key; a None in
    ``top`` is no value."""
    if isinstance(base, BaseModel) and isinstance(top, Mapping):
        base = {name: getattr(base, name) for name in base.model_fields_set}
    if isinstance(base, Mapping) and isinstance(top, Mapping):
        merged = dict(base)
        for key, value in top.items():
            if value is not None:
                merged[key] = _overlay(merged[key], value) if key in merged else value
        return merged
    return top


def _location(error: Mapping[str, Any]) -> tuple:
    location = tuple(error["loc"])
    if len(location) > 2 and location[0] == "trees" and location[2] in _TAGS:
        location = location[:2] + location[3:]
    return location


def _origin_of(location: tuple, origins: Mapping, environment: Mapping, source, document):
    for where, name in environment.items():
        inside = location[: len(where)] == where  # the problem is in the variable's value
        only = where[: len(location)] == location and location[0] not in document
        if location and (inside or only):
            return f"environment variable {name}"
    origin = origins.get(location[0], source) if location else source
    if isinstance(origin, list):
        if len(location) > 1 and isinstance(location[1], int) and location[1] < len(origin):
            return origin[location[1]]
        return ", ".join(dict.fromkeys(str(o) for o in origin))
    return origin


def _describe(location: tuple, error: Mapping[str, Any]) -> str:
    dotted = ""
    for part in location:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        key = location[-1] if location else "?"
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
    overrides: Mapping[str, Any] | None = None,
    catalog_variables: bool = True,
) -> Config:
    """Validate a document as a :class:`Config`, with the ``TILED_*`` variables over it and
    ``overrides`` over those; every problem is one line of the :class:`ConfigError`.
    ``catalog_variables=False``: the ``TILED_CATALOG_*`` variables are not read (a command
    that makes the catalog section of its arguments, as upstream's ``serve catalog``)."""
    from ..server.settings import read_environment

    source = Path(source) if source is not None else None
    environment, from_environment = read_environment().document()
    if "catalog" not in document or not catalog_variables:
        # As upstream reads them: into a catalog section the configuration has, never one of
        # their own (which would clash with its trees).
        environment.pop("catalog", None)
    merged = _overlay(_overlay(dict(document), environment), dict(overrides or {}))
    try:
        config = Config.model_validate(merged)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            location = _location(error)
            where = _origin_of(location, origins or {}, from_environment, source, document)
            text = _describe(location, error)
            problems.append(f"{where}: {text}" if where else text)
        raise ConfigError(list(dict.fromkeys(problems))) from None
    config._source = source.absolute() if source is not None else None
    config._origins = dict(origins or {})
    return config


def parse_configs(path: str | Path) -> Config:
    """Read and validate a configuration file, or a directory of ``.yml``/``.yaml`` files.

    Files of a directory are read in name order and merged (:func:`merge_documents`).
    ``${NAME}`` references are expanded and relative paths made absolute against the
    configuration's directory. Raises :class:`ConfigError`.
    """
    path = Path(path).expanduser()
    merged, origins = read_documents(path)
    return validate_config(merged, source=path, origins=origins)


# --- build_app's arguments -----------------------------------------------------------------------

_NO_EFFECT = {
    "object_cache": "upstream deprecated it; it has no effect there either",
}


_SERVER_SETTINGS = (
    "allow_origins", "response_bytesize_limit", "exact_count_limit", "database",
    "zarr_consolidated_max_nodes", "zarr_cache_control", "zarr_listing_max", "expose_raw_assets",
    "reject_undeclared_specs", "zarr_write_compressors", "zarr_write_max_bytes",
    "write_max_bytes",
    "zarr_direct_reads",
)  # fmt: skip


def _server_settings(config: Config) -> dict[str, Any]:
    settings = {
        name: getattr(config, name)
        for name in _SERVER_SETTINGS
        if getattr(config, name) is not None
    }
    if config.zarr is not None:
        settings["zarr"] = config.zarr.model_dump()
    if config.webhooks is not None:
        settings["webhooks"] = config.webhooks.model_dump()
    if config.streaming_cache is not None:
        settings["streaming_cache"] = config.streaming_cache.model_dump()
    if config.uvicorn.root_path:
        settings["root_path"] = config.uvicorn.root_path
    return settings


def _tree(spec: TreeSpec | CatalogTreeSpec, index: int, config: Config, directory) -> Any:
    what = f"trees[{index}] ({spec.path})" if config.catalog is None else "catalog"
    if isinstance(spec, CatalogTreeSpec):
        defaults = {
            name: getattr(config, name)
            for name in (
                "catalog_pool_size", "catalog_max_overflow", "storage_pool_size",
                "storage_max_overflow", "create_mount_nodes_if_not_exist",
            )
        }  # fmt: skip
        where = "catalog." if config.catalog is not None else f"{what}: args."
        return build.catalog_tree(spec.args.from_uri_kwargs(defaults, directory, where), what)
    return build.instantiate_tree(spec.tree, spec.args, what, directory)


def construct_build_app_kwargs(
    config: Config | Mapping[str, Any], *, source_filepath: str | Path | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``build_app`` that a configuration describes.

    Imports and builds the authenticators, the access policy, routers, media types and
    ``?format=`` aliases, then the trees (several are mounted under synthetic ``MapAdapter``
    parents, their startup/background/shutdown tasks and routers carried up to the root).
    Problems are :class:`ConfigError` lines naming the file and the key.
    """
    if not isinstance(config, Config):
        config = validate_config(config, source=source_filepath)
    directory = config.directory
    if directory is None and source_filepath is not None:
        source = Path(source_filepath).absolute()
        directory = source if source.is_dir() else source.parent
    try:
        return _build_app_kwargs(config, directory)
    except ConfigError as err:
        raise ConfigError([_in_file(problem, config) for problem in err.problems]) from None


def _in_file(problem: str, config: Config) -> str:
    """``problem`` (which starts with a key, as ``trees[1] (/raw): ...``) after its file."""
    match = re.match(r"([A-Za-z_]+)(?:\[(\d+)\])?", problem)
    location = (match.group(1), int(match.group(2))) if match and match.group(2) else ()
    location = location or ((match.group(1),) if match else ())
    where = _origin_of(location, config._origins, {}, config.source, {}) if location else None
    where = where if where is not None else config.source
    return f"{where}: {problem}" if where is not None else problem


def _build_app_kwargs(config: Config, directory: Path | None) -> dict[str, Any]:
    providers = build.authenticators(config.authentication.providers, directory)
    policy = config.access_control.build(directory) if config.access_control else None
    routers = [
        build.router(reference, directory, f"routers[{index}]")
        for index, reference in enumerate(config.routers)
    ]
    registry = build.serialization_registry(config.media_types, config.file_extensions, directory)
    validators = build.validation_registry(config.specs, directory)
    specs = config.tree_specs
    mounted = [(spec.segments, _tree(spec, i, config, directory)) for i, spec in enumerate(specs)]
    tree = build.mount(mounted)
    tasks, carried = build.carried_tasks_and_routers(tree, mounted)
    for name, why in _NO_EFFECT.items():
        if getattr(config, name) is not None:
            logger.warning("Configuration key %r is accepted but has no effect: %s.", name, why)
    return {
        "tree": tree,
        "authentication": config.authentication.model_copy(update={"providers": providers}),
        "server_settings": _server_settings(config),
        "access_policy": policy,
        "include_routers": carried + routers,
        "serialization_registry": registry,
        "validation_registry": validators,
        "tasks": tasks if any(tasks.values()) else None,
    }

"""Entry points: ``from_uri``, ``from_context``, ``from_profile``, and which client class
serves which node."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .context import UNSET, Context
from .utils import ClientError, path_url

# Structure family or spec name -> "module:Class" of the client serving it. Specs win over
# families (an xarray dataset is a container with the ``xarray_dataset`` spec).
NUMPY_CLIENTS: dict[str, str] = {
    "container": "tiled.client.container:Container",
    "array": "tiled.client.array:ArrayClient",
    "sparse": "tiled.client.sparse:SparseClient",
    "table": "tiled.client.dataframe:DataFrameClient",
    "awkward": "tiled.client.awkward:AwkwardClient",
    "ragged": "tiled.client.ragged:RaggedClient",
    "xarray_dataset": "tiled.client.xarray:DatasetClient",
}
DASK_CLIENTS: dict[str, str] = {
    **NUMPY_CLIENTS,
    "array": "tiled.client.array:DaskArrayClient",
    "table": "tiled.client.dataframe:DaskDataFrameClient",
    "xarray_dataset": "tiled.client.xarray:DaskDatasetClient",
}
DISPATCH = {"numpy": NUMPY_CLIENTS, "dask": DASK_CLIENTS}
FALLBACK = "tiled.client.base:BaseClient"
# Arguments upstream's from_uri took once and now ignores.
DEPRECATED_ARGUMENTS = frozenset(
    {"username", "auth_provider", "prompt_for_reauthentication"}
)  # families this client has no class for yet


# What a 'direct' profile may say of the context of its in-process server.
DIRECT_CONTEXT_OPTIONS = ("api_key", "headers", "timeout", "show_progress", "cache")


def _resolve(entry: Any) -> type:
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        return getattr(importlib.import_module(module), name)
    return entry


def client_class_for(item: dict[str, Any], structure_clients: Any) -> type:
    """The client class of a node: by its specs (last first), else by its family."""
    table: Mapping[str, Any] = (
        DISPATCH[structure_clients] if isinstance(structure_clients, str) else structure_clients
    )
    attributes = item["attributes"]
    for spec in reversed(attributes.get("specs") or []):
        name = spec["name"] if isinstance(spec, dict) else str(spec)
        if name in table:
            return _resolve(table[name])
    family = attributes.get("structure_family") or "container"
    return _resolve(table.get(family, FALLBACK))


def from_context(
    context: Context,
    structure_clients: Any = "numpy",
    node_path_parts: list[str] | None = None,
    include_data_sources: bool = False,
    remember_me: bool = True,
) -> Any:
    """The client of the node at ``node_path_parts`` (default the root) of ``context``."""
    if isinstance(structure_clients, str) and structure_clients not in DISPATCH:
        raise ValueError(f"structure_clients must be one of {list(DISPATCH)} or a mapping")
    # Credentials already at hand (a key, a login, a header given by the caller) are used.
    if context.authentication_required and not context.auth_headers() and context.tokens is None:
        if not context.authentication_providers:
            raise RuntimeError(
                "This server requires API key authentication: pass api_key=... or set "
                "TILED_API_KEY."
            )
        if not (remember_me and context.use_cached_tokens()):
            context.authenticate(remember_me=remember_me)
    params = {"include_data_sources": "true"} if include_data_sources else None
    path = path_url(node_path_parts or [])
    try:
        item = context.get_json(f"metadata/{path}", params=params)["data"]
    except ClientError as error:
        if error.status_code == 404:
            raise KeyError("/".join(node_path_parts or [])) from None
        raise
    cls = client_class_for(item, structure_clients)
    return cls(
        context, item=item, structure_clients=structure_clients,
        include_data_sources=include_data_sources,
    )  # fmt: skip


def from_uri(
    uri: str,
    structure_clients: Any = "numpy",
    *,
    cache: Any = UNSET,
    remember_me: bool = True,
    api_key: str | None = None,
    verify: bool | str = True,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    include_data_sources: bool = False,
    auth: Any = None,
    max_connections: int = 8,
    show_progress: bool | None = None,
    **deprecated: Any,
) -> Any:
    """The client of the node ``uri`` names: a server (``http://host:8000``), its API root, or
    a node (``.../api/v1/metadata/a/b``). ``?api_key=`` in ``uri`` is sent as a header."""
    unknown = set(deprecated) - DEPRECATED_ARGUMENTS
    if unknown:
        raise TypeError(f"from_uri() got unexpected keyword arguments {sorted(unknown)}")
    if deprecated:
        import warnings

        # A UserWarning (not a DeprecationWarning, hidden by default): the caller expects
        # these arguments to do something, and they do nothing.
        warnings.warn(
            f"from_uri() ignores {sorted(deprecated)}, as upstream's later versions do",
            UserWarning, stacklevel=2,
        )  # fmt: skip
    context, path = Context.from_any_uri(
        uri, api_key=api_key, headers=headers, timeout=timeout, verify=verify,
        max_connections=max_connections, show_progress=show_progress, cache=cache,
    )  # fmt: skip
    return from_context(
        context, structure_clients, node_path_parts=path,
        include_data_sources=include_data_sources, remember_me=remember_me,
    )  # fmt: skip


def from_profile(name: str, structure_clients: Any = None, **overrides: Any) -> Any:
    """The client a profile describes (``uri``, ``api_key``, ``headers``, ...; see
    :mod:`tiled.profiles`), with ``overrides`` taking precedence."""
    from ..profiles import load_profiles

    profiles = load_profiles()
    if name not in profiles:
        raise KeyError(f"No profile {name!r}; known: {sorted(profiles)}")
    filepath, content = profiles[name]
    settings = {**content, **overrides}
    if isinstance(settings.get("cache"), Mapping):  # a profile's cache: Cache's arguments
        from .cache import Cache

        settings["cache"] = Cache(**settings["cache"])
    if structure_clients is not None:
        settings["structure_clients"] = structure_clients
    if "direct" in settings:
        return _from_direct_profile(filepath, settings)
    return from_uri(settings.pop("uri"), **settings)


def _from_direct_profile(filepath: Any, settings: dict[str, Any]) -> Any:
    """A profile whose ``direct`` section is a server configuration: the server runs in this
    process. An invalid section raises pydantic's ValidationError, naming the bad field."""
    from ..config import Config
    from ..server.app import build_app_from_config

    config = Config.model_validate(settings.pop("direct"))
    app = build_app_from_config(config, source_filepath=filepath)
    structure_clients = settings.pop("structure_clients", "numpy")
    context_options = {key: settings.pop(key) for key in DIRECT_CONTEXT_OPTIONS if key in settings}
    context = Context.from_app(app, **context_options)
    return from_context(context, structure_clients, **settings)


__all__ = ["client_class_for", "from_context", "from_profile", "from_uri"]

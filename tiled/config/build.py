"""Turning a validated configuration into objects: imports, trees, registries, policies.

Every failure is a :class:`ConfigError` whose line starts with the key it concerns
(``trees[1] (/raw)``, ``media_types.array.image/png``, ``access_control.args.tags``...).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnsupportedSetting


def import_from_config(reference: str, directory: str | Path | None, what: str) -> Any:
    """Import ``package.module:attribute`` or ``path/to/file.py:attribute``.

    Modules next to the configuration are importable: its directory is put on ``sys.path``
    (once, ahead of the rest). A ``.py`` file path is relative to the directory.
    """
    from ..utils import import_object

    module_part, colon, attribute = reference.partition(":")
    try:
        if module_part.endswith(".py") or "/" in module_part:
            obj: Any = _module_from_file(module_part, directory)
            for part in attribute.split(".") if colon and attribute else []:
                obj = getattr(obj, part)
            return obj
        if directory is not None and str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
        return import_object(reference)
    except (ImportError, AttributeError) as err:
        text = str(err)  # import_object's messages name the reference already
        if not text.lower().startswith(f"cannot import {reference!r}".lower()):
            text = f"cannot import {reference!r}: {text}"
        raise ConfigError(f"{what}: {text[0].lower()}{text[1:]}") from err
    except Exception as err:  # the module itself fails (a syntax error, an exception)
        raise ConfigError(
            f"{what}: cannot import {reference!r}: {type(err).__name__}: {_first_line(err)}"
        ) from err


def _module_from_file(text: str, directory: str | Path | None) -> Any:
    file = Path(text).expanduser()
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
    return module


def resolve(value: Any, directory: Path | None, what: str) -> Any:
    """``value`` itself, or the object an import path names."""
    return import_from_config(value, directory, what) if isinstance(value, str) else value


def call_with_args(target: Any, args: Mapping[str, Any], what: str, name: Any = None) -> Any:
    """``target(**args)``, with an unusable argument reported against ``what``."""
    name = getattr(target, "__qualname__", target) if name is None else name
    try:
        return target(**args)
    except UnsupportedSetting as err:
        raise ConfigError(
            f"{what}.args.{err.key}: not supported by this server: {err.why}"
        ) from None
    except ConfigError as err:
        raise ConfigError([f"{what}: {problem}" for problem in err.problems]) from None
    except (TypeError, ValueError, ImportError, OSError, KeyError) as err:
        raise ConfigError(f"{what}: could not call {name!r}: {_first_line(err)}") from err
    except Exception as err:
        raise ConfigError(
            f"{what}: could not call {name!r}: {type(err).__name__}: {_first_line(err)}"
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def catalog_tree(kwargs: Mapping[str, Any], what: str) -> Any:
    """A SQL catalog (``tiled.catalog.from_uri``) from validated arguments."""
    try:
        from ..catalog import from_uri
    except ImportError as err:
        raise ConfigError(f"{what}: the SQL catalog is not available: {err}") from err
    try:
        return call_with_args(from_uri, kwargs, what, "catalog")
    except ConfigError:
        raise
    except Exception as err:  # e.g. an unparsable database URI
        raise ConfigError(f"{what}: cannot open the catalog: {_first_line(err)}") from err


def _is_adapter(obj: Any) -> bool:
    return hasattr(obj, "structure_family")


def instantiate_tree(tree: Any, args: Mapping[str, Any], what: str, directory: Path | None):
    """The adapter a ``trees`` entry names: imported, and called with ``args`` if callable."""
    target = resolve(tree, directory, what)
    if isinstance(target, type) or (callable(target) and not _is_adapter(target)):
        target = call_with_args(target, args, what, tree)
        if inspect.isawaitable(target):
            if inspect.iscoroutine(target):
                target.close()  # never to be awaited
            raise ConfigError(f"{what}: {tree!r} returned a coroutine, not a tree")
    elif args:
        raise ConfigError(f"{what}: 'args' are given but {tree!r} is not callable")
    if isinstance(target, type) or not _is_adapter(target):
        raise ConfigError(
            f"{what}: {tree!r} gave a {type(target).__name__} object, which is not a tree "
            "(an adapter, with a structure_family)"
        )
    return target


def mount(trees: list[tuple[tuple[str, ...], Any]]) -> Any:
    """One root for several trees: synthetic ``MapAdapter`` parents make up the paths."""
    from ..adapters.mapping import MapAdapter

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
    # Which trees were mounted where: see served_trees.
    root.mounted_trees = [("/" + "/".join(segments), tree) for segments, tree in trees]
    return root


def served_trees(root: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``(path, tree)`` of each tree a server given ``root`` serves: the trees of a ``trees:``
    configuration where :func:`mount` placed them, else ``root`` itself at ``()`` (the command
    line checks their catalogs before serving; errors and webhooks name nodes below them)."""
    mounted = getattr(root, "mounted_trees", [("/", root)])
    return [(tuple(part for part in path.split("/") if part), tree) for path, tree in mounted]


def carried_tasks_and_routers(root: Any, mounted: list[tuple[tuple[str, ...], Any]]):
    """Tasks and routers of trees mounted below a synthetic root (build_app sees the root's)."""
    tasks: dict[str, list] = {"startup": [], "background": [], "shutdown": []}
    routers: list[Any] = []
    if root is mounted[0][1]:
        return tasks, routers
    seen: set[int] = set()
    for _, subtree in mounted:
        if id(subtree) in seen:
            continue
        seen.add(id(subtree))
        for kind in tasks:
            tasks[kind].extend(getattr(subtree, f"{kind}_tasks", []))
        routers.extend(getattr(subtree, "include_routers", []))
    return tasks, routers


def _as_bytes(encoder: Callable[..., Any]) -> Callable[..., bytes]:
    # Upstream's exporters may return text or a buffer; responses are bytes.
    def encode(data: Any, metadata: Any) -> bytes:
        result = encoder(data, metadata)
        return result.encode() if isinstance(result, str) else bytes(result)

    return encode


def serialization_registry(
    media_types: Mapping[str, Mapping[str, Any]],
    file_extensions: Mapping[str, str],
    directory: Path | None,
) -> Any:
    """The default encoders plus the configured ones and ``?format=`` aliases (or None)."""
    if not media_types and not file_extensions:
        return None
    from ..serialization import SerializationRegistry, register_defaults

    registry = register_defaults(SerializationRegistry())
    for key, encoders in media_types.items():
        for media_type, reference in encoders.items():
            what = f"media_types.{key}.{media_type}"
            encoder = resolve(reference, directory, what)
            if not callable(encoder):
                raise ConfigError(f"{what}: {reference!r} is not a function (data, metadata)")
            registry.register(key, media_type, _as_bytes(encoder))
    for extension, media_type in file_extensions.items():
        registry.register_alias(extension, media_type)
    return registry


def validation_registry(specs: list[Any], directory: Path | None) -> Any:
    """The default validators plus one per declared spec (a declared spec without a validator
    is accepted as it is, and counts as declared for ``reject_undeclared_specs``)."""
    from ..validation_registration import default_validation_registry

    registry = default_validation_registry.copy()
    for index, declaration in enumerate(specs):
        what = f"specs[{index}].validator"
        validator = (
            _accept_as_declared
            if declaration.validator is None
            else resolve(declaration.validator, directory, what)
        )
        if not callable(validator):
            raise ConfigError(
                f"{what}: {declaration.validator!r} is not a function "
                "(spec, metadata, entry, structure_family, structure)"
            )
        registry.register(declaration.spec, validator)
    return registry


def _accept_as_declared(*args: Any) -> None:
    return None


def authenticators(providers: list[Any], directory: Path | None) -> list[Any]:
    """Provider specs with their authenticators built (import path or class + args)."""
    built = []
    for index, spec in enumerate(providers):
        what = f"authentication.providers[{index}] ({spec.provider})"
        target = resolve(spec.authenticator, directory, what)
        if isinstance(target, type):
            target = call_with_args(target, spec.args, what, spec.authenticator)
        elif spec.args:
            raise ConfigError(f"{what}: 'args' are given but the authenticator is an object")
        if not callable(getattr(target, "authenticate", None)):
            raise ConfigError(
                f"{what}: {spec.authenticator!r} is not an authenticator "
                "(it has no authenticate method)"
            )
        built.append(spec.model_copy(update={"authenticator": target, "args": {}}))
    return built


def access_policy(policy: Any, args: Mapping[str, Any], directory: Path | None) -> Any:
    from ..access.policies import AccessPolicy
    from ..access.upstream_policies import as_access_policy, is_upstream_policy

    def is_policy(candidate: Any) -> bool:
        return isinstance(candidate, AccessPolicy) or is_upstream_policy(candidate)

    target = resolve(policy, directory, "access_control.access_policy")
    if isinstance(target, type) or (callable(target) and not is_policy(target)):
        target = call_with_args(target, args, "access_control", policy)
    elif args:
        raise ConfigError("access_control: 'args' are given but the access_policy is an object")
    if not is_policy(target):
        raise ConfigError(
            f"access_control.access_policy: {policy!r} gave a {type(target).__name__} object, "
            "which is not an access policy (allowed_scopes and visible, or upstream's "
            "coroutines allowed_scopes and filters)"
        )
    return as_access_policy(target)


def router(reference: Any, directory: Path | None, what: str) -> Any:
    from fastapi import APIRouter

    found = resolve(reference, directory, what)
    if not isinstance(found, APIRouter):
        raise ConfigError(f"{what}: {reference!r} is a {type(found).__name__}, not an APIRouter")
    return found

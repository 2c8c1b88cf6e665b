"""Reading configuration files: YAML, ``${NAME}`` expansion, relative paths, merging.

:func:`read_documents` returns one merged document and, for error messages, the file each
top-level value came from. Nothing here validates settings; :mod:`tiled.config` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..server.settings import variable
from .errors import ConfigError

# Top-level lists that concatenate when a directory of files is merged.
CONCATENATED_KEYS = ("allow_origins", "trees", "specs", "routers")

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment_variables(value: Any, *, where: str = "", _path: str = "") -> Any:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) in every string of a parsed document.

    ``$${NAME}`` stands for a literal ``${NAME}``. An unset variable without a default is a
    :class:`ConfigError` naming it and the key.
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
        found = variable(name)
        if found is not None:
            return found
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
    (``postgresql://``, ``file://``, ``s3://``), ``:memory:`` and non-strings are left alone.
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
    if "://" in value or value.startswith((":memory:", "file:")) or os.path.isabs(value):
        return value
    return os.path.normpath(directory / os.path.expanduser(value))


def _resolve_catalog_paths(section: Any, directory: Path) -> Any:
    if not isinstance(section, Mapping):
        return section
    section = dict(section)
    if "uri" in section:
        section["uri"] = resolve_relative_path(section["uri"], directory)
    for key in ("writable_storage", "readable_storage"):
        value = section.get(key)
        if isinstance(value, list):
            section[key] = [resolve_relative_path(item, directory) for item in value]
        elif value is not None:
            section[key] = resolve_relative_path(value, directory)
    return section


def resolve_relative_paths(document: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """Make the file paths of one document absolute against its directory.

    Resolved: ``catalog.uri``, ``catalog.writable_storage``, ``catalog.readable_storage``, the
    same keys in the ``args`` of ``tree: catalog`` entries, ``database.uri`` and
    ``uvicorn.log_config``. (Import paths are resolved when they are imported.)
    """
    document = dict(document)
    if "catalog" in document:
        document["catalog"] = _resolve_catalog_paths(document["catalog"], directory)
    if isinstance(document.get("trees"), list):
        document["trees"] = [
            {**spec, "args": _resolve_catalog_paths(spec.get("args"), directory)}
            if isinstance(spec, Mapping) and spec.get("tree") == "catalog"
            else spec
            for spec in document["trees"]
        ]
    for section, key in (("database", "uri"), ("uvicorn", "log_config")):
        value = document.get(section)
        if isinstance(value, Mapping) and isinstance(value.get(key), str):
            document[section] = {**value, key: resolve_relative_path(value[key], directory)}
    return document


def load_document(path: Path) -> dict[str, Any]:
    """One file: parsed, ``${NAME}`` expanded, relative paths resolved."""
    import yaml

    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file: {err.strerror}") from err
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML in UTF-8 is expected)") from None
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
    # As upstream: a relative path means the same file whichever server reads the configuration,
    # relative to the working directory (made absolute here, so messages name the real file).
    return resolve_relative_paths(document, Path.cwd())


def config_files(path: Path) -> list[Path]:
    """The file itself, or the ``.yml``/``.yaml`` files of a directory in name order."""
    try:
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file()
            )
            if not files:
                raise ConfigError(f"{path}: the directory holds no .yml or .yaml files")
            return files
        if path.exists():
            return [path]
    except OSError as err:  # a name too long, a folder not readable
        raise ConfigError(f"{path}: {err.strerror}") from None
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


def read_documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged document of a file or directory, and the origin of each top-level value."""
    return merge_documents([(file, load_document(file)) for file in config_files(path)])

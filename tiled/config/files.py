"""Reading configuration files: YAML, ``${NAME}`` expansion, relative paths, merging.

:func:`read_documents` returns one merged document and, for error messages, the file each
top-level value came from. Nothing here validates settings; :mod:`tiled.config` does.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..server.settings import variable
from .errors import ConfigError

logger = logging.getLogger(__name__)

# Top-level lists that concatenate when a directory of files is merged.
CONCATENATED_KEYS = ("allow_origins", "trees", "specs", "routers")

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# ``$NAME`` without braces, as upstream expands it (``os.path.expandvars``): a variable that is
# not set is left as it is written (a ``$`` in a password, say).
_BARE_VARIABLE = re.compile(r"\$(\w+)", re.ASCII)
# The most values a file may hold once its YAML aliases are expanded (aliases of aliases make
# "billion laughs": a few lines that would take gigabytes).
MAX_VALUES = 1_000_000


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

    def substitute_bare(match: re.Match) -> str:
        found = variable(match.group(1))
        return match.group(0) if found is None else found

    # Braced references first; a bare ``$NAME`` in what they produced is left alone.
    return "".join(
        _BARE_VARIABLE.sub(substitute_bare, part) if index % 2 == 0 else part
        for index, part in enumerate(_split_braced(value, substitute))
    )


def _split_braced(value: str, substitute) -> list[str]:
    """``value`` as [text, expansion, text, expansion, ..., text] (``${...}`` expanded)."""
    parts: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(value):
        parts += [value[position : match.start()], substitute(match)]
        position = match.end()
    return [*parts, value[position:]]


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


def _duplicate_key_loader(path: Path) -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML's safe loader, warning of a key given twice in one mapping (upstream reads the
        file too, keeping the last value, so it is not an error; but it is rarely meant)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    mark = key_node.start_mark
                    logger.warning(
                        "%s: line %d: the key %r is given twice in one mapping; the last "
                        "value is used",
                        path, mark.line + 1, key,
                    )  # fmt: skip
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


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
        document = yaml.load(text, Loader=_duplicate_key_loader(path))  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML: {problem}{where}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    _check_shape(document, path)
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


MAX_DEPTH = 100


def _check_shape(document: Any, path: Path) -> None:
    """Refuse a document that would be unusable once its aliases are expanded: one that holds
    itself (``&a [*a]``), is nested more than :data:`MAX_DEPTH` levels deep, or expands to more
    than :data:`MAX_VALUES` values. Shared values are counted once per use, but visited once."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if children is None or (not done and id(node) in sizes):
            continue
        if done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            depths[id(node)] = 1 + max((depths.get(id(c), 0) for c in children), default=0)
            if sizes[id(node)] > MAX_VALUES:
                raise ConfigError(
                    f"{path}: the YAML expands to more than {MAX_VALUES:,} values "
                    "(aliases of aliases?); refusing to read it"
                )
            if depths[id(node)] > MAX_DEPTH:
                raise ConfigError(f"{path}: the YAML is nested more than {MAX_DEPTH} levels deep")
            continue
        if id(node) in open_:
            raise ConfigError(f"{path}: a YAML alias refers to a value that contains it")
        open_.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_:
                raise ConfigError(f"{path}: a YAML alias refers to a value that contains it")
            stack.append((child, False))


def _children(node: Any) -> list[Any] | None:
    if isinstance(node, Mapping):
        return [*node.keys(), *node.values()]
    if isinstance(node, list):
        return list(node)
    return None


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

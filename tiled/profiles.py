"""Client profiles: named connection settings in YAML files.

A profile file maps names to settings; a profile names a server by ``uri``, or holds a whole
server configuration in-line under ``direct`` (served in this process, no network)::

    local:
      uri: http://localhost:8000
      api_key: secret
    example:
      direct:
        trees:
          - path: /
            tree: tiled.examples.generated_minimal:tree

Files are read from these directories (:data:`paths`), later ones taking precedence: the
site's (``TILED_SITE_PROFILES``, default ``/etc/tiled/profiles``), the environment's
(``{sys.prefix}/etc/tiled/profiles``), the user's (``TILED_PROFILES``, default
``~/.config/tiled/profiles``). A file that cannot be read as profiles is skipped with a
warning; so is a name that two files of one directory define (neither can be preferred),
unless a later directory defines it too.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _user_directory() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tiled" / "profiles"


def _paths() -> list[Path]:
    return [
        Path(os.environ.get("TILED_SITE_PROFILES", "/etc/tiled/profiles")),
        Path(sys.prefix) / "etc" / "tiled" / "profiles",
        Path(os.environ.get("TILED_PROFILES", str(_user_directory()))),
    ]


# The search path, lowest precedence first; a list that callers (tests) may edit in place.
paths = _paths()

PROFILE_SUFFIXES = (".yml", ".yaml")


class ProfileError(ValueError):
    """A profile file that cannot be read as profiles."""


class ProfileNotFound(KeyError):
    """No profile of that name in the search path."""


class ProfileExists(FileExistsError, ValueError):
    """:func:`create_profile` would replace a profile (pass ``overwrite=True``)."""


# Each key a profile may have -> the check of its value (None: any value).
PROFILE_KEYS: dict[str, Any] = {
    "uri": lambda v: isinstance(v, str),
    "direct": lambda v: isinstance(v, Mapping),
    "api_key": lambda v: v is None or isinstance(v, str),
    "headers": lambda v: isinstance(v, Mapping),
    "structure_clients": lambda v: v in ("numpy", "dask") or isinstance(v, Mapping),
    "cache": lambda v: isinstance(v, Mapping),
    "timeout": lambda v: isinstance(v, Mapping | int | float),
    "verify": lambda v: isinstance(v, bool | str),
    "max_connections": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "show_progress": lambda v: isinstance(v, bool),
    "include_data_sources": lambda v: isinstance(v, bool),
    "remember_me": lambda v: isinstance(v, bool),
    "token_cache": lambda v: isinstance(v, str),
    # Accepted and ignored, as upstream does (credentials are asked for when needed).
    "username": None,
    "auth_provider": None,
}


def check_profile(name: str, settings: Any) -> dict[str, Any]:
    """The settings of profile ``name`` as a dict; raises :class:`ProfileError` naming what
    is wrong (exactly one of ``uri`` and ``direct``; known keys with values of their kind)."""
    if not isinstance(settings, Mapping):
        raise ProfileError(f"profile {name!r} must map settings to values")
    if ("uri" in settings) == ("direct" in settings):
        raise ProfileError(f"profile {name!r} needs exactly one of 'uri' and 'direct'")
    for key, value in settings.items():
        if key not in PROFILE_KEYS:
            raise ProfileError(f"profile {name!r}: unknown setting {key!r}")
        check = PROFILE_KEYS[key]
        if check is not None and not check(value):
            raise ProfileError(f"profile {name!r}: {key}: unexpected value {value!r}")
    return dict(settings)


def read_profile_file(file: Path) -> dict[str, dict[str, Any]]:
    """The profiles one file defines; raises :class:`ProfileError`."""
    import yaml

    try:
        content = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ProfileError(f"{file}: {error}") from None
    if not isinstance(content, Mapping) or not content:
        raise ProfileError(f"{file}: a profile file maps names to settings")
    try:
        return {str(name): check_profile(str(name), s) for name, s in content.items()}
    except ProfileError as error:
        raise ProfileError(f"{file}: {error}") from None


def _profile_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        file for file in directory.iterdir()
        if file.suffix in PROFILE_SUFFIXES and not file.name.startswith(".")
    )  # fmt: skip


def _gather() -> dict[str, tuple[Path, dict[str, Any]]]:
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    ambiguous: dict[str, list[Path]] = {}
    for directory in paths:
        in_directory: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for file in _profile_files(directory):
            try:
                profiles = read_profile_file(file)
            except ProfileError as error:
                warnings.warn(f"Skipping a profile file: {error}", stacklevel=3)
                continue
            for name, settings in profiles.items():
                in_directory.setdefault(name, []).append((file, settings))
        for name, definitions in in_directory.items():
            # A later directory settles what an earlier one left ambiguous.
            ambiguous.pop(name, None)
            if len(definitions) == 1:
                found[name] = definitions[0]
            else:
                found.pop(name, None)
                ambiguous[name] = [file for file, _ in definitions]
    for name, files in ambiguous.items():
        warnings.warn(
            f"Profile {name!r} is defined by more than one file of one directory "
            f"({', '.join(map(str, files))}); it is left out. Remove one, or define "
            f"{name!r} in {paths[-1]} to override them.",
            stacklevel=3,
        )
    return found


@functools.lru_cache(maxsize=1)
def load_profiles() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every profile: name -> (the file defining it, its settings). Read once; call
    ``load_profiles.cache_clear()`` to read the files again."""
    return _gather()


def list_profiles() -> dict[str, Path]:
    """Every profile's name and the file defining it, read from the files now."""
    return {name: file for name, (file, _) in _gather().items()}


def user_profiles_directory() -> Path:
    """Where :func:`create_profile` writes: the last (highest-precedence) directory."""
    return paths[-1]


def _default_file() -> Path:
    return user_profiles_directory().parent / "default_profile"


def get_default_profile_name() -> str | None:
    """The profile used when none is named (``tiled profile set-default``)."""
    try:
        name = _default_file().read_text().strip()
    except OSError:
        return None
    return name or None


def set_default_profile_name(name: str | None) -> None:
    """Make ``name`` the default profile; None: no default. Raises
    :class:`ProfileNotFound` for a name no file defines."""
    path = _default_file()
    if name is None:
        path.unlink(missing_ok=True)
        return
    if name not in list_profiles():
        raise ProfileNotFound(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name + "\n")


def _profile_file_stem(name: str) -> str:
    """``name`` as the stem of its file: one plain file name in the profiles directory (a
    name holding a path would write, or delete, a file elsewhere)."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name) > 200:
        raise ProfileError(
            f"A profile name must be a plain file name (no '/', '\\', leading '.', "
            f"at most 200 characters), not {name!r}"
        )
    return name


def create_profile(
    uri: str,
    name: str,
    verify: bool | str = True,
    overwrite: bool = False,
    **settings: Any,
) -> Path:
    """Write profile ``name`` (server ``uri``, TLS ``verify``, any other ``settings``) to a
    file of its own in the user's profiles directory; raises :class:`ProfileExists` rather
    than replace one, unless ``overwrite``."""
    import yaml

    content = check_profile(name, {"uri": uri, "verify": verify, **settings})
    path = user_profiles_directory() / f"{_profile_file_stem(name)}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "w" if overwrite else "x") as file:
            file.write(yaml.safe_dump({name: content}, sort_keys=False))
    except FileExistsError:
        raise ProfileExists(
            f"A profile file {path} exists; pass overwrite=True (--overwrite) to replace it"
        ) from None
    load_profiles.cache_clear()
    return path


def delete_profile(name: str) -> Path | None:
    """Remove the file ``{name}.yml`` (or ``.yaml``) nearest the user in the search path,
    as :func:`create_profile` writes them; the file removed, or None if there was none."""
    stem = _profile_file_stem(name)
    for directory in reversed(paths):
        for suffix in PROFILE_SUFFIXES:
            path = directory / f"{stem}{suffix}"
            if path.exists():
                path.unlink()
                load_profiles.cache_clear()
                return path
    return None


__all__ = [
    "ProfileError",
    "ProfileExists",
    "ProfileNotFound",
    "create_profile",
    "delete_profile",
    "get_default_profile_name",
    "list_profiles",
    "load_profiles",
    "paths",
    "set_default_profile_name",
    "user_profiles_directory",
]

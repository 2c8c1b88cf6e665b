"""Client profiles: named connection settings in YAML files.

A profile file maps names to settings, e.g.::

    local:
      uri: http://localhost:8000
      api_key: secret

Files are read from these directories, later ones taking precedence: the site's
(``TILED_SITE_PROFILES``, default ``/etc/tiled/profiles``), the environment's
(``{sys.prefix}/etc/tiled/profiles``), the user's (``TILED_PROFILES``, default
``~/.config/tiled/profiles``).
"""

from __future__ import annotations

import functools
import os
import sys
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


paths = _paths()


class ProfileError(ValueError):
    """A profile file that cannot be read as profiles."""


@functools.lru_cache(maxsize=1)
def load_profiles() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every profile: name -> (the file defining it, its settings)."""
    import yaml

    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for directory in paths:
        if not directory.is_dir():
            continue
        for file in sorted(directory.iterdir()):
            if file.suffix not in (".yml", ".yaml"):
                continue
            try:
                content = yaml.safe_load(file.read_text()) or {}
            except yaml.YAMLError as error:
                raise ProfileError(f"{file}: {error}") from None
            if not isinstance(content, dict):
                raise ProfileError(f"{file}: a profile file maps names to settings")
            for name, settings in content.items():
                if not isinstance(settings, dict) or "uri" not in settings:
                    raise ProfileError(f"{file}: profile {name!r} needs a 'uri'")
                found[str(name)] = (file, dict(settings))
    return found


def user_profiles_directory() -> Path:
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
    path = _default_file()
    if name is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name + "\n")


def create_profile(name: str, settings: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write profile ``name`` to a file of its own in the user's profiles directory."""
    import yaml

    path = user_profiles_directory() / f"{name}.yml"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({name: settings}, sort_keys=False))
    load_profiles.cache_clear()
    return path


def delete_profile(name: str) -> None:
    """Remove the file :func:`create_profile` wrote for ``name``."""
    path = user_profiles_directory() / f"{name}.yml"
    if not path.exists():
        raise KeyError(f"No profile file {path}")
    path.unlink()
    load_profiles.cache_clear()


__all__ = [
    "ProfileError",
    "create_profile",
    "delete_profile",
    "get_default_profile_name",
    "load_profiles",
    "paths",
    "set_default_profile_name",
    "user_profiles_directory",
]

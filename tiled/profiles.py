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


__all__ = ["ProfileError", "load_profiles", "paths", "user_profiles_directory"]

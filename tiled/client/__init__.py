"""The Python client of Tiled servers.

``from tiled.client import from_uri``; ``client = from_uri("http://localhost:8000")``;
``client["a"]["b"][:10]``. Containers are mappings, arrays slice like numpy, tables read as
pandas, xarray datasets as xarray; every node also has ``zarr_store()`` for zarr-python and
xarray. Names are imported on first use, so ``import tiled.client`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ASCENDING": "tiled.client.container",
    "DESCENDING": "tiled.client.container",
    "DELETE_KEY": "tiled.client.base",
    "Context": "tiled.client.context",
    "from_context": "tiled.client.constructors",
    "from_profile": "tiled.client.constructors",
    "from_uri": "tiled.client.constructors",
    "simple": "tiled.client.simple",
    "SERVERS": "tiled.client.simple",
    "SimpleTiledServer": "tiled.server.simple",
    "hide_logs": "tiled.client.logger",
    "show_logs": "tiled.client.logger",
    "record_history": "tiled.client.logger",
    "tree": "tiled.client.tree",
    "ClientError": "tiled.client.utils",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tiled.client' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = getattr(loaded, name)
    globals()[name] = value
    # Loading a submodule binds its name here to the module (``simple``, ``tree``); where a
    # function of that name is what is exported, it takes the name back.
    short = module.rpartition(".")[2]
    if _EXPORTS.get(short) == module:
        globals()[short] = getattr(loaded, short)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""What Python clients of earlier releases expect of a response.

Upstream's server answers each ``python-tiled/<version>`` client in the shape its release
reads; this server does the same. Other clients get the current shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .headers import header
from .middleware import PYTHON_CLIENT_AGENT

# Clients before this build assets with ``Asset(**json)``, which has no ``size``: the key
# makes them fail.
ASSET_SIZE_ADDED_IN = "0.2.13"
# Clients before this send and read a node's ``access_blob`` (and fail without it), not its
# ``access_tags``. Compared on the base version: a development build of 0.2.19 is new.
ACCESS_TAGS_ADDED_IN = "0.2.19"


@dataclass(frozen=True, slots=True)
class ClientDialect:
    omit_asset_size: bool = False
    access_blob: bool = False  # ``access_blob`` instead of ``access_tags``


CURRENT = ClientDialect()
_PREFIX = PYTHON_CLIENT_AGENT.decode()


def client_dialect(request: Any) -> ClientDialect:
    """The response shape the request's client reads."""
    agent = header(request, "user-agent")
    if not agent.startswith(_PREFIX):
        return CURRENT
    return _dialect_of(agent[len(_PREFIX) :])


@functools.lru_cache(maxsize=64)
def _dialect_of(version_text: str) -> ClientDialect:
    from packaging.version import InvalidVersion, Version

    try:
        version = Version(version_text.split()[0])
    except (InvalidVersion, IndexError):
        return CURRENT
    base = Version(version.base_version)
    return ClientDialect(
        omit_asset_size=version < Version(ASSET_SIZE_ADDED_IN),
        access_blob=base < Version(ACCESS_TAGS_ADDED_IN),
    )

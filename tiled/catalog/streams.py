"""Closing the live stream of a catalog node (see :mod:`tiled.streaming`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Catalog

logger = logging.getLogger(__name__)


async def close_stream(catalog: Catalog, node_id: int, segments: tuple[str, ...]) -> None:
    """End the live stream of node ``node_id`` (at ``segments`` in the database) and tell the
    webhooks that hear of it (``stream-closed``); 503 if the datastore is out of reach."""
    from ..errors import ServiceUnavailable
    from .webhooks import stream_closed

    if catalog.streams is not None:
        try:
            await catalog.streams.of_node(node_id).end()
        except Exception:
            logger.exception("The live stream of node %s was not closed", node_id)
            raise ServiceUnavailable(
                "The streaming cache is out of reach; the stream was not closed. Try again later."
            ) from None
    if catalog.webhooks is not None:
        key = segments[-1] if segments else ""
        await catalog.webhooks.announce(node_id, stream_closed(key, segments))

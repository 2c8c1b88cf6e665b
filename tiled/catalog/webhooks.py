"""Webhooks: URLs told of changes below a catalog node (upstream 0.2.20's feature, tables and
wire format).

A webhook is registered on a node and hears of events on that node and on its descendants:

- ``container-child-created``: a child was made in a container (the event belongs to the
  container, so a hook on the new node itself does not hear of its own creation);
- ``container-child-metadata-updated``: a node's metadata or specs were replaced (the event
  belongs to that node);
- ``stream-closed``: a node's live stream was closed (``DELETE /api/v1/stream/close``; the
  event belongs to that node).

Each event a webhook hears becomes a row of ``webhook_deliveries`` (``pending``), which the
process that made the change then POSTs in the background: up to :data:`MAX_ATTEMPTS` tries,
further apart each time, after which the row says ``success`` or ``failed`` with the last
status code and error. The body is the event as JSON; ``X-Tiled-Event-ID`` names the delivery
(the same on every try, for receivers to drop repeats) and, for a webhook with a secret,
``X-Tiled-Signature`` is ``sha256=`` and the HMAC-SHA256 of the body under that secret.
Secrets are stored encrypted under the configured secret keys (the first encrypts, any
decrypts), as upstream stores them: a database carried over from upstream keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import json
import logging
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from .orm import ROOT_ID, nodes, nodes_closure, utcnow, webhook_deliveries, webhooks

if TYPE_CHECKING:
    import httpx

    from .core import Catalog, NodeRecord

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Seconds before the second try, growing this many times for each later one, at most the cap;
# each wait gets up to RETRY_JITTER more, so that receivers back from an outage are not met
# by every server at once.
RETRY_FIRST_WAIT = 1.0
RETRY_GROWTH = 5.0
RETRY_MAX_WAIT = 30.0
RETRY_JITTER = 1.0
DELIVERY_TIMEOUT = 10.0  # seconds per try
CONCURRENT_DELIVERIES = 32  # per catalog and process
# Delivery rows are history: kept this long, looked over this often.
DELIVERY_MAX_AGE = timedelta(days=30)
PRUNE_INTERVAL = 86_400.0
PRUNE_RETRY = 60.0  # after a failure (the database was out of reach)
# At shutdown, deliveries under way get this long to finish; the rest stay "pending".
SHUTDOWN_GRACE = 10.0
ERROR_DETAIL_MAX = 256  # characters of a receiver's answer kept with a failed delivery


class EventType(str, enum.Enum):
    container_child_created = "container-child-created"
    container_child_metadata_updated = "container-child-metadata-updated"
    stream_closed = "stream-closed"


class DeliveryOutcome(str, enum.Enum):
    pending = "pending"
    success = "success"
    failed = "failed"


# --- secrets --------------------------------------------------------------------------------


def _cipher(secret_keys: Sequence[str]) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    # Upstream's derivation (a Fernet key from the SHA-256 of each key), so that secrets it
    # stored decrypt here.
    keys = [base64.urlsafe_b64encode(hashlib.sha256(k.encode()).digest()) for k in secret_keys]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_secret(secret: str, secret_keys: Sequence[str]) -> str:
    return _cipher(secret_keys).encrypt(secret.encode()).decode()


def decrypt_secret(stored: str, secret_keys: Sequence[str]) -> str | None:
    """The secret, or None if none of the keys decrypts it (the keys were changed)."""
    from cryptography.fernet import InvalidToken

    if not secret_keys:
        return None
    try:
        return _cipher(secret_keys).decrypt(stored.encode()).decode()
    except InvalidToken:
        return None


def signature(body: bytes, secret: str) -> str:
    """The ``X-Tiled-Signature`` of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- events ---------------------------------------------------------------------------------


def _utc(value: datetime) -> str:
    # As upstream writes times: UTC with a "Z".
    return value.isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _utc(datetime.now(UTC))


def child_created(record: NodeRecord) -> dict[str, Any]:
    """The event of ``record``'s creation, as its parent's hooks hear it."""
    return {
        "type": EventType.container_child_created.value,
        "timestamp": _now(),
        "key": record.key,
        "path": list(record.segments),
        "structure_family": record.structure_family.value,
        "specs": [spec.to_json() for spec in record.specs],
        "metadata": record.metadata,
    }


def metadata_updated(record: NodeRecord) -> dict[str, Any]:
    """The event of a change to ``record``'s metadata or specs (as they are now)."""
    return {
        "type": EventType.container_child_metadata_updated.value,
        "timestamp": _now(),
        "key": record.key,
        "path": list(record.segments),
        "specs": [spec.to_json() for spec in record.specs],
        "metadata": record.metadata,
    }


def stream_closed(key: str, segments: tuple[str, ...]) -> dict[str, Any]:
    """The event of the closing of the live stream of the node at ``segments``."""
    return {
        "type": EventType.stream_closed.value,
        "timestamp": _now(),
        "key": key,
        "path": list(segments),
    }


# --- rows as the HTTP API shows them ----------------------------------------------------------


def _aware(value: datetime | None) -> str | None:
    # Columns hold naive UTC times.
    return None if value is None else _utc(value.replace(tzinfo=UTC))


def webhook_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": row.events or None,
        "active": bool(row.active),
        "time_created": _aware(row.time_created),
    }


def delivery_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event_type": row.event_type,
        "payload": row.payload,
        "status_code": row.status_code,
        "attempts": row.attempts,
        "outcome": row.outcome,
        "error_detail": row.error_detail,
        "time_created": _aware(row.time_created),
        "delivered_at": _aware(row.delivered_at),
    }


# --- the webhooks of one catalog ---------------------------------------------------------------


class CatalogWebhooks:
    """The webhooks of one catalog database, as one server process keeps and delivers them.

    ``secret_keys`` encrypt the secrets of webhooks (none: webhooks without secrets only).
    ``client`` is the HTTP client deliveries go out through (one of its own by default).
    """

    def __init__(
        self,
        catalog: Catalog,
        secret_keys: Sequence[str] = (),
        client: httpx.AsyncClient | None = None,
    ):
        self._catalog = catalog
        self.secret_keys = list(secret_keys)
        self._client = client
        self._owns_client = client is None
        self._under_way: set[asyncio.Task] = set()
        self._slots: asyncio.Semaphore | None = None
        self._pruning: asyncio.Task | None = None

    def _bookkeeping(self) -> Any:
        # Webhook rows are read by no lookup: writing them leaves resolved nodes as they are.
        return self._catalog.connect(write=True, nodes_changed=False)

    @property
    def mount_path(self) -> tuple[str, ...]:
        """The database path of the node the catalog is served from (its mount_node)."""
        return self._catalog.mount_path

    def of_node(self, node_id: int) -> NodeWebhooks:
        return NodeWebhooks(self, node_id)

    # --- lifetime ---

    async def start(self) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        self._slots = asyncio.Semaphore(CONCURRENT_DELIVERIES)
        self._pruning = asyncio.create_task(self._prune_forever())

    async def stop(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            self._pruning = None
        if self._under_way:
            _, late = await asyncio.wait(list(self._under_way), timeout=SHUTDOWN_GRACE)
            for task in late:
                task.cancel()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- registrations ---

    async def register(
        self, node_id: int, url: str, secret: str | None, events: Iterable[str] | None
    ) -> dict[str, Any]:
        stored_secret = encrypt_secret(secret, self.secret_keys) if secret else None
        values = {
            "node_id": node_id, "url": url, "secret": stored_secret,
            "events": list(events) if events else None, "active": True,
            "time_created": utcnow(), "time_updated": utcnow(),
        }  # fmt: skip
        async with self._bookkeeping() as connection:
            result = await connection.execute(insert(webhooks).values(values))
            (webhook_id,) = result.inserted_primary_key
            row = (await connection.execute(_one(webhook_id))).one()
        return webhook_json(row)

    async def on_node(self, node_id: int) -> list[dict[str, Any]]:
        query = select(webhooks).where(webhooks.c.node_id == node_id).order_by(webhooks.c.id)
        async with self._catalog.connect() as connection:
            return [webhook_json(row) for row in await connection.execute(query)]

    async def node_of(self, webhook_id: int) -> tuple[str, ...] | None:
        """The database path of the node ``webhook_id`` is registered on; None: no such one."""
        async with self._catalog.connect() as connection:
            node_id = (
                await connection.execute(select(webhooks.c.node_id).where(_is(webhook_id)))
            ).scalar_one_or_none()
            if node_id is None:
                return None
            ancestry = (
                select(nodes.c.key)
                .join(nodes_closure, nodes_closure.c.ancestor == nodes.c.id)
                .where(nodes_closure.c.descendant == node_id, nodes.c.id != ROOT_ID)
                .order_by(nodes_closure.c.depth.desc())
            )
            return tuple((await connection.execute(ancestry)).scalars())

    async def remove(self, webhook_id: int) -> None:
        """Delete a webhook and its delivery history (deliveries under way still finish)."""
        async with self._bookkeeping() as connection:
            await connection.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
            )
            await connection.execute(delete(webhooks).where(_is(webhook_id)))

    async def history(self, webhook_id: int, limit: int) -> list[dict[str, Any]]:
        """The latest deliveries first."""
        query = (
            select(webhook_deliveries)
            .where(webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        async with self._catalog.connect() as connection:
            return [delivery_json(row) for row in await connection.execute(query)]

    # --- events ---

    async def announce(self, node_id: int, *events: dict[str, Any]) -> None:
        """Record a delivery of each event (all belong to ``node_id``) for each webhook on that
        node or above it that wants it, and send them in the background. Never raises: the
        change they tell of is already made."""
        if self._client is None:  # not started (a catalog used outside a server): no sender
            return
        try:
            await self._announce(node_id, events)
        except Exception:
            logger.exception("Webhook deliveries of %s events were not recorded", len(events))

    async def _announce(self, node_id: int, events: Sequence[dict[str, Any]]) -> None:
        listening = (
            select(webhooks.c.id, webhooks.c.url, webhooks.c.secret, webhooks.c.events)
            .join(nodes_closure, nodes_closure.c.ancestor == webhooks.c.node_id)
            .where(nodes_closure.c.descendant == node_id, webhooks.c.active.is_(True))
            .order_by(webhooks.c.id)
        )
        # Most writes are heard by no webhook: a read tells, without the write lock.
        async with self._catalog.connect() as connection:
            if (await connection.execute(listening.limit(1))).first() is None:
                return
        bodies = [json.dumps(event).encode() for event in events]  # once per event
        sends = []
        async with self._bookkeeping() as connection:
            # Read again inside the transaction that records the deliveries: a webhook removed
            # meanwhile is not matched (its rows would fail the whole event's).
            hooks = list(await connection.execute(listening))
            for event, body in zip(events, bodies, strict=True):
                for hook in hooks:
                    if hook.events and event["type"] not in hook.events:
                        continue
                    event_id = uuid.uuid4().hex
                    result = await connection.execute(
                        insert(webhook_deliveries).values(
                            webhook_id=hook.id, event_id=event_id, event_type=event["type"],
                            payload=event, outcome=DeliveryOutcome.pending.value, attempts=0,
                            time_created=utcnow(), time_updated=utcnow(),
                        )
                    )  # fmt: skip
                    (delivery_id,) = result.inserted_primary_key
                    sends.append((delivery_id, hook.url, self._secret_of(hook), event_id, body))
        for send in sends:  # once the rows are committed
            task = asyncio.create_task(self._send(*send))
            self._under_way.add(task)
            task.add_done_callback(self._under_way.discard)

    def _secret_of(self, hook: Any) -> str | None:
        if not hook.secret:
            return None
        secret = decrypt_secret(hook.secret, self.secret_keys)
        if secret is None:
            logger.error(
                "The secret of webhook %s does not decrypt with the configured secret_keys: "
                "its deliveries go unsigned", hook.id,
            )  # fmt: skip
        return secret

    async def _send(
        self, delivery_id: int, url: str, secret: str | None, event_id: str, body: bytes
    ) -> None:
        headers = {"Content-Type": "application/json", "X-Tiled-Event-ID": event_id}
        if secret:
            headers["X-Tiled-Signature"] = signature(body, secret)
        status: int | None = None
        error: str | None = None
        attempts = 0
        assert self._slots is not None and self._client is not None  # started
        for attempts in range(1, MAX_ATTEMPTS + 1):
            if attempts > 1:
                # Waiting holds no slot: one receiver out of reach must not hold up others.
                await asyncio.sleep(_wait_before(attempts))
                if not await self._still_wanted(delivery_id):
                    return  # its webhook was removed meanwhile
            try:
                async with self._slots:
                    response = await self._client.post(
                        url, content=body, headers=headers, timeout=DELIVERY_TIMEOUT
                    )
            except Exception as err:  # the receiver is out of reach: try again
                status, error = None, repr(err)[:ERROR_DETAIL_MAX]
                continue
            status = response.status_code
            if response.is_success:
                error = None
                break
            error = f"HTTP {status}: {response.text[:ERROR_DETAIL_MAX]}"
        outcome = DeliveryOutcome.failed if error is not None else DeliveryOutcome.success
        if error is not None:
            logger.warning(
                "Webhook delivery %s to %s failed after %s attempts: %s",
                delivery_id, url, attempts, error,
            )  # fmt: skip
        try:
            async with self._bookkeeping() as connection:
                await connection.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == delivery_id)
                    .values(
                        status_code=status, attempts=attempts, outcome=outcome.value,
                        error_detail=error, delivered_at=utcnow(), time_updated=utcnow(),
                    )
                )  # fmt: skip
        except Exception:
            logger.exception("The outcome of webhook delivery %s was not recorded", delivery_id)

    async def _still_wanted(self, delivery_id: int) -> bool:
        # Removing a webhook removes its deliveries.
        query = select(webhook_deliveries.c.id).where(webhook_deliveries.c.id == delivery_id)
        try:
            async with self._catalog.connect() as connection:
                return (await connection.execute(query)).first() is not None
        except Exception:
            return True  # unsure: try again, as if it were

    async def _prune_forever(self) -> None:
        while True:
            try:
                async with self._bookkeeping() as connection:
                    await connection.execute(
                        delete(webhook_deliveries).where(
                            webhook_deliveries.c.time_created < utcnow() - DELIVERY_MAX_AGE
                        )
                    )
                wait = PRUNE_INTERVAL
            except Exception:
                logger.warning("Old webhook deliveries were not pruned", exc_info=True)
                wait = PRUNE_RETRY
            await asyncio.sleep(wait)


@dataclass(frozen=True)
class NodeWebhooks:
    """The webhooks of one node (what its adapter's ``webhooks()`` gives the server)."""

    hooks: CatalogWebhooks
    node_id: int

    @property
    def secret_keys(self) -> list[str]:
        return self.hooks.secret_keys

    async def register(
        self, url: str, secret: str | None, events: Iterable[str] | None
    ) -> dict[str, Any]:
        return await self.hooks.register(self.node_id, url, secret, events)

    async def listed(self) -> list[dict[str, Any]]:
        return await self.hooks.on_node(self.node_id)


def _wait_before(attempt: int) -> float:
    wait = min(RETRY_FIRST_WAIT * RETRY_GROWTH ** (attempt - 2), RETRY_MAX_WAIT)
    return wait + random.uniform(0, RETRY_JITTER)


def _is(webhook_id: int) -> Any:
    return webhooks.c.id == webhook_id


def _one(webhook_id: int) -> Any:
    return select(webhooks).where(_is(webhook_id))

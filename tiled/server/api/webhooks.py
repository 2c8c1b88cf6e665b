"""``/api/v1/webhooks``: register, list and remove the webhooks of catalog nodes, and read
their deliveries (upstream 0.2.20's routes; see :mod:`tiled.catalog.webhooks`).

Served when the server has a ``webhooks`` section. A webhook belongs to a node, and the caller
needs ``write:webhooks`` (to register or remove) or ``read:webhooks`` (to list, or to read
deliveries) on that node, as on any other node route: a node the caller may not see is a 404,
and a webhook on one is too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from ...adapters.protocols import HasWebhooks, supports
from ...catalog.webhooks import CatalogWebhooks, EventType
from ...errors import BadRequest, NotFound
from ..authenticators import CurrentIdentity
from ..dependencies import Node, node_dependency, require_scope, resolve_node
from ..settings import WebhookOptions
from ..state import tiled_state

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

# IPv6 addresses that carry an IPv4 address, which is the one reached (NAT64's well-known
# prefix; IPv4-mapped and 6to4 addresses have their own properties).
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NOT_HTTPS = "Webhook URL must use HTTPS to protect the HMAC signature in transit."
PRIVATE_TARGET = "Webhook URL targets a private or reserved address and cannot be registered."
NOT_SERVED = "Webhooks are only supported on catalog-backed trees."


class WebhookRegistration(BaseModel):
    """The body of a registration (upstream's ``WebhookRegistrationRequest``)."""

    # The catalog's columns hold URLs of 2048 characters, encrypted secrets of 512.
    url: Annotated[AnyHttpUrl, Field(max_length=2048)]
    secret: Annotated[str | None, Field(max_length=256)] = None
    events: list[EventType] | None = None

    def check_https(self) -> None:
        """Raise ValueError unless the URL is HTTPS (upstream's method, which validators
        written for its servers call)."""
        if self.url.scheme != "https":
            raise ValueError(NOT_HTTPS)

    @field_validator("events")
    @classmethod
    def _all_when_empty(cls, value: list[EventType] | None) -> list[EventType] | None:
        return value or None


# Checks a registration's URL; raises HTTPException to refuse it (upstream's
# ``webhook_url_validator`` argument of build_app).
UrlValidator = Callable[[WebhookRegistration], Awaitable[None]]


def url_validator(options: WebhookOptions) -> UrlValidator:
    """The configured checks of a target URL: HTTPS (422), and an address that is public
    (neither private, loopback, link-local, multicast nor reserved, whatever its spelling)
    and not in ``blocked_networks`` (400), unless the options relax them."""
    blocked = tuple(ipaddress.ip_network(n) for n in options.blocked_networks)
    allowed_hosts = frozenset(host.lower() for host in options.allow_delivery_hosts)

    async def check(registration: WebhookRegistration) -> None:
        url = registration.url
        if not options.allow_http and url.scheme != "https":
            raise HTTPException(422, NOT_HTTPS)
        host = (url.host or "").strip("[]").lower()
        if options.allow_private_addresses or host in allowed_hosts:
            return
        addresses = [_reached(a) for a in await asyncio.to_thread(_addresses, host)]
        if any(
            not address.is_global
            or address.is_multicast
            or any(address in network for network in blocked)
            for address in addresses
        ):
            logger.info("Webhook registration refused: %s resolves to %s", host, addresses)
            raise BadRequest(PRIVATE_TARGET)

    return check


def _reached(address: Any) -> Any:
    """The IPv4 address an IPv6 address carries, where it carries one: that is where a
    connection goes."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _addresses(host: str) -> list[Any]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as err:
        raise BadRequest(f"Cannot resolve the webhook URL's host {host!r}: {err}") from None
    # An IPv6 address may carry a zone ("fe80::1%eth0").
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


# --- the catalogs a server delivers webhooks for ----------------------------------------------


@dataclass
class WebhookService:
    """The webhooks of every catalog a server serves, with where each is served."""

    options: WebhookOptions
    validator: UrlValidator
    # (the path a catalog is served at, its webhooks)
    catalogs: list[tuple[tuple[str, ...], CatalogWebhooks]] = field(default_factory=list)

    @classmethod
    def for_tree(
        cls, tree: Any, options: WebhookOptions, validator: UrlValidator | None = None
    ) -> WebhookService:
        service = cls(options, validator or url_validator(options))
        for prefix, root in served_catalogs(tree):
            hooks = CatalogWebhooks(root.catalog, options.secret_keys)
            root.catalog.webhooks = hooks
            service.catalogs.append((prefix, hooks))
        return service

    async def startup(self) -> None:
        for _, hooks in self.catalogs:
            await hooks.start()

    async def shutdown(self) -> None:
        for _, hooks in self.catalogs:
            await hooks.stop()

    async def find(self, webhook_id: int) -> tuple[tuple[str, ...], CatalogWebhooks] | None:
        """Where the node of ``webhook_id`` is served, and its catalog's webhooks."""
        for prefix, hooks in self.catalogs:
            database_path = await hooks.node_of(webhook_id)
            if database_path is None:
                continue
            mount = hooks.mount_path
            if database_path[: len(mount)] == mount:  # else: outside what this root serves
                return (*prefix, *database_path[len(mount) :]), hooks
        return None


def served_catalogs(root: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, catalog root)`` of each catalog the server serves (the root, or the trees of a
    ``trees:`` configuration)."""
    from ...catalog.container import CatalogRootAdapter
    from ...config.build import served_trees

    for path, tree in served_trees(root):
        if isinstance(tree, CatalogRootAdapter):
            yield path, tree


def _service(request: Request) -> WebhookService:
    return tiled_state(request).webhooks


def _webhooks_of(node: Node) -> Any:
    hooks = node.adapter.webhooks() if supports(node.adapter, HasWebhooks) else None
    if hooks is None:
        raise NotFound(NOT_SERVED)
    return hooks


async def _webhook(
    request: Request, identity: Any, webhook_id: int, scope: str
) -> tuple[Node, CatalogWebhooks]:
    """The webhook's node, checked for ``scope`` as its own routes check it, and its catalog's
    webhooks; 404 for a webhook that does not exist or whose node the caller may not see."""
    require_scope(identity, scope, request)
    found = await _service(request).find(webhook_id)
    if found is None:
        raise NotFound("Webhook not found.")
    path, hooks = found
    try:
        node = await resolve_node(request, identity, path, scope)
    except NotFound:
        raise NotFound("Webhook not found.") from None
    return node, hooks


# --- routes -------------------------------------------------------------------------------------

WebhookWriter = Annotated[Node, node_dependency("write:webhooks")]
WebhookReader = Annotated[Node, node_dependency("read:webhooks")]
# The ids the catalog's integer column can hold.
WebhookId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/target/{path:path}")
async def register_webhook(
    request: Request, registration: WebhookRegistration, node: WebhookWriter
):
    hooks = _webhooks_of(node)
    await _service(request).validator(registration)
    if registration.secret and not hooks.secret_keys:
        raise BadRequest(
            "Webhook secrets cannot be stored: the server's webhooks section has no "
            "secret_keys. Add them, or register the webhook without a secret."
        )
    events = [event.value for event in registration.events or ()]
    return await hooks.register(str(registration.url), registration.secret, events)


@router.get("/target/{path:path}")
async def list_webhooks(node: WebhookReader):
    return await _webhooks_of(node).listed()


@router.delete("/{webhook_id}")
async def delete_webhook(request: Request, webhook_id: WebhookId, identity: CurrentIdentity):
    _, hooks = await _webhook(request, identity, webhook_id, "write:webhooks")
    await hooks.remove(webhook_id)
    return {"deleted": webhook_id}


@router.get("/history/{webhook_id}")
async def webhook_history(
    request: Request,
    webhook_id: WebhookId,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
):
    _, hooks = await _webhook(request, identity, webhook_id, "read:webhooks")
    return await hooks.history(webhook_id, limit)

"""The one table that maps domain exceptions to HTTP status codes."""

from __future__ import annotations

import errno
import logging
import math
import socket
import sys
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from .. import errors

logger = logging.getLogger(__name__)

# Most specific first: the first class an exception is an instance of decides.
STATUS_BY_EXCEPTION: list[tuple[type[Exception], int]] = [
    (errors.NotFound, 404),
    (errors.UnsupportedMediaType, 406),
    (errors.UnsupportedUploadType, 415),
    (errors.Unsupported, 405),
    (errors.DataUnavailable, 415),
    (errors.Conflict, 409),
    (errors.PreconditionFailed, 412),
    (errors.PayloadTooLarge, 413),
    (errors.DataNotReadyError, 503),
    (errors.ServiceUnavailable, 503),
    (errors.ShapeMismatchError, 422),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.InvalidSlice, 422),
    (errors.InvalidKey, 422),
    (errors.InvalidSpecs, 422),
    (errors.BadRequest, 400),
]


def status_for(exception: Exception) -> int:
    for cls, status in STATUS_BY_EXCEPTION:
        if isinstance(exception, cls):
            return status
    return 500


# Errors of the network or of a peer that say "not reachable now", not "broken".
_UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ECONNREFUSED,
     errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ENETDOWN, errno.EHOSTDOWN}
)  # fmt: skip


def _lost_connection_types() -> tuple[type[BaseException], ...]:
    """Exceptions that say a database connection cannot be made or was lost (the drivers'
    own classes, of the drivers this process has imported)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    asyncpg = sys.modules.get("asyncpg.exceptions")
    if asyncpg is not None:
        found += [
            asyncpg.PostgresConnectionError,  # cannot connect, connection lost
            asyncpg.CannotConnectNowError,  # starting up or shutting down
            asyncpg.OperatorInterventionError,  # terminated by an administrator or a restart
            asyncpg.InsufficientResourcesError,  # too many connections, out of memory
        ]
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None:
        found.append(sqlalchemy.TimeoutError)  # no connection free in the pool in time
    return tuple(found)


def _is_lost_connection(exception: BaseException, lost: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exception, lost) or getattr(exception, "connection_invalidated", False):
        return True
    if _asyncpg_connection_closed(exception):
        return True
    if isinstance(exception, OSError) and exception.errno in _UNREACHABLE_ERRNOS:
        return True
    return "database is locked" in str(exception) and type(exception).__name__ == "OperationalError"


def _asyncpg_connection_closed(exception: BaseException) -> bool:
    """asyncpg's answer to a statement on a connection the database closed (noticed by the
    driver before the statement was sent): an interface error, told apart by its message only
    (SQLAlchemy's asyncpg dialect tells it the same way)."""
    asyncpg = sys.modules.get("asyncpg.exceptions")
    return (
        asyncpg is not None
        and isinstance(exception, asyncpg.InterfaceError)
        and str(exception).endswith("connection is closed")
    )


def _causes(exception: BaseException) -> Iterator[BaseException]:
    """``exception`` and what it wraps: its explicit cause, a driver error's original, the
    members of a group. Not the exception during whose handling it was raised: an error
    raised while handling a timeout is an error of its own."""
    seen: set[int] = set()
    pending = [exception]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for wrapped in (current.__cause__, getattr(current, "orig", None)):
            if isinstance(wrapped, BaseException):
                pending.append(wrapped)


def unavailable_service(exception: BaseException) -> errors.ServiceUnavailable | None:
    """What to answer when ``exception`` (or what it wraps) is a database that cannot be
    reached now: 503 with ``Retry-After``, not 500. None for anything else."""
    lost = _lost_connection_types()
    for current in _causes(exception):
        if isinstance(current, errors.ServiceUnavailable):
            return current
        if _is_lost_connection(current, lost):
            if "database is locked" in str(current):
                return errors.ServiceUnavailable("The database is busy; retry later")
            return errors.ServiceUnavailable(
                "A database of this server cannot be reached now; retry later"
            )
    return None


def _wrapped_domain_error(exception: BaseException) -> errors.TiledError | None:
    """A Tiled error raised inside a library that wrapped it: the catalog's JSON serializer
    refusing metadata, within SQLAlchemy's statement (a ``StatementError``)."""
    for current in _causes(exception):
        if current is not exception and isinstance(current, errors.TiledError):
            return current
    return None


# A search the database could not run because of what the request asked: a regular
# expression PostgreSQL cannot compile (SQLSTATE 2201B, or 22025 for an escape), or the SQLite
# catalog's regular expression function giving up (one that backtracks without end).
_REFUSED_QUERY_SQLSTATES = frozenset({"2201B", "22025"})
_SQLITE_FUNCTION_FAILED = "user-defined function raised exception"


def refused_query(exception: BaseException) -> errors.InvalidQuery | None:
    """The 400 for a search that failed in the database because of its query, else None."""
    import sqlite3

    for current in _causes(exception):
        if getattr(current, "sqlstate", None) in _REFUSED_QUERY_SQLSTATES:
            return errors.InvalidQuery(f"The catalog's database cannot run this search: {current}")
        if isinstance(current, sqlite3.OperationalError) and _SQLITE_FUNCTION_FAILED in str(
            current
        ):
            return errors.InvalidQuery(
                "The search could not be run: a regular expression in it takes too long to "
                "match (it backtracks without end on some values) or is not valid"
            )
    return None


SERVER_ERROR = {"detail": "Internal server error"}
# After a 500 the framework re-raises and uvicorn drops the connection: saying so lets the
# client open a new one for its next request instead of failing it on the dropped one.
SERVER_ERROR_HEADERS = {"Connection": "close"}


def tree_path(root: Any, tree: object) -> tuple[str, ...] | None:
    """The keys of the path at which the server's ``root`` serves ``tree``: () for the root
    itself, a ``trees:`` entry's path (tiled.config.build.mount); None if it serves no such
    tree (one placed by other means: its paths are left as the tree names them)."""
    from ..config.build import served_trees

    for path, mounted in served_trees(root):
        if mounted is tree:
            return path
    return None


def served_message(exception: BaseException, root: Any) -> str | None:
    """The message of an error that names a node of one of the served trees (see
    :class:`tiled.errors.NodeAt`), the node named at its path in this server; else None.

    The one place such paths are placed: whatever raised the error names the node within its
    tree (a mounted catalog, below its mount_node), the client reads the path it asks for."""
    naming = getattr(exception, "naming", None)
    if naming is None or naming.node.tree is None:
        return None
    prefix = tree_path(root, naming.node.tree)
    return None if prefix is None else naming.text(prefix)


def error_response(exception: Exception, root: Any = None) -> JSONResponse:
    """The JSON answer to an exception a handler raised: its status from the table, its
    message as ``detail`` (a node it names named where ``root``, the tree the server serves,
    has it); a database out of reach is 503 (see unavailable_service); anything else
    unexpected is logged and answered 500 without details."""
    status = status_for(exception)
    if status == 500:
        domain_error = _wrapped_domain_error(exception)
        if domain_error is not None:
            exception, status = domain_error, status_for(domain_error)
    if status == 500:
        refused = refused_query(exception)
        if refused is not None:
            exception, status = refused, 400
    if status == 500:
        unavailable = unavailable_service(exception)
        if unavailable is not None:
            logger.warning("Service unavailable: %r", exception)
            exception, status = unavailable, 503
    if status == 500:
        logger.error("Unhandled error", exc_info=exception)
        return JSONResponse(SERVER_ERROR, status_code=500, headers=SERVER_ERROR_HEADERS)
    headers = dict(getattr(exception, "headers", None) or {})
    if status == 401:
        # Every 401 names a scheme, so clients know credentials are what is missing.
        headers.setdefault("WWW-Authenticate", "Bearer")
    # An error may carry a structured detail that clients read (see AuthorizationPending).
    detail = (
        getattr(exception, "json_detail", None) or served_message(exception, root) or str(exception)
    )
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def served_tree(request: Request) -> Any:
    """The tree the application that received ``request`` serves (None: not a Tiled app)."""
    state = getattr(request.app.state, "tiled", None)
    return state.root_tree if state is not None else None


async def _tiled_error(request: Request, exception: errors.TiledError) -> JSONResponse:
    return error_response(exception, served_tree(request))


async def _unexpected(request: Request, exception: Exception) -> JSONResponse:
    if unavailable_service(exception) is not None or refused_query(exception) is not None:
        return error_response(exception, served_tree(request))
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exception)
    return JSONResponse(SERVER_ERROR, status_code=500, headers=SERVER_ERROR_HEADERS)


async def _invalid_request(request: Request, exception: RequestValidationError) -> JSONResponse:
    detail = jsonable_encoder(exception.errors(), custom_encoder=_ECHOED_INPUT)
    return JSONResponse({"detail": detail}, status_code=422)


# The refused input is echoed in the answer: values that strict JSON cannot carry (bytes that
# are not UTF-8, NaN and infinities, lone surrogates of a JSON string) would make the answer a
# server error, as FastAPI's own handler does.
_ECHOED_INPUT = {
    bytes: lambda value: value.decode("utf-8", errors="replace"),
    float: lambda value: value if math.isfinite(value) else str(value),
    str: lambda value: value.encode("utf-8", errors="replace").decode("utf-8"),
}


async def _client_gone(request: Request, exception: ClientDisconnect) -> JSONResponse:
    # The client hung up mid-request (e.g. during an upload): nothing was written, nobody
    # is left to answer; not a server error.
    logger.info("Client disconnected during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Client disconnected"}, status_code=400)


async def _maybe_unavailable(request: Request, exception: Exception) -> JSONResponse:
    # Registered for the classes a lost database raises, so that the answer is given here:
    # the catch-all handler's answer is followed by the exception going on to the server,
    # which then drops the client's connection.
    if (
        unavailable_service(exception) is not None
        or _wrapped_domain_error(exception)
        or refused_query(exception) is not None
    ):
        return error_response(exception, served_tree(request))
    return await _unexpected(request, exception)


def _service_exception_types() -> list[type[Exception]]:
    # OSError: a name that does not resolve, a network that is unreachable (all other
    # OSErrors are answered 500 there, as by the catch-all).
    found: list[type[Exception]] = [OSError, TimeoutError]
    try:
        import sqlalchemy.exc

        # StatementError: DBAPIError's parent, also what wraps an error raised by the
        # catalog's own code inside a statement (its JSON serializer).
        found += [sqlalchemy.exc.StatementError, sqlalchemy.exc.TimeoutError]
    except ImportError:
        pass
    try:
        import asyncpg.exceptions

        found += [asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError]
    except ImportError:
        pass
    return found


def install_error_handlers(app: FastAPI) -> None:
    for exception_type in _service_exception_types():
        app.add_exception_handler(exception_type, _maybe_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(errors.TiledError, _tiled_error)
    app.add_exception_handler(Exception, _unexpected)

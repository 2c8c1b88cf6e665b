"""The one table that maps domain exceptions to HTTP status codes."""

from __future__ import annotations

import logging

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


def _lost_connection_types() -> tuple[type[BaseException], ...]:
    """Exceptions that say a database connection cannot be made or was lost (the drivers'
    own classes, of the drivers this process has imported)."""
    import sys

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
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


def unavailable_service(exception: BaseException) -> errors.ServiceUnavailable | None:
    """What to answer when ``exception`` (or what it wraps) is a database that cannot be
    reached now: 503 with ``Retry-After``, not 500. None for anything else."""
    lost = _lost_connection_types()
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, errors.ServiceUnavailable):
            return current
        if isinstance(current, lost) or getattr(current, "connection_invalidated", False):
            return errors.ServiceUnavailable(
                "A database of this server cannot be reached now; retry later"
            )
        if "database is locked" in str(current) and type(current).__name__ == "OperationalError":
            return errors.ServiceUnavailable("The database is busy; retry later")
        current = current.__cause__ or current.__context__
    return None


def error_response(exception: Exception) -> JSONResponse:
    """The JSON answer to an exception a handler raised: its status from the table, its
    message as ``detail``; a database out of reach is 503 (see unavailable_service); anything
    else unexpected is logged and answered 500 without details."""
    status = status_for(exception)
    if status == 500:
        unavailable = unavailable_service(exception)
        if unavailable is not None:
            logger.warning("Service unavailable: %r", exception)
            exception, status = unavailable, 503
    if status == 500:
        logger.error("Unhandled error", exc_info=exception)
        return JSONResponse({"detail": "Internal server error"}, status_code=500)
    headers = dict(getattr(exception, "headers", None) or {})
    if status == 401:
        # Every 401 names a scheme, so clients know credentials are what is missing.
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"detail": str(exception)}, status_code=status, headers=headers)


async def _tiled_error(request: Request, exception: errors.TiledError) -> JSONResponse:
    return error_response(exception)


async def _unexpected(request: Request, exception: Exception) -> JSONResponse:
    if unavailable_service(exception) is not None:
        return error_response(exception)
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exception)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


async def _invalid_request(request: Request, exception: RequestValidationError) -> JSONResponse:
    # FastAPI's own handler echoes the input decoded as UTF-8: a binary body sent to a route
    # that takes JSON would make its answer a server error.
    encoders = {bytes: lambda value: value.decode("utf-8", errors="replace")}
    detail = jsonable_encoder(exception.errors(), custom_encoder=encoders)
    return JSONResponse({"detail": detail}, status_code=422)


async def _client_gone(request: Request, exception: ClientDisconnect) -> JSONResponse:
    # The client hung up mid-request (e.g. during an upload): nothing was written, nobody
    # is left to answer; not a server error.
    logger.info("Client disconnected during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Client disconnected"}, status_code=400)


async def _maybe_unavailable(request: Request, exception: Exception) -> JSONResponse:
    # Registered for the classes a lost database raises, so that the answer is given here:
    # the catch-all handler's answer is followed by the exception going on to the server,
    # which then drops the client's connection.
    if unavailable_service(exception) is not None:
        return error_response(exception)
    return await _unexpected(request, exception)


def _service_exception_types() -> list[type[Exception]]:
    found: list[type[Exception]] = [ConnectionError, TimeoutError]
    try:
        import sqlalchemy.exc

        found += [sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError]
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

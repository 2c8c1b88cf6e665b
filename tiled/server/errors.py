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
    (errors.StorageUnavailable, 503),
    (errors.Conflict, 409),
    (errors.PreconditionFailed, 412),
    (errors.PayloadTooLarge, 413),
    (errors.DataNotReadyError, 503),
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


def error_response(exception: Exception) -> JSONResponse:
    """The JSON answer to an exception a handler raised: its status from the table, its
    message as ``detail``; anything unexpected is logged and answered 500 without details."""
    status = status_for(exception)
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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(errors.TiledError, _tiled_error)
    app.add_exception_handler(Exception, _unexpected)

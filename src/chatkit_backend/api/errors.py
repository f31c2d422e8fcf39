"""Every error leaves as the JSON envelope `{"error": {code, message}}`; nothing leaks a
stack trace."""

import logging
from collections.abc import Mapping

from chatkit.store import NotFoundError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import ProgrammingError
from starlette.exceptions import HTTPException

from chatkit_backend.errors import RequestError
from chatkit_backend.ops.metrics import count_error
from chatkit_backend.store.engine import (
    DATABASE_OUTAGES,
    is_database_outage,
    is_schema_missing,
)
from chatkit_backend.store.migrations import NOT_MIGRATED_MESSAGE

# A message may quote the request (a type, a model's name) and is sent twice: never
# more than this of it, whatever a caller managed to put there.
MAX_MESSAGE_CHARS = 500


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """`{"error": {"code", "message"}}`, plus a top-level `message` the web client shows."""
    count_error(code)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    body = {"error": {"code": code, "message": message}, "message": message}
    response = JSONResponse(body, status_code=status, headers=headers)
    # Also set here: a 500 is sent from outside every middleware, the headers one included.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _store_not_found(_: Request, exc: Exception) -> JSONResponse:
    # Raised by the SDK's handlers when a record vanished after our checks ran.
    return error_response(404, "not_found", "Not found")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_request", "The request is not valid")


async def _not_migrated(request: Request, exc: Exception) -> JSONResponse:
    # A table or column the schema lacks: no retry cures it, running the migrations does.
    logger.error(
        "database schema missing on %s (%s): %s",
        request.url.path,
        type(exc).__name__,
        NOT_MIGRATED_MESSAGE,
    )
    return error_response(503, "database_not_migrated", NOT_MIGRATED_MESSAGE)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if is_schema_missing(exc):
        return await _not_migrated(request, exc)
    # Connection refused or lost, a pool that cannot hand out a connection: the
    # request may well succeed once the database is back, so 503, not 500.
    logger.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
    return error_response(
        503,
        "database_unavailable",
        "The database is not answering; try again in a moment",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_schema_missing(exc):
        return await _not_migrated(request, exc)
    if is_database_outage(exc):
        return await _database_unavailable(request, exc)
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(500, "internal_error", "The server could not handle this request")


async def render_known_error(request: Request, exc: Exception) -> JSONResponse | None:
    """This project's errors as the handlers above answer them, or None for any other.
    For routes included in someone else's app, which has none of these handlers."""
    if isinstance(exc, RequestError):
        return await _request_error(request, exc)
    if isinstance(exc, NotFoundError):
        return await _store_not_found(request, exc)
    if isinstance(exc, DATABASE_OUTAGES):
        return await _database_unavailable(request, exc)
    if is_schema_missing(exc):
        return await _not_migrated(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(NotFoundError, _store_not_found)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_unavailable)
    # PostgreSQL's "relation does not exist": answered here, because what reaches the
    # catch-all below is re-raised to the server, which logs it as a crash.
    app.add_exception_handler(ProgrammingError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)

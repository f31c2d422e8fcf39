"""Routes for operators: liveness, readiness and Prometheus metrics."""

import hmac
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from chatkit_backend.api.deps import Services, ServicesDep, authentication_attempt
from chatkit_backend.api.errors import error_response
from chatkit_backend.errors import Unauthorized
from chatkit_backend.ops.metrics import render
from chatkit_backend.store.migrations import NOT_MIGRATED_MESSAGE, SchemaWatch

logger = logging.getLogger(__name__)

health_router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


@health_router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get("/readyz", summary="The database answers and has this version's schema")
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    if services.drain.draining:
        # Load balancers stop sending new requests; open streams are finishing.
        return error_response(503, "shutting_down", "The server is shutting down")
    try:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            problem = await _schema_watch(request, services).problem(conn)
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return error_response(503, "database_unavailable", "The database is not answering")
    if problem is not None:
        return error_response(503, "database_not_migrated", NOT_MIGRATED_MESSAGE)
    return JSONResponse({"status": "ready"})


def _schema_watch(request: Request, services: Services) -> SchemaWatch:
    """The app's one SchemaWatch, made on its first probe."""
    watch: SchemaWatch | None = getattr(request.app.state, "schema_watch", None)
    if watch is None:
        watch = SchemaWatch(services.settings.table_prefix)
        request.app.state.schema_watch = watch
    return watch


@metrics_router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    token = services.settings.metrics_token
    if token is not None:
        # Wrong tokens count against the address, as the API's do.
        async with authentication_attempt(request, services.limiter):
            _check_metrics_token(request, token)
    body, content_type = render()
    return Response(content=body, media_type=content_type)


def _check_metrics_token(request: Request, token: SecretStr) -> None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    # Constant-time, so the token cannot be guessed a byte at a time.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("Metrics need the METRICS_TOKEN bearer token", token_given=bool(scheme))

"""Liveness and readiness for orchestrators and load balancers."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.api.envelope import error_response

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers")
async def readyz(request: Request) -> JSONResponse:
    engine: AsyncEngine = request.app.state.engine
    if request.app.state.drain.draining:
        # Load balancers stop sending new requests; open streams are finishing.
        return error_response(503, "shutting_down", "The server is shutting down")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return error_response(503, "database_unavailable", "The database is not answering")
    return JSONResponse({"status": "ready"})

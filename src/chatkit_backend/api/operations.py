"""Operations wiring: request tracking, metrics, answer locks, graceful shutdown."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.answering import AnswerLocks
from chatkit_backend.api.metrics import router as metrics_router
from chatkit_backend.api.observability import RequestTracking
from chatkit_backend.ops.metrics import process_exiting, watch_pool
from chatkit_backend.ops.shutdown import Drain
from chatkit_backend.settings import Settings
from chatkit_backend.store.leases import ThreadLeases

logger = logging.getLogger(__name__)


def install_operations(app: FastAPI, settings: Settings, engine: AsyncEngine) -> None:
    """Shared state on `app.state`, the /metrics route, and the outermost middleware."""
    app.state.drain = Drain(settings.shutdown_grace_seconds)
    app.state.answer_locks = AnswerLocks(ThreadLeases(engine))
    if settings.metrics_enabled:
        app.include_router(metrics_router)
        if settings.env == "production" and settings.metrics_token is None:
            logger.warning("/metrics is open to anyone who can reach the server: set METRICS_TOKEN")
    # Added after the others, so it is outermost: ids and timings cover everything.
    app.add_middleware(RequestTracking)


@asynccontextmanager
async def operations_running(
    app: FastAPI, engine: AsyncEngine, settings: Settings, hook_signals: bool
) -> AsyncIterator[None]:
    """For the app's lifespan: watch the pool, hear SIGTERM (when serving), clean up."""
    drain: Drain = app.state.drain
    undo = drain.hook_signals() if hook_signals else None
    pool_watch = asyncio.create_task(watch_pool(engine, settings.database_pool_size))
    try:
        yield
    finally:
        if undo is not None:
            undo()
        pool_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pool_watch
        process_exiting()

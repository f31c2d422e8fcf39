"""The composition root: every service built once from settings, then the routes."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from chatkit_backend import __version__
from chatkit_backend.agents.catalog import AgentFactory, AgentSelector, load_factory
from chatkit_backend.agents.guardrails import message_length_guardrail
from chatkit_backend.api.deps import Services
from chatkit_backend.api.errors import install_error_handlers
from chatkit_backend.api.middleware import install_middleware
from chatkit_backend.attachments.model_input import AttachmentInput
from chatkit_backend.attachments.service import build_attachments, build_storage
from chatkit_backend.auth.tokens import build_verifier
from chatkit_backend.backend import ChatKitBackend
from chatkit_backend.chat.admission import Admission
from chatkit_backend.chat.checks import RequestChecker
from chatkit_backend.chat.json_requests import JsonRequests
from chatkit_backend.chat.leases import new_holder_id
from chatkit_backend.chat.limits import InProcessLimiter, Limiter
from chatkit_backend.chat.redis_limits import RedisLimiter
from chatkit_backend.chat.turn import Turns
from chatkit_backend.ops.logs import configure_logging
from chatkit_backend.ops.metrics import process_exiting, watch_pool
from chatkit_backend.ops.shutdown import Drain
from chatkit_backend.providers.provider import Provider
from chatkit_backend.runtime.answerer import Answerer
from chatkit_backend.runtime.history import HistoryConverter
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecords
from chatkit_backend.store.employees import EmployeeDirectory
from chatkit_backend.store.engine import engine_for
from chatkit_backend.store.sql_store import SQLStore
from chatkit_backend.store.tables import tables_for
from chatkit_backend.store.turns import TurnStore

logger = logging.getLogger(__name__)


def build_services(
    settings: Settings,
    provider: Provider,
    *,
    agent: str | AgentFactory | None = None,
    authenticate: bool = True,
) -> Services:
    """Every service a request may use, wired once.

    `agent`: a factory, or what `AGENT` takes, instead of the setting. `authenticate=False`:
    the app that includes our routers says who calls (`ChatKitBackend(identify=...)`)."""
    # First what can fail on a bad setting, so nothing is left open when it does.
    verifier = build_verifier(settings) if authenticate else None
    # This process's name in shared state: its answer leases and its stream slots.
    holder = new_holder_id()
    # With REDIS_URL the limits are counted once for every process sharing that Redis.
    limiter: Limiter = (
        RedisLimiter.from_settings(settings, holder)
        if settings.redis_url is not None
        else InProcessLimiter(
            settings.rate_limit_per_minute,
            settings.max_streams_per_user,
            uploads_per_minute=settings.attachment_uploads_per_minute,
            failed_auth_per_minute=settings.failed_auth_per_minute,
        )
    )
    engine = engine_for(settings)
    tables = tables_for(settings.table_prefix)
    agent_factory = (
        agent
        if callable(agent)
        else load_factory(agent or settings.agent, EmployeeDirectory(engine, tables))
    )
    # ATTACHMENT_STORAGE: the local disk, or a bucket every replica shares.
    files = build_attachments(settings, AttachmentRecords(engine, tables), build_storage(settings))
    store = SQLStore(engine, attachment_view=files.links.present, tables=tables)
    selector = AgentSelector(
        agent_factory, [message_length_guardrail(settings.input_guardrail_max_chars)]
    )
    answerer = Answerer(provider, selector, settings)
    model_input = AttachmentInput(
        files.storage,
        settings.max_attachment_bytes,
        files_accepted=provider.reads_files,
        whole_count=settings.model_attachments_whole,
        whole_bytes=settings.model_attachment_bytes,
    )
    admission = Admission(
        settings.max_open_streams,
        settings.max_waiting_streams,
        settings.stream_lag_limit_seconds,
        database_slots=settings.database_pool_size,
    )
    turns = Turns(
        store,
        TurnStore(
            engine,
            attachment_view=files.links.present,
            gate=admission.database,
            holder=holder,
            tables=tables,
        ),
        answerer,
        HistoryConverter(model_input),
        settings,
    )
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        requests=JsonRequests(store, files),
        turns=turns,
        checker=RequestChecker(store, settings, confirm_upload=files.confirm_upload),
        files=files,
        limiter=limiter,
        admission=admission,
        drain=Drain(settings.shutdown_grace_seconds),
        verifier=verifier,
    )


def create_app(settings: Settings | None = None, *, hook_signals: bool = False) -> FastAPI:
    """Build the services, then the app that serves them.

    `hook_signals`: hear SIGTERM for graceful shutdown (only when uvicorn serves it).
    """
    settings = settings or Settings()
    # The same backend another app can include (backend.py), with the standalone parts
    # around it: docs, error handlers, middleware, health, metrics and the page.
    backend = ChatKitBackend(settings, hook_signals=hook_signals)
    _warn_about(settings)

    # The docs pages load their scripts from a CDN, and the schema maps every route for
    # whoever asks: off in production unless API_DOCS=true.
    docs = settings.docs_enabled
    app = FastAPI(
        title="chatkit-backend",
        version=__version__,
        lifespan=backend.lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    # For tests and tools that reach into a running app; the routes do not read it.
    app.state.services = backend.services
    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(backend.router)
    app.include_router(backend.health_router)
    if settings.metrics_enabled:
        app.include_router(backend.metrics_router)
    if settings.web_ui != "off":
        app.include_router(backend.page_router)
    return app


def create_served_app() -> FastAPI:
    """The factory `serve` hands to uvicorn: each worker reads settings and sets up logs."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, hook_signals=True)


@asynccontextmanager
async def _operations_running(services: Services, hook_signals: bool) -> AsyncIterator[None]:
    """Watch the pool and the loop's lag, hear SIGTERM (when serving), tidy the metrics."""
    undo = services.drain.hook_signals() if hook_signals else None
    pool_size = services.settings.database_pool_size
    watches = [
        asyncio.create_task(watch_pool(services.engine, pool_size)),
        asyncio.create_task(services.admission.watch_lag()),
    ]
    try:
        yield
    finally:
        if undo is not None:
            undo()
        for watch in watches:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        process_exiting()


def _warn_about(settings: Settings) -> None:
    if settings.auth_mode == "none":
        logger.warning(
            "AUTH_MODE=none: every request acts as user %r; do not expose this server",
            settings.local_user_id,
        )

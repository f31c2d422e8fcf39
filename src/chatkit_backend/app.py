"""The FastAPI application, wired from settings."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from chatkit_backend import __version__
from chatkit_backend.agents.guardrails import message_length_guardrail
from chatkit_backend.agents.registry import AgentSelector, load_factory
from chatkit_backend.agents.turn import Answerer
from chatkit_backend.api.attachments import install_attachments
from chatkit_backend.api.chatkit import router as chatkit_router
from chatkit_backend.api.handlers import install_error_handlers
from chatkit_backend.api.health import router as health_router
from chatkit_backend.api.operations import install_operations, operations_running
from chatkit_backend.api.security import install_security
from chatkit_backend.api.web import install_web
from chatkit_backend.attachments.setup import build_attachments, cleanup_schedule
from chatkit_backend.checks import RequestChecker
from chatkit_backend.logs import configure_logging
from chatkit_backend.providers.factory import build_provider
from chatkit_backend.server import ChatServer
from chatkit_backend.settings import Settings
from chatkit_backend.store.attachments import AttachmentRecords
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.sql_store import SQLStore


def create_app(settings: Settings | None = None, *, hook_signals: bool = False) -> FastAPI:
    """Build the app: engine, store, ChatKit server and routes.

    `hook_signals`: hear SIGTERM for graceful shutdown (only when uvicorn serves it).
    """
    settings = settings or Settings()
    # First what can fail on a bad setting, so nothing is left open when it does.
    agent_factory = load_factory(settings.agent)
    engine = create_engine(settings.database_url, settings.database_pool_size)
    files = build_attachments(settings, AttachmentRecords(engine))
    store = SQLStore(engine, attachment_view=files.links.present)
    provider = build_provider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with (
                operations_running(app, engine, settings, hook_signals),
                cleanup_schedule(settings, files),
            ):
                yield
        finally:
            await provider.aclose()
            await engine.dispose()

    app = FastAPI(title="chatkit-backend", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    selector = AgentSelector(
        agent_factory, [message_length_guardrail(settings.input_guardrail_max_chars)]
    )
    answerer = Answerer(provider, selector, store.usage, settings)
    app.state.chat_server = ChatServer(store, answerer, settings, files)
    app.state.checker = RequestChecker(store, settings)
    install_error_handlers(app)
    install_security(app, settings)
    install_operations(app, settings, engine)
    app.include_router(chatkit_router)
    install_attachments(app, files)
    app.include_router(health_router)
    install_web(app, settings)
    return app


def create_served_app() -> FastAPI:
    """The factory `serve` hands to uvicorn: each worker reads settings and sets up logs."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, hook_signals=True)

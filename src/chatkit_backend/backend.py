"""`ChatKitBackend`: the services and routers, for the standalone app and for mounting
inside another FastAPI app (a router next to its routes, the user from its own
dependency, the conversations in its own database).

The routers do not read `request.app.state`: in a host app that is the host's. Each
route of `ChatKitBackend.router` carries a dependency that binds this backend's services
(and, with `identify`, the caller) to `request.state`, which `api/deps.py` reads.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from chatkit_backend.agents.catalog import AgentFactory
from chatkit_backend.api.attachments import router as attachments_router
from chatkit_backend.api.chatkit import router as chatkit_router
from chatkit_backend.api.deps import Services, get_context
from chatkit_backend.api.errors import render_known_error
from chatkit_backend.api.operations import health_router, metrics_router
from chatkit_backend.api.plain import router as plain_router
from chatkit_backend.api.web import web_router
from chatkit_backend.attachments.cleanup import cleanup_schedule
from chatkit_backend.auth.roles import ROLES
from chatkit_backend.auth.tokens import MAX_ID_LENGTH
from chatkit_backend.chat.leases import holder_heartbeat
from chatkit_backend.providers.provider import build_provider
from chatkit_backend.settings import Settings


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as the host app's `identify` dependency says: every thread, item
    and file is scoped to (`tenant_id`, `user_id`); `role` is viewer, member or admin."""

    user_id: str
    tenant_id: str = "default"
    role: str = "member"

    def __post_init__(self) -> None:
        # Every query binds these ids: a bad one is the host's bug, caught here and not
        # as a database error halfway through a request.
        for name in ("user_id", "tenant_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
                raise ValueError(f"Caller.{name} must be a string of 1 to {MAX_ID_LENGTH} chars")
            if "\x00" in value:
                raise ValueError(f"Caller.{name} must not contain NUL")
        if self.role not in ROLES:
            raise ValueError(f"Caller.role must be one of {', '.join(ROLES)}")


# A FastAPI dependency: any callable FastAPI can resolve, returning (or awaiting) a Caller.
Identify = Callable[..., Caller | Awaitable[Caller]]
AgentSpec = str | AgentFactory


class ChatKitBackend:
    """The ChatKit endpoint, uploads and signed links as routers for any FastAPI app.

    `identify`: a FastAPI dependency (it may depend on the host's own) returning the
    `Caller`; what it raises (an HTTPException 401) reaches the client unchanged, and the
    JWT settings are not used. Without it the caller comes from AUTH_MODE, as standalone.
    `agent`: what `AGENT` takes (a built-in name or `module:function`) or the factory
    itself, a function from the request's context to an Agents SDK `Agent`; by default
    the `AGENT` setting.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        identify: Identify | None = None,
        agent: AgentSpec | None = None,
        hook_signals: bool = False,
    ) -> None:
        # The composition root's wiring; imported here because app.py builds on this class.
        from chatkit_backend.app import build_services

        self.settings = settings or Settings()
        if identify is None and self.settings.auth_mode == "host":
            # Else every request would fall through to no caller at all.
            raise ValueError("AUTH_MODE=host needs ChatKitBackend(identify=...)")
        self._provider = build_provider(self.settings)
        # With `identify` the host authenticates: no token verifier is built or used.
        self.services = build_services(
            self.settings, self._provider, agent=agent, authenticate=identify is None
        )
        self._hook_signals = hook_signals
        bind_services = _services_binder(self.services)
        bind_caller = bind_services if identify is None else _caller_binder(self.services, identify)
        self.router = _bound_router(
            [chatkit_router, plain_router, attachments_router], bind_services, bind_caller
        )
        self.health_router = _bound_router([health_router], bind_services, bind_services)
        self.metrics_router = _bound_router([metrics_router], bind_services, bind_services)

    @property
    def page_router(self) -> APIRouter:
        """The built-in chat page at `/` and its static files. Its API calls are relative
        to the page, so include it under the same prefix as `router`."""
        return web_router(self.settings)

    def lifespan(self, app: FastAPI | None = None) -> AbstractAsyncContextManager[None]:
        """`FastAPI(lifespan=backend.lifespan)`, or `async with backend.lifespan(app):`
        inside the host's own lifespan: background work runs in the block, and the
        database pool and the model client close when it ends."""
        return self._running()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        from chatkit_backend.app import _operations_running as operations_running

        services = self.services
        try:
            async with (
                # Entered first, left last: the holder row goes once the streams are done.
                holder_heartbeat(services.turns.turns),
                # Likewise the stream slots this process holds in a shared limiter.
                services.limiter.running(),
                operations_running(services, self._hook_signals),
                cleanup_schedule(self.settings, services.files),
            ):
                yield
        finally:
            await self._provider.aclose()
            await services.engine.dispose()


Binder = Callable[..., Awaitable[None]]


def _services_binder(services: Services) -> Binder:
    async def bind_services(request: Request) -> None:
        request.state.chatkit_services = services

    return bind_services


def _caller_binder(services: Services, identify: Identify) -> Binder:
    async def bind_caller(request: Request, caller: Annotated[Caller, Depends(identify)]) -> None:
        if not isinstance(caller, Caller):
            # The host's bug, not the client's: a 500 from the host's app.
            raise TypeError("identify must return a chatkit_backend.Caller")
        request.state.chatkit_services = services
        request.state.chatkit_caller = caller

    return bind_caller


def _bound_router(sources: Iterable[APIRouter], bind: Binder, bind_caller: Binder) -> APIRouter:
    """The sources' routes, each first running a binder, and answering this project's
    errors itself (a host app has no handlers for them).

    Only routes that need the caller run `identify`: a signed link is followed by an
    `<img>` that carries no session, so the host's login must not stand in front of it."""
    router = APIRouter()
    for source in sources:
        for route in source.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"unexpected route type {type(route).__name__}")
            binder = bind_caller if _needs_caller(route.dependant) else bind
            router.add_api_route(
                route.path,
                route.endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=list(route.tags),
                dependencies=[Depends(binder), *route.dependencies],
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses=route.responses,
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                include_in_schema=route.include_in_schema,
                response_class=route.response_class,
                name=route.name,
                openapi_extra=route.openapi_extra,
                route_class_override=BackendRoute,
            )
    return router


def _needs_caller(dependant: Dependant) -> bool:
    return any(sub.call is get_context or _needs_caller(sub) for sub in dependant.dependencies)


class BackendRoute(APIRoute):
    """Renders this project's errors (`RequestError`, a vanished record, the database
    away) as its JSON error shape inside the route, so they need no app-level handler.
    Anything else (the host's HTTPException from `identify`) goes on to the app."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = await render_known_error(request, exc)
                if response is None:
                    raise
                return response

        return handle

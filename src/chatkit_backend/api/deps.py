"""FastAPI dependencies, as `Annotated` aliases.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
hop per dependency on every request for what is an attribute lookup.
"""

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from chatkit_backend.api.auth import authenticate
from chatkit_backend.checks import RequestChecker
from chatkit_backend.context import RequestContext
from chatkit_backend.limits import Limiter
from chatkit_backend.server import ChatServer
from chatkit_backend.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_server(request: Request) -> ChatServer:
    server: ChatServer = request.app.state.chat_server
    return server


async def get_checker(request: Request) -> RequestChecker:
    checker: RequestChecker = request.app.state.checker
    return checker


async def get_context(request: Request) -> RequestContext:
    """The caller: whoever the bearer token names, or with AUTH_MODE=none the local user."""
    context = await authenticate(request)
    # Links to attachments are absolute: without PUBLIC_URL they use the URL called.
    return replace(context, base_url=str(request.base_url))


async def get_limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServerDep = Annotated[ChatServer, Depends(get_server)]
CheckerDep = Annotated[RequestChecker, Depends(get_checker)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
LimiterDep = Annotated[Limiter, Depends(get_limiter)]

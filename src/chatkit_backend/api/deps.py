"""FastAPI dependencies, as `Annotated` aliases."""

from typing import Annotated

from fastapi import Depends, Request

from chatkit_backend.checks import RequestChecker
from chatkit_backend.context import RequestContext
from chatkit_backend.server import ChatServer
from chatkit_backend.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_server(request: Request) -> ChatServer:
    server: ChatServer = request.app.state.chat_server
    return server


def get_checker(request: Request) -> RequestChecker:
    checker: RequestChecker = request.app.state.checker
    return checker


def get_context(settings: Annotated[Settings, Depends(get_settings)]) -> RequestContext:
    """The caller. With AUTH_MODE=none there is one local user in one local tenant."""
    return RequestContext(
        user_id=settings.local_user_id, tenant_id=settings.local_tenant_id, role="owner"
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServerDep = Annotated[ChatServer, Depends(get_server)]
CheckerDep = Annotated[RequestChecker, Depends(get_checker)]
ContextDep = Annotated[RequestContext, Depends(get_context)]

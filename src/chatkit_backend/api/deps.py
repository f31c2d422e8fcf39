"""The services the routes use, and FastAPI dependencies for them, as `Annotated` aliases.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
hop per dependency on every request for what is an attribute lookup.
"""

from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.auth.tokens import TokenVerifier
from chatkit_backend.chat.admission import Admission
from chatkit_backend.chat.checks import RequestChecker
from chatkit_backend.chat.json_requests import JsonRequests
from chatkit_backend.chat.limits import Limiter
from chatkit_backend.chat.turn import Turns
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.errors import Unauthorized
from chatkit_backend.ops.shutdown import Drain
from chatkit_backend.settings import Settings
from chatkit_backend.store.sql_store import SQLStore

LOCAL_USER_ROLE = "member"


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request may need, built once per app by `create_app`."""

    settings: Settings
    engine: AsyncEngine
    store: SQLStore
    requests: JsonRequests
    turns: Turns
    checker: RequestChecker
    files: AttachmentService
    limiter: Limiter
    admission: Admission
    drain: Drain
    # None in AUTH_MODE=none: every request is the local user.
    verifier: TokenVerifier | None


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_context(request: Request, services: ServicesDep) -> RequestContext:
    """The caller: whoever the bearer token names, or with AUTH_MODE=none the local user."""
    # Links to attachments are absolute: without PUBLIC_URL they use the URL called.
    base_url = str(request.base_url)
    if services.verifier is None:
        settings = services.settings
        owner = Owner(tenant_id=settings.local_tenant_id, user_id=settings.local_user_id)
        return RequestContext(owner, role=LOCAL_USER_ROLE, base_url=base_url)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not scheme:
        raise Unauthorized("This server needs a bearer token", token_given=False)
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be: Bearer <token>")
    return replace(await services.verifier.verify(token), base_url=base_url)


ContextDep = Annotated[RequestContext, Depends(get_context)]

"""The services the routes use, and FastAPI dependencies for them, as `Annotated` aliases.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
hop per dependency on every request for what is an attribute lookup.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.attachments.service import AttachmentService
from chatkit_backend.auth.tokens import TokenVerifier
from chatkit_backend.chat.admission import Admission
from chatkit_backend.chat.checks import RequestChecker
from chatkit_backend.chat.json_requests import JsonRequests
from chatkit_backend.chat.limits import Limiter, address_key
from chatkit_backend.chat.turn import Turns
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.errors import RequestError, Unauthorized
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
    # Bound per request by the routers of `ChatKitBackend` (backend.py): in an app that
    # includes them, `request.app.state` is that app's, not ours.
    services: Services = request.state.chatkit_services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_address(request: Request) -> str:
    """The caller's address as limits count it. Behind a proxy in TRUSTED_PROXIES, uvicorn
    has put the client it forwarded for (X-Forwarded-For) in place of the proxy."""
    return address_key(request.client.host if request.client else None)


@asynccontextmanager
async def authentication_attempt(request: Request, limiter: Limiter) -> AsyncIterator[None]:
    """A credential (token, signed link) checked in the block, counted against the
    caller's address when the block refuses it (a 4xx); past the address's limit of
    failures, 429 before the block runs. A check that could not run (a 5xx: the identity
    provider or the database away) is not the caller's failure."""
    address = client_address(request)
    await limiter.admit_unverified(address)
    try:
        yield
    except RequestError as exc:
        if exc.status >= 500:
            await limiter.release_unverified(address)
        else:
            await limiter.fail_unverified(address)
        raise
    except BaseException:
        await limiter.release_unverified(address)
        raise
    await limiter.release_unverified(address)


async def get_context(request: Request, services: ServicesDep) -> RequestContext:
    """The caller: whoever the bearer token names, or with AUTH_MODE=none the local user."""
    settings = services.settings
    # Links to attachments are absolute. Under PUBLIC_URL, never the Host the caller sent:
    # a forged Host would hand out links to someone else's server.
    base = f"{settings.public_url}/" if settings.public_url else str(request.base_url)
    base_url = base + mount_prefix(request)
    # Set by `ChatKitBackend(identify=...)`: the host app said who this is.
    caller = getattr(request.state, "chatkit_caller", None)
    if caller is not None:
        owner = Owner(tenant_id=caller.tenant_id, user_id=caller.user_id)
        return RequestContext(owner, role=caller.role, base_url=base_url)
    if services.verifier is None:
        if settings.auth_mode != "none":
            # Only an `identify` that did not run gets here: never the local user.
            raise Unauthorized("This server cannot tell who is calling", token_given=False)
        owner = Owner(tenant_id=settings.local_tenant_id, user_id=settings.local_user_id)
        return RequestContext(owner, role=LOCAL_USER_ROLE, base_url=base_url)
    # Missing and bad tokens count against the address; a token that verifies costs nothing.
    async with authentication_attempt(request, services.limiter):
        context = await _bearer(request, services.verifier)
    return replace(context, base_url=base_url)


def mount_prefix(request: Request) -> str:
    """Where an app that includes our router put it (`include_router(prefix="/api")`):
    the request's path, less the root path before it and the route's own path after.
    `/api/`, or `` when the router is at the root."""
    route = request.scope.get("route")
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return ""
    try:
        own = path_format.format(**{k: str(v) for k, v in request.path_params.items()})
    except (KeyError, IndexError, ValueError):
        return ""
    path = request.url.path
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if not path.endswith(own):
        return ""
    prefix = path[: len(path) - len(own)].strip("/")
    return f"{prefix}/" if prefix else ""


async def _bearer(request: Request, verifier: TokenVerifier) -> RequestContext:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not scheme:
        raise Unauthorized("This server needs a bearer token", token_given=False)
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be: Bearer <token>")
    return await verifier.verify(token)


ContextDep = Annotated[RequestContext, Depends(get_context)]

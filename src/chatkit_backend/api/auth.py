"""The caller of an HTTP request: the local user, or whoever the bearer token names."""

from fastapi import Request

from chatkit_backend.auth.tokens import TokenVerifier
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unauthorized
from chatkit_backend.settings import Settings

LOCAL_USER_ROLE = "member"


async def authenticate(request: Request) -> RequestContext:
    """Verify `Authorization: Bearer <token>` in AUTH_MODE=jwt; else the local user."""
    verifier: TokenVerifier | None = request.app.state.token_verifier
    if verifier is None:
        settings: Settings = request.app.state.settings
        return RequestContext(
            user_id=settings.local_user_id, tenant_id=settings.local_tenant_id, role=LOCAL_USER_ROLE
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not scheme:
        raise Unauthorized("This server needs a bearer token", token_given=False)
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be: Bearer <token>")
    return await verifier.verify(token)

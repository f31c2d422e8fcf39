"""`GET /metrics`: Prometheus exposition, switched off or behind a bearer token by settings."""

import hmac

from fastapi import APIRouter, Request, Response

from chatkit_backend.errors import NotFound, Unauthorized
from chatkit_backend.ops.metrics import render
from chatkit_backend.settings import Settings

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if not settings.metrics_enabled:
        raise NotFound("Not found")
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        # Constant-time, so the token cannot be guessed a byte at a time.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized(
                "Metrics need the METRICS_TOKEN bearer token", token_given=bool(scheme)
            )
    body, content_type = render()
    return Response(content=body, media_type=content_type)

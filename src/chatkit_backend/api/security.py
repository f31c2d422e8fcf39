"""HTTP security wiring: who may call (tokens, limits), from where (CORS), and headers."""

import logging

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatkit_backend.auth.tokens import build_verifier
from chatkit_backend.limits import InProcessLimiter
from chatkit_backend.settings import Settings

logger = logging.getLogger(__name__)

# In development with no CORS_ORIGINS, pages served from this machine may call.
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Accept-Language", "chatkit-frame-instance-id"]
# Readable by the page's script: how long to wait, and why a token was refused.
EXPOSED_HEADERS = ["Retry-After", "WWW-Authenticate"]
PREFLIGHT_MAX_AGE_SECONDS = 600


class SecurityHeaders:
    """Headers on every response. Plain ASGI: a `BaseHTTPMiddleware` would buffer
    streams and hide client disconnects from the event-stream response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                # Conversations are private: no shared cache may keep a copy.
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Token verifier and limiter on `app.state`; CORS and header middleware."""
    app.state.token_verifier = build_verifier(settings)
    app.state.limiter = InProcessLimiter(
        settings.rate_limit_per_minute, settings.max_streams_per_user
    )
    if settings.auth_mode == "none":
        logger.warning(
            "AUTH_MODE=none: every request acts as user %r; do not expose this server",
            settings.local_user_id,
        )
    origins = settings.cors_origin_list
    regex = LOCAL_ORIGINS if origins is None and settings.env == "development" else None
    if origins or regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins or [],
            allow_origin_regex=regex,
            allow_methods=["GET", "POST"],
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            # Bearer tokens, not cookies: credentials mode is never needed.
            allow_credentials=False,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )
    # Added last, so it is outermost and also covers the preflight answers CORS makes.
    app.add_middleware(SecurityHeaders)

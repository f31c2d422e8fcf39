"""Middleware: request ids and access lines, security headers, CORS.

Plain ASGI: a `BaseHTTPMiddleware` would buffer streams and hide client disconnects.
The line is written when the response is done, so a stream's duration is the whole
stream. It carries ids, types, status and timing; never bodies, messages or tokens.
"""

import logging
import time

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatkit_backend.ops.logs import RequestInfo, current_request, request_id_from
from chatkit_backend.ops.metrics import REQUESTS
from chatkit_backend.settings import Settings

access_logger = logging.getLogger("chatkit_backend.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes every few seconds would drown the lines that matter.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestTracking:
    """Gives each request an id (the caller's X-Request-ID, or new), returns it, logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        info = RequestInfo(request_id=request_id_from(header.decode("latin-1") if header else None))
        token = current_request.set(info)
        started = time.monotonic()
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = info.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, info, status, time.monotonic() - started)
            current_request.reset(token)

    def _finish(self, scope: Scope, info: RequestInfo, status: int, seconds: float) -> None:
        path: str = scope.get("path", "")
        if path == "/chatkit":
            REQUESTS.labels(type=info.chatkit_type or "unknown", status=str(status)).inc()
        if path in QUIET_PATHS and status < 500:
            return
        level = logging.WARNING if status >= 500 else logging.INFO
        access_logger.log(
            level,
            "%s %s %d",
            scope.get("method", ""),
            path,
            status,
            extra={
                "method": scope.get("method", ""),
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "outcome": info.outcome,
            },
        )


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


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS, security headers and request tracking, in that order from the inside out."""
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
    # Outside CORS, so the preflight answers CORS makes get the headers too.
    app.add_middleware(SecurityHeaders)
    # Outermost: ids and timings cover everything.
    app.add_middleware(RequestTracking)

"""Request ids, one access line per request, and request metrics.

Plain ASGI, like the security headers: a `BaseHTTPMiddleware` would buffer streams.
The line is written when the response is done, so a stream's duration is the whole
stream. It carries ids, types, status and timing; never bodies, messages or tokens.
"""

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatkit_backend.ops.metrics import REQUESTS
from chatkit_backend.ops.tracking import RequestInfo, current_request, request_id_from

logger = logging.getLogger("chatkit_backend.access")

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
        logger.log(
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

"""Middleware: request ids and access lines, security headers, host and origin checks, CORS.

Plain ASGI: a `BaseHTTPMiddleware` would buffer streams and hide client disconnects.
The line is written when the response is done, so a stream's duration is the whole
stream. It carries ids, types, status and timing; never bodies, messages or tokens.
"""

import logging
import re
import time
from urllib.parse import quote, urlsplit

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatkit_backend.api.errors import error_response
from chatkit_backend.ops.logs import RequestInfo, current_request, request_id_from
from chatkit_backend.ops.metrics import REQUESTS
from chatkit_backend.settings import Settings

access_logger = logging.getLogger("chatkit_backend.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes every few seconds would drown the lines that matter.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# The client chooses a path's length; the line keeps its start.
MAX_LOGGED_PATH_CHARS = 512
# What a path may show unencoded (RFC 3986 pchar); `%` is not: a `%0A` in the line
# stands for a newline the client sent, never for the three characters.
_PATH_SAFE = "/!$&'()*+,;=:@"


def _logged_path(path: str) -> str:
    """The path as a URL writes it: `/a%0Ab` for a newline, `%20` for a space."""
    quoted = quote(path, safe=_PATH_SAFE)
    if len(quoted) > MAX_LOGGED_PATH_CHARS:
        return quoted[:MAX_LOGGED_PATH_CHARS] + "..."
    return quoted


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
        logged_path = _logged_path(path)
        access_logger.log(
            level,
            "%s %s %d",
            scope.get("method", ""),
            logged_path,
            status,
            extra={
                "method": scope.get("method", ""),
                "path": logged_path,
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


# A year. No includeSubDomains: other hosts of the domain may still serve plain http.
HSTS = "max-age=31536000"


class SecurityHeaders:
    """Headers on every response. Plain ASGI: a `BaseHTTPMiddleware` would buffer
    streams and hide client disconnects from the event-stream response.

    `Strict-Transport-Security` goes on responses to https requests, and on all of them
    when `https` says browsers reach us over https anyway (a proxy ending TLS in front
    makes the request itself look like http). Browsers ignore it over plain http.
    """

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https

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
                if self.https or scope.get("scheme") == "https":
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# With AUTH_MODE=none every request is trusted, so only names that can only mean this
# machine: a page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding).
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1"]
# Probes and scrapers call by address (a pod's IP), and these paths show nothing private.
HOST_EXEMPT_PATHS = QUIET_PATHS
# A browser sends these across origins without asking; they change nothing here.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(header: str) -> str | None:
    """The name in a Host header without its port (`[::1]:8000` is `::1`); None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        return name if bracket and (not rest or rest.startswith(":")) else None
    name, _, port = value.partition(":")
    return name if name and (not port or port.isdigit()) else None


class HostNames:
    """The host names this server answers to: exact names, `*.example.com`, or `*`."""

    def __init__(self, names: list[str]) -> None:
        self.any = "*" in names
        self.exact = frozenset(name for name in names if not name.startswith("*."))
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))

    def allow(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if self.any or name in self.exact:
            return True
        return bool(self.suffixes) and name.endswith(self.suffixes)


class Origins:
    """Pages that may send state-changing requests: the ones CORS lets read the answers,
    and this server's own (same host, or PUBLIC_URL's origin)."""

    def __init__(self, listed: list[str], regex: str | None, public_url: str | None) -> None:
        self.any = "*" in listed
        own = urlsplit(public_url) if public_url else None
        self.listed = frozenset([*listed, *([f"{own.scheme}://{own.netloc}"] if own else [])])
        self.pattern = re.compile(regex) if regex else None

    def allow(self, origin: str, host: str) -> bool:
        if self.any or origin in self.listed:
            return True
        if self.pattern is not None and self.pattern.fullmatch(origin):
            return True
        # The page this server itself served: a browser names the same host and port.
        _, separator, netloc = origin.partition("://")
        return bool(separator) and bool(host) and netloc.lower() == host.strip().lower()


class RequestGuard:
    """Refuses what another site's page can make a browser send here: a Host name this
    server does not answer to (400, against DNS rebinding) and a state-changing request
    whose `Origin` is a page elsewhere (403, against cross-site posts). Plain ASGI, as
    the others."""

    def __init__(self, app: ASGIApp, hosts: HostNames | None, origins: Origins) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        if (
            self.hosts is not None
            and scope["path"] not in HOST_EXEMPT_PATHS
            and not self.hosts.allow(host or "")
        ):
            message = "This server does not answer to that host name; see ALLOWED_HOSTS"
            await error_response(400, "invalid_host", message)(scope, receive, send)
            return
        if (
            origin is not None
            and scope["method"] not in SAFE_METHODS
            and not self.origins.allow(origin, host or "")
        ):
            message = "Requests from pages on other origins are refused; see CORS_ORIGINS"
            await error_response(403, "forbidden_origin", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def allowed_hosts(settings: Settings) -> HostNames | None:
    """ALLOWED_HOSTS; unset, loopback names only with AUTH_MODE=none, and any with jwt."""
    names = settings.allowed_host_list
    if names is None and settings.auth_mode == "none":
        names = LOOPBACK_HOSTS
    return HostNames(names) if names is not None else None


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS, the host and origin guard, security headers and request tracking, in that
    order from the inside out."""
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
    # Outside CORS, so a foreign Host gets no preflight answer either; inside the headers
    # and the tracking, so its refusals carry both.
    app.add_middleware(
        RequestGuard,
        hosts=allowed_hosts(settings),
        origins=Origins(origins or [], regex, settings.public_url),
    )
    # Outside CORS, so the preflight answers CORS makes get the headers too.
    public_https = (settings.public_url or "").startswith("https://")
    app.add_middleware(SecurityHeaders, https=settings.env == "production" and public_https)
    # Outermost: ids and timings cover everything.
    app.add_middleware(RequestTracking)

"""Limits on a connection before and while the app reads a request: `serve`'s HTTP
protocol, uvicorn's httptools one with the checks it lacks.

uvicorn with httptools keeps a request head of any size in memory (a header line grows
until it ends), takes any number of headers, waits for a head that never completes
(its keep-alive timeout starts only after a first response) and for a body that
trickles in forever. Here, per connection:

- the request line and headers together over `max_header_bytes`, or more than
  `max_headers` headers: 431, and the bytes held stay near the limit;
- a request head not complete `header_timeout_seconds` after it began (or after the
  connection opened): 408, or a plain close when nothing came at all;
- a request body that brings less than `BODY_MIN_BYTES` (or its rest) in
  `body_timeout_seconds`, while the app is ready for it: 408. Only reading the request
  body is timed: a response, an event stream above all, may take as long as it takes;
- a request on a connection past `max_connections` of this process: 503.

Every refusal is the project's JSON error, sent with `Connection: close`; the rest of
what the client sends is then read and dropped for a moment (closing a socket with
unread bytes would reset it, and the client might never see the answer).
"""

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from chatkit_backend.settings import Settings

logger = logging.getLogger(__name__)

# A body must bring this much (or all that is left of it) in each body timeout: a
# client sending a byte a second never stalls outright, yet ties up the request.
BODY_MIN_BYTES = 1024
# How long a refused connection's further bytes are read and dropped before it closes.
LINGER_SECONDS = 2.0
# Sent with 503: a connection frees up as soon as any request ends.
BUSY_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """The limits of one process's connections; see the module's docstring."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "TransportLimits":
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )


def http_protocol(limits: TransportLimits) -> Any:
    """What `uvicorn.run(http=...)` takes: uvicorn only calls it, as it would a protocol
    class. A partial, not a class made here, so spawned workers can unpickle it."""
    return functools.partial(LimitedHttpProtocol, limits=limits)


class _Refusal(Exception):
    """Raised in a parser callback to stop parsing; answered by `data_received`."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_bytes(
    status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A whole response with the JSON error envelope of api/errors.py, closing."""
    body = json.dumps({"error": {"code": code, "message": message}, "message": message})
    encoded = body.encode()
    lines = [
        STATUS_LINE[status],
        *(name + b": " + value + b"\r\n" for name, value in headers),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(encoded),
        b"x-content-type-options: nosniff\r\n",
        b"cache-control: no-store\r\n",
        b"connection: close\r\n\r\n",
        encoded,
    ]
    return b"".join(lines)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `TransportLimits`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: TransportLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        # Between a head's first byte and its end.
        self._in_head = False
        # The head began in the bytes being parsed now: their count is not all head.
        self._head_began_now = False
        self._head_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_body = False
        self._body_left: int | None = None  # from Content-Length; None when chunked
        self._window_bytes = 0
        self._window_excused = False
        self._linger: asyncio.TimerHandle | None = None

    # ---- the connection ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        # uvicorn's keep-alive timeout starts after a response: nothing limits the
        # wait for the first request.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        self._unset_keepalive_if_required()
        self._head_began_now = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refusal):
                self._refuse(exc.__context__, answer=self._idle())
            else:
                self._refuse_malformed()
            return
        except httptools.HttpParserError:
            self._refuse_malformed()
            return
        except httptools.HttpParserUpgrade:
            # As uvicorn does: a WebSocket handshake, else a warning.
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self._head_began_now:
            # Counted as it arrives, not when the head ends: a header line that never
            # ends would otherwise grow without bound inside the parser.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(self._head_too_large(), answer=self._idle())
                return
        if self._awaiting_body and self._body_timer is None:
            self._start_body_window()

    # ---- the parser's callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_began_now = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_headers:
            raise _Refusal(
                431, "headers_too_large", f"More than {self.limits.max_headers} request headers"
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # Exact now that the head is whole ("name: value\r\n" per header).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            raise self._head_too_large()
        # uvicorn's own `limit_concurrency` counts this connection in: with a limit of
        # N it serves N - 1, and answers plain text. Here: N, and the JSON envelope.
        limit = self.limits.max_connections
        if len(self.connections) > limit or len(self.tasks) >= limit:
            raise _Refusal(
                503,
                "overloaded",
                "The server has too many open connections; try again in a moment",
                retry_after=str(BUSY_RETRY_AFTER_SECONDS),
            )
        super().on_headers_complete()
        self._awaiting_body = True
        self._body_left = None
        for name, value in self.headers:
            if name == b"content-length" and value.strip().isdigit():
                self._body_left = int(value)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._window_bytes += len(body)
        if self._body_left is not None:
            self._body_left -= len(body)
        if self.flow.read_paused:
            # The app is behind: bytes stop because we stopped reading, not the client.
            self._window_excused = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # ---- timers ----

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timed_out
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._in_head:
            # Connected and sent nothing: nothing to answer.
            logger.info("closed a connection that sent no request in HEADER_TIMEOUT_SECONDS")
            self.transport.close()
            return
        refusal = _Refusal(
            408,
            "request_timeout",
            "The request head did not arrive in time (HEADER_TIMEOUT_SECONDS)",
        )
        self._refuse(refusal, answer=self._idle())

    def _start_body_window(self) -> None:
        self._window_bytes = 0
        self._window_excused = self.flow.read_paused
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._body_window_ended
        )

    def _body_window_ended(self) -> None:
        self._body_timer = None
        if not self._awaiting_body or self._refused or self.transport.is_closing():
            return
        cycle = self.cycle
        needed = BODY_MIN_BYTES if self._body_left is None else min(BODY_MIN_BYTES, self._body_left)
        excused = (
            self._window_excused
            or self.flow.read_paused
            # The client waits for our `100 Continue`, sent once the app reads the body.
            or (cycle is not None and cycle.waiting_for_100_continue)
        )
        if excused or self._window_bytes >= needed:
            self._start_body_window()
            return
        refusal = _Refusal(
            408,
            "request_timeout",
            "The request body stopped arriving (BODY_TIMEOUT_SECONDS)",
        )
        self._refuse(refusal, answer=cycle is None or not cycle.response_started)

    # ---- refusing ----

    def _idle(self) -> bool:
        """No response is owed or under way, so one of ours can be written."""
        return self.cycle is None or self.cycle.response_complete

    def _head_too_large(self) -> _Refusal:
        return _Refusal(
            431,
            "headers_too_large",
            f"The request line and headers are over {self.limits.max_header_bytes} bytes",
        )

    def _refuse_malformed(self) -> None:
        refusal = _Refusal(400, "invalid_request", "The request is not valid HTTP")
        self._refuse(refusal, answer=self._idle())

    def _refuse(self, refusal: _Refusal, *, answer: bool) -> None:
        """Answer `refusal` (when `answer`), stop parsing, and close after a linger."""
        from chatkit_backend.ops.metrics import count_error  # see ops/workers.py

        self._refused = True
        self._awaiting_body = self._in_head = False
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._unset_keepalive_if_required()
        count_error(refusal.code)
        logger.info("refused a request: %d %s", refusal.status, refusal.code)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app, if it still reads or writes, finds the client gone.
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        if answer:
            headers = [
                *self.server_state.default_headers,
                *(
                    (name.replace("_", "-").encode(), value.encode())
                    for name, value in refusal.headers.items()
                ),
            ]
            self.transport.write(
                error_bytes(refusal.status, refusal.code, refusal.message, headers)
            )
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)

"""Streamed answers over HTTP: refusals before the first byte, then server-sent events
that end cleanly and notice a client that went away."""

import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from chatkit.errors import ErrorCode
from chatkit.server import StreamingResult
from chatkit.types import ChatKitReq, ErrorEvent
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chatkit_backend.api.deps import Services
from chatkit_backend.chat.leases import AnswerLock
from chatkit_backend.chat.stream import AnswerStream
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unavailable
from chatkit_backend.ops.shutdown import Drain

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# An SSE comment: clients ignore it, proxies see traffic.
KEEPALIVE_FRAME = b": keep-alive\n\n"
SHUTDOWN_MESSAGE = (
    "The server is restarting. Your message and the answer so far are saved; "
    "send your message again to continue."
)
# Longest the end-of-stream clean-up (releasing the thread, metrics) may take.
CLEANUP_SECONDS = 10.0


def error_frame(message: str | None = None, allow_retry: bool = True) -> bytes:
    event = ErrorEvent(code=ErrorCode.STREAM_ERROR, message=message, allow_retry=allow_retry)
    return b"data: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"


class StreamHooks(Protocol):
    """What the endpoint does around a stream: see each frame, and clean up at the end."""

    async def frame(self, frame: bytes) -> None:
        """Called with each frame before it is sent."""

    async def closed(self, outcome: str) -> None:
        """Called once: completed, error (it raised), cancelled (client gone) or drained."""


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that ends cleanly however the answer goes.

    - A failure after the stream started becomes an `error` event and a clean end.
    - A client that goes away cancels the answer: the SDK's cancellation handling keeps
      the partial answer (Starlette only watches for disconnects on old ASGI servers).
    - Silent stretches (a slow tool or model) get `: keep-alive` comments, so proxies
      do not cut an idle stream.
    - On shutdown, an answer still open at the drain deadline is cancelled the same
      way, then the client gets an `error` event (retry allowed) and a clean end.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        on_close: Callable[[], None] | None = None,
        *,
        hooks: StreamHooks | None = None,
        keepalive_seconds: float | None = None,
        drain: Drain | None = None,
    ) -> None:
        super().__init__(frames, headers=SSE_HEADERS)
        self.frames = frames
        self.on_close = on_close
        self.hooks = hooks
        self.keepalive_seconds = keepalive_seconds
        self.drain = drain
        self.outcome = "cancelled"
        self._hooks_closed = False
        self._last_sent = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream_until_done_or_gone(scope, receive, send)
        finally:
            # However the stream ended (done, failed, client gone): e.g. free its slot.
            if self.on_close is not None:
                self.on_close()
            await self._close_hooks()

    async def _close_hooks(self) -> None:
        if self.hooks is None or self._hooks_closed:
            return
        self._hooks_closed = True
        # Runs while being cancelled too; bounded, so a dead database cannot hang it.
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            await self.hooks.closed(self.outcome)

    async def _stream_until_done_or_gone(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as task_group:

            async def stream_then_stop() -> None:
                try:
                    await self._pump(send)
                except OSError:
                    self.outcome = "cancelled"
                    logger.info("client went away while a stream was being written")
                task_group.cancel_scope.cancel()

            task_group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            task_group.cancel_scope.cancel()

    async def _pump(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        # Unbounded, so the producer never waits for the client: a cancel (client gone,
        # shutdown) then always lands inside the SDK's generator, where its cancellation
        # handling keeps the partial answer. An answer is finite, so the buffer is too.
        sender, receiver = anyio.create_memory_object_stream[bytes | None](math.inf)
        producer_scope = anyio.CancelScope()
        self._last_sent = anyio.current_time()
        with sender, receiver:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._produce, sender, producer_scope)
                if self.keepalive_seconds is not None:
                    task_group.start_soon(self._keep_alive, sender, self.keepalive_seconds)
                if self.drain is not None:
                    task_group.start_soon(self._end_at_drain_deadline, self.drain, producer_scope)
                async for frame in receiver:
                    if frame is None:
                        break
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    self._last_sent = anyio.current_time()
                task_group.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(
        self, sender: MemoryObjectSendStream[bytes | None], scope: anyio.CancelScope
    ) -> None:
        error = False
        with scope:
            try:
                async for frame in self.frames:
                    if self.hooks is not None:
                        await self.hooks.frame(frame)
                    sender.send_nowait(frame)
            except Exception as exc:
                logger.warning("stream failed: %s", type(exc).__name__)
                error = True
                failed = error_frame()
                if self.hooks is not None:
                    await self.hooks.frame(failed)
                sender.send_nowait(failed)
        if scope.cancelled_caught:
            self.outcome = "drained"
            sender.send_nowait(error_frame(SHUTDOWN_MESSAGE, allow_retry=True))
        else:
            self.outcome = "error" if error else "completed"
        # Before the last frames go out: a client that sends again as soon as it sees the
        # end must find the thread free (its lease released), not get a 409.
        await self._close_hooks()
        sender.send_nowait(None)

    async def _keep_alive(self, sender: MemoryObjectSendStream[bytes | None], every: float) -> None:
        while True:
            quiet = anyio.current_time() - self._last_sent
            if quiet >= every:
                sender.send_nowait(KEEPALIVE_FRAME)
                self._last_sent = anyio.current_time()
                quiet = 0.0
            await anyio.sleep(every - quiet)

    async def _end_at_drain_deadline(self, drain: Drain, producer: anyio.CancelScope) -> None:
        await drain.deadline()
        producer.cancel()


async def start_stream(
    services: Services, chatkit_request: ChatKitReq, context: RequestContext
) -> EventStreamResponse:
    """Refuse (503 draining, 429 slots, 409 busy thread) before any byte; then stream."""
    if services.drain.draining:
        raise Unavailable("The server is restarting; try again in a moment", "shutting_down")
    slot = services.limiter.open_stream(context.owner)
    lock: AnswerLock | None = None
    try:
        thread_id = getattr(chatkit_request.params, "thread_id", None)
        if isinstance(thread_id, str):
            lock = await services.locks.acquire(thread_id, context)
        result = await services.server.handle(chatkit_request, context)
    except BaseException:
        slot.release()
        if lock is not None:
            await lock.release()
        raise
    assert isinstance(result, StreamingResult)
    hooks = AnswerStream(chatkit_request.type, context, services.locks, lock, slot)
    return EventStreamResponse(
        result.json_events,
        hooks=hooks,
        keepalive_seconds=services.settings.sse_keepalive_seconds,
        drain=services.drain,
    )

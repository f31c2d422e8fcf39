"""Streamed answers over HTTP: refusals before the first byte, then server-sent events
that end cleanly and notice a client that went away."""

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from chatkit.types import ChatKitReq, is_streaming_req
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chatkit_backend.api.deps import Services
from chatkit_backend.chat.stream import KEEPALIVE_FRAME, error_frame
from chatkit_backend.chat.turn import Turn
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unavailable
from chatkit_backend.ops.shutdown import Drain

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SHUTDOWN_MESSAGE = (
    "The server is restarting. Your message and the answer so far are saved; "
    "send your message again to continue."
)
# Writes the stream's frames, handing each to the callable it is given.
Producer = Callable[[Callable[[bytes], None]], Awaitable[None]]
# The last frame of a stream that cannot go on: (message or None, whether to retry).
FailureFrame = Callable[[str | None, bool], bytes]


class StreamHooks(Protocol):
    """What the endpoint does when a stream ends."""

    def closed(self, outcome: str) -> None:
        """Called once: completed, error (it raised), cancelled (client gone) or drained."""


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that ends cleanly however the answer goes.

    - A failure after the stream started becomes an `error` event and a clean end.
    - A client that goes away cancels the producer: the turn keeps the partial answer
      (Starlette only watches for disconnects on old ASGI servers).
    - Silent stretches (a slow tool or model) get `: keep-alive` comments, so proxies
      do not cut an idle stream.
    - On shutdown, an answer still open at the drain deadline is cancelled the same
      way, then the client gets an `error` event (retry allowed) and a clean end.
    - Frames that pile up while the client reads are written together, in one send.

    `failure_frame` words those last frames: ChatKit's `error` event unless the stream
    speaks another protocol (`POST /chatkit/api`).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Producer,
        on_close: Callable[[], None] | None = None,
        *,
        hooks: StreamHooks | None = None,
        keepalive_seconds: float | None = None,
        drain: Drain | None = None,
        failure_frame: FailureFrame = error_frame,
    ) -> None:
        super().__init__((), headers=SSE_HEADERS)
        self.produce = produce
        self.failure_frame = failure_frame
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
            self._close_hooks()

    def _close_hooks(self) -> None:
        if self.hooks is None or self._hooks_closed:
            return
        self._hooks_closed = True
        self.hooks.closed(self.outcome)

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
        # shutdown) then always lands inside the turn, where its cancellation handling
        # keeps the partial answer. An answer is finite, so the buffer is too.
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
                    body, more = _with_waiting(frame, receiver)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self._last_sent = anyio.current_time()
                    if not more:
                        break
                task_group.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(
        self, sender: MemoryObjectSendStream[bytes | None], scope: anyio.CancelScope
    ) -> None:
        error = False
        with scope:
            try:
                await self.produce(sender.send_nowait)
            except Exception as exc:
                logger.warning("stream failed: %s", type(exc).__name__)
                error = True
                sender.send_nowait(self.failure_frame(None, True))
        if scope.cancelled_caught:
            self.outcome = "drained"
            sender.send_nowait(self.failure_frame(SHUTDOWN_MESSAGE, True))
        else:
            self.outcome = "error" if error else "completed"
        self._close_hooks()
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


def _with_waiting(
    frame: bytes, receiver: MemoryObjectReceiveStream[bytes | None]
) -> tuple[bytes, bool]:
    """`frame` joined with the frames already waiting; False once the end was among them."""
    frames = [frame]
    while True:
        try:
            waiting = receiver.receive_nowait()
        except anyio.WouldBlock:
            break
        if waiting is None:
            return b"".join(frames), False
        frames.append(waiting)
    return (frames[0] if len(frames) == 1 else b"".join(frames)), True


async def start_stream(
    services: Services, chatkit_request: ChatKitReq, context: RequestContext
) -> EventStreamResponse:
    """Refuse (503 draining, 429 slots, 503 overload, 404/409 thread) before any byte."""
    turn, closed = await open_turn(services, chatkit_request, context)
    return EventStreamResponse(
        turn.run,
        on_close=closed,
        hooks=turn,
        keepalive_seconds=services.settings.sse_keepalive_seconds,
        drain=services.drain,
    )


async def open_turn(
    services: Services, chatkit_request: ChatKitReq, context: RequestContext
) -> tuple[Turn, Callable[[], None]]:
    """The turn, opened once nothing refuses it (503 draining, 429 slots, 503 overload,
    404/409 thread), and what frees its stream slot and admission ticket when it ends."""
    assert is_streaming_req(chatkit_request)
    if services.drain.draining:
        raise Unavailable("The server is restarting; try again in a moment", "shutting_down")
    slot = await services.limiter.open_stream(context.owner)
    try:
        ticket = services.admission.admit()
    except BaseException:
        slot.release()
        raise
    try:
        turn = await services.turns.open(chatkit_request, context)
    except BaseException:
        slot.release()
        ticket.close()
        raise
    ticket.started()

    def closed() -> None:
        slot.release()
        ticket.close()

    return turn, closed

"""Server-sent events that end cleanly and notice a client that went away."""

import logging
from collections.abc import AsyncIterator, Callable

import anyio
from chatkit.errors import ErrorCode
from chatkit.types import ErrorEvent
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_frame(message: str | None = None, allow_retry: bool = True) -> bytes:
    event = ErrorEvent(code=ErrorCode.STREAM_ERROR, message=message, allow_retry=allow_retry)
    return b"data: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def ending_cleanly(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Turn a failure after the stream has started into an `error` event and an end."""
    try:
        async for frame in frames:
            yield frame
    except Exception as exc:
        logger.warning("stream failed: %s", type(exc).__name__)
        yield error_frame()


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that cancels its producer when the client leaves.

    Starlette only watches for disconnects on older ASGI servers; without the watch,
    a cancelled answer would run on, and the SDK's cancellation handling (which keeps
    the partial answer) would never run.
    """

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncIterator[bytes], on_close: Callable[[], None] | None = None
    ) -> None:
        super().__init__(ending_cleanly(frames), headers=SSE_HEADERS)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream_until_done_or_gone(scope, receive, send)
        finally:
            # However the stream ended (done, failed, client gone): e.g. free its slot.
            if self.on_close is not None:
                self.on_close()

    async def _stream_until_done_or_gone(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as task_group:

            async def stream_then_stop() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    logger.info("client went away while a stream was being written")
                task_group.cancel_scope.cancel()

            task_group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            task_group.cancel_scope.cancel()

"""Starting a streamed answer: refusals that must come first, and what ends with it."""

import json

from chatkit.server import StreamingResult
from chatkit.types import ChatKitReq
from fastapi import Request

from chatkit_backend.api.streaming import EventStreamResponse
from chatkit_backend.context import RequestContext
from chatkit_backend.errors import Unavailable
from chatkit_backend.limits import Limiter, StreamLease
from chatkit_backend.ops.metrics import StreamObserver
from chatkit_backend.ops.shutdown import Drain
from chatkit_backend.ops.tracking import current
from chatkit_backend.server import ChatServer
from chatkit_backend.settings import Settings

THREAD_CREATED = b'data: {"type":"thread.created"'


class AnswerStream:
    """The stream's hooks: note a new thread's id, count metrics, release the slot."""

    def __init__(self, chatkit_type: str, slot: StreamLease) -> None:
        self.slot = slot
        self.observer = StreamObserver(chatkit_type)

    async def frame(self, frame: bytes) -> None:
        if frame.startswith(THREAD_CREATED) and (info := current()) is not None:
            info.thread_id = json.loads(frame.removeprefix(b"data: "))["thread"]["id"]
        self.observer.frame(frame)

    async def closed(self, outcome: str) -> None:
        self.slot.release()
        if (info := current()) is not None:
            info.outcome = outcome
        self.observer.ended(outcome)


async def start_stream(
    request: Request,
    chatkit_request: ChatKitReq,
    context: RequestContext,
    server: ChatServer,
    limiter: Limiter,
) -> EventStreamResponse:
    """Refuse (503 draining, 429 slots) before any byte; then stream."""
    settings: Settings = request.app.state.settings
    drain: Drain = request.app.state.drain
    if drain.draining:
        raise Unavailable("The server is restarting; try again in a moment", "shutting_down")
    slot = limiter.open_stream(context)
    try:
        result = await server.handle(chatkit_request, context)
    except BaseException:
        slot.release()
        raise
    assert isinstance(result, StreamingResult)
    return EventStreamResponse(
        result.json_events,
        hooks=AnswerStream(chatkit_request.type, slot),
        keepalive_seconds=settings.sse_keepalive_seconds,
        drain=drain,
    )

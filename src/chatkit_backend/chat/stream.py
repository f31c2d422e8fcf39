"""Starting a streamed answer: refusals that must come first, and what ends with it."""

import json

from chatkit.server import StreamingResult
from chatkit.types import ChatKitReq
from fastapi import Request

from chatkit_backend.answering import AnswerLock, AnswerLocks
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
    """The stream's hooks: claim a new thread, count metrics, release what it held."""

    def __init__(
        self,
        chatkit_type: str,
        context: RequestContext,
        locks: AnswerLocks,
        lock: AnswerLock | None,
        slot: StreamLease,
    ) -> None:
        self.context = context
        self.locks = locks
        self.lock = lock
        self.slot = slot
        self.observer = StreamObserver(chatkit_type)

    async def frame(self, frame: bytes) -> None:
        if self.lock is None and frame.startswith(THREAD_CREATED):
            # A new thread's id is known once the SDK has stored it; take its lease
            # before anyone can learn the id from this frame and send to it.
            thread_id = json.loads(frame.removeprefix(b"data: "))["thread"]["id"]
            if (info := current()) is not None:
                info.thread_id = thread_id
            self.lock = await self.locks.acquire(thread_id, self.context)
        self.observer.frame(frame)

    async def closed(self, outcome: str) -> None:
        self.slot.release()
        if (info := current()) is not None:
            info.outcome = outcome
        self.observer.ended(outcome)
        if self.lock is not None:
            await self.lock.release()


async def start_stream(
    request: Request,
    chatkit_request: ChatKitReq,
    context: RequestContext,
    server: ChatServer,
    limiter: Limiter,
) -> EventStreamResponse:
    """Refuse (503 draining, 429 slots, 409 busy thread) before any byte; then stream."""
    settings: Settings = request.app.state.settings
    drain: Drain = request.app.state.drain
    locks: AnswerLocks = request.app.state.answer_locks
    if drain.draining:
        raise Unavailable("The server is restarting; try again in a moment", "shutting_down")
    slot = limiter.open_stream(context)
    lock: AnswerLock | None = None
    try:
        thread_id = getattr(chatkit_request.params, "thread_id", None)
        if isinstance(thread_id, str):
            lock = await locks.acquire(thread_id, context)
        result = await server.handle(chatkit_request, context)
    except BaseException:
        slot.release()
        if lock is not None:
            await lock.release()
        raise
    assert isinstance(result, StreamingResult)
    hooks = AnswerStream(chatkit_request.type, context, locks, lock, slot)
    return EventStreamResponse(
        result.json_events,
        hooks=hooks,
        keepalive_seconds=settings.sse_keepalive_seconds,
        drain=drain,
    )

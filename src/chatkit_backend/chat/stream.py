"""What happens around one streamed answer: the frames it sends, and what ends with it."""

import json
from enum import Enum, auto

from chatkit_backend.chat.leases import AnswerLock, AnswerLocks
from chatkit_backend.chat.limits import StreamLease
from chatkit_backend.context import RequestContext
from chatkit_backend.ops.logs import current
from chatkit_backend.ops.metrics import StreamObserver


class Frame(Enum):
    """The kinds of frame the stream's hooks act on; everything else is `OTHER`."""

    THREAD_CREATED = auto()
    TEXT_DELTA = auto()
    ERROR = auto()
    OTHER = auto()


# The SDK serialises events with `type` first, so a prefix tells the event apart.
_THREAD_CREATED = b'data: {"type":"thread.created"'
_ERROR = b'data: {"type":"error"'
_ITEM_UPDATED = b'data: {"type":"thread.item.updated"'
_TEXT_DELTA = b'"type":"assistant_message.content_part.text_delta"'


def classify(frame: bytes) -> Frame:
    """The kind of one `data: ...` frame, from its first bytes."""
    if frame.startswith(_ITEM_UPDATED):
        return Frame.TEXT_DELTA if _TEXT_DELTA in frame else Frame.OTHER
    if frame.startswith(_THREAD_CREATED):
        return Frame.THREAD_CREATED
    if frame.startswith(_ERROR):
        return Frame.ERROR
    return Frame.OTHER


def created_thread_id(frame: bytes) -> str:
    """The new thread's id in a `thread.created` frame."""
    thread_id: str = json.loads(frame.removeprefix(b"data: "))["thread"]["id"]
    return thread_id


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
        self.error_seen = False

    async def frame(self, frame: bytes) -> None:
        """Called with each frame before it is sent."""
        match classify(frame):
            case Frame.TEXT_DELTA:
                self.observer.text_delta()
            case Frame.THREAD_CREATED if self.lock is None:
                # A new thread's id is known once the SDK has stored it; take its lease
                # before anyone can learn the id from this frame and send to it.
                thread_id = created_thread_id(frame)
                if (info := current()) is not None:
                    info.thread_id = thread_id
                self.lock = await self.locks.acquire(thread_id, self.context)
            case Frame.ERROR:
                self.error_seen = True
                self.observer.error_event()
            case _:
                pass

    async def closed(self, outcome: str) -> None:
        """Called once: completed, error, cancelled (client gone) or drained (shutdown)."""
        if outcome == "completed" and self.error_seen:
            outcome = "error"
        self.slot.release()
        if (info := current()) is not None:
            info.outcome = outcome
        self.observer.ended(outcome)
        if self.lock is not None:
            await self.lock.release()

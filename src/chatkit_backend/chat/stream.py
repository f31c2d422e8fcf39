"""The frames of a streamed answer: ChatKit events as server-sent events.

Every frame is `data: <event JSON>\n\n`, the JSON exactly as the SDK serialises its
events (by alias, no nulls, no integration metadata). Text deltas, most of a stream's
frames, are written from a template: only the delta itself is escaped.
"""

import orjson
from chatkit.errors import ErrorCode
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    ErrorEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
)

# An SSE comment: clients ignore it, proxies see traffic.
KEEPALIVE_FRAME = b": keep-alive\n\n"
_DELTA_START = b'data: {"type":"thread.item.updated","item_id":'
_DELTA_MIDDLE = b',"update":{"type":"assistant_message.content_part.text_delta","content_index":'
_DELTA_END = b"}}\n\n"


def encode(event: ThreadStreamEvent) -> bytes:
    """One event as one SSE frame."""
    if type(event) is ThreadItemUpdatedEvent:
        update = event.update
        if type(update) is AssistantMessageContentPartTextDelta:
            return b"".join(
                (
                    _DELTA_START,
                    orjson.dumps(event.item_id),
                    _DELTA_MIDDLE,
                    str(update.content_index).encode(),
                    b',"delta":',
                    orjson.dumps(update.delta),
                    _DELTA_END,
                )
            )
    json = event.model_dump_json(
        by_alias=True, exclude_none=True, context={"exclude_metadata": True}
    )
    return b"data: " + json.encode() + b"\n\n"


def error_frame(message: str | None = None, allow_retry: bool = True) -> bytes:
    """The `error` event that ends a stream which cannot go on."""
    return encode(ErrorEvent(code=ErrorCode.STREAM_ERROR, message=message, allow_retry=allow_retry))

"""`POST /chatkit/api`: one message in, the answer out, for scripts and simple clients.

`{"message": {"content": "..."}, "thread_id": "thr_..."}` (`thread_id` to continue a
thread) is a ChatKit `threads.create` or `threads.add_user_message`: refused, admitted,
answered and stored exactly as on `POST /chatkit`, so the conversation shows in ChatKit
afterwards. The answer is JSON, `{"type": "message", "content", "done": true,
"thread_id"}`; or, for `Accept: text/event-stream`, `data:` frames `{"partial": delta}`
ending with `{"final": answer, "done": true, "thread_id"}`.

Every refusal is the JSON error envelope before the turn starts. A failure after it
started (the model, storing the answer, a shutdown) keeps the message and the answer so
far in the thread, as on `/chatkit`, and ends the answer with
`{"error": {"code", "message", "allow_retry"}, "done": true, "thread_id"}`: the stream's
last frame, or in JSON the body of a 502 (`answer_failed`) or 503 (`shutting_down`).
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import orjson
from chatkit.types import (
    InferenceOptions,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    UserMessageInput,
    UserMessageTextContent,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from chatkit_backend.api.chatkit import require_json
from chatkit_backend.api.deps import ContextDep, Services, ServicesDep
from chatkit_backend.api.requests import read_body, read_json_object, validation_summary
from chatkit_backend.api.streaming import SHUTDOWN_MESSAGE, EventStreamResponse, open_turn
from chatkit_backend.auth.roles import authorize
from chatkit_backend.chat.turn import Turn
from chatkit_backend.errors import InvalidRequest
from chatkit_backend.ops.logs import current
from chatkit_backend.ops.metrics import count_error

logger = logging.getLogger(__name__)
router = APIRouter()

PATH = "/chatkit/api"
# Seconds to wait before asking again, as `/chatkit` answers while shutting down.
SHUTDOWN_RETRY_AFTER_SECONDS = 2
FAILED_MESSAGE = "The answer could not be finished. Try again."
# Between two assistant messages of one answer (a tool call or handoff between them).
MESSAGE_SEPARATOR = "\n\n"
_TEXT_DELTA = "assistant_message.content_part.text_delta"
_DATA = b"data: "

# As the ids `/chatkit` takes: anything else names no thread, and is not echoed back.
ThreadId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class PlainMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str


class PlainRequest(BaseModel):
    """The body. Unknown keys are refused: a misspelt `thread_id` would start a new thread."""

    model_config = ConfigDict(extra="forbid")

    message: PlainMessage
    thread_id: ThreadId | None = None

    def as_chatkit(self) -> ThreadsCreateReq | ThreadsAddUserMessageReq:
        input = UserMessageInput(
            content=[UserMessageTextContent(text=self.message.content)],
            attachments=[],
            inference_options=InferenceOptions(),
        )
        if self.thread_id is None:
            return ThreadsCreateReq(params=ThreadCreateParams(input=input))
        return ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id=self.thread_id, input=input)
        )


def parse_plain(body: bytes) -> PlainRequest:
    data = read_json_object(body)
    try:
        return PlainRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid message: {validation_summary(exc, tags=0)}") from None


def frame(value: dict[str, Any]) -> bytes:
    return _DATA + orjson.dumps(value) + b"\n\n"


def failure(thread_id: str, code: str, message: str | None, allow_retry: bool) -> dict[str, Any]:
    error = {"code": code, "message": message or FAILED_MESSAGE, "allow_retry": allow_retry}
    return {"error": error, "done": True, "thread_id": thread_id}


class PlainAnswer:
    """Follows a turn's ChatKit frames: the text deltas as partials, the finished
    assistant messages as the answer, an `error` event as the failure."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.messages: dict[str, str] = {}
        self.error: dict[str, Any] | None = None
        self._streaming: str | None = None

    def read(self, chatkit_frame: bytes) -> bytes | None:
        """The plain frame one ChatKit frame makes, if any."""
        if not chatkit_frame.startswith(_DATA):
            return None
        event = orjson.loads(chatkit_frame[len(_DATA) :])
        match event.get("type"):
            case "thread.item.updated" if event["update"]["type"] == _TEXT_DELTA:
                delta: str = event["update"]["delta"]
                item_id = event["item_id"]
                if item_id != self._streaming:
                    # Partials joined make the final answer, separators included.
                    if self._streaming is not None:
                        delta = MESSAGE_SEPARATOR + delta
                    self._streaming = item_id
                return frame({"partial": delta}) if delta else None
            case "thread.item.done" if event["item"]["type"] == "assistant_message":
                item = event["item"]
                self.messages[item["id"]] = "".join(part["text"] for part in item["content"])
            case "thread.item.removed":
                self.messages.pop(event["item_id"], None)
            case "error":
                self.error = failure(
                    self.thread_id,
                    "answer_failed",
                    event.get("message"),
                    bool(event.get("allow_retry", False)),
                )
        return None

    @property
    def answer(self) -> str:
        return MESSAGE_SEPARATOR.join(self.messages.values())

    def last(self) -> dict[str, Any]:
        """The answer's last word: the whole answer, or what went wrong."""
        if self.error is not None:
            return self.error
        return {"final": self.answer, "done": True, "thread_id": self.thread_id}


@router.post(
    PATH,
    summary="One message in, the answer out",
    description=(
        'Takes `{"message": {"content": "..."}}`, with `"thread_id"` to continue a '
        'thread. Answers `{"type": "message", "content", "done": true, "thread_id"}`; '
        'with `Accept: text/event-stream`, frames `{"partial": "..."}` ending with '
        '`{"final": "...", "done": true, "thread_id"}` (or `{"error": {...}, "done": '
        "true}`). The conversation is a ChatKit thread like any other."
    ),
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        400: {"description": "Malformed JSON, an empty message or one over the limit"},
        401: {"description": "Missing, malformed, expired or wrongly signed bearer token"},
        403: {"description": "The caller's role may not send messages"},
        404: {"description": "Unknown thread"},
        409: {"description": "The thread is still answering an earlier message"},
        413: {"description": "Body over the configured limit"},
        415: {"description": "The body is not `application/json`"},
        429: {"description": "Over the request rate or concurrent-stream limit"},
        502: {"description": "JSON only: the answer failed after the message was stored"},
        503: {"description": "Shutting down, overloaded, or the database is not answering"},
    },
)
async def plain_endpoint(request: Request, services: ServicesDep, context: ContextDep) -> Response:
    # The order of POST /chatkit: 401, 429, 415, 400/413, 403, 400/404, then the turn.
    info = current()
    if info is not None:
        info.owner = context.owner
    await services.limiter.admit_request(context.owner)
    require_json(request, f"POST {PATH}")
    plain = parse_plain(await read_body(request, services.settings.max_body_bytes))
    chatkit_request = plain.as_chatkit()
    if info is not None:
        info.chatkit_type = chatkit_request.type
        info.thread_id = plain.thread_id
    authorize(chatkit_request.type, context.role)
    await services.checker.check(chatkit_request, context)
    turn, closed = await open_turn(services, chatkit_request, context)
    if "text/event-stream" in request.headers.get("accept", "").lower():
        return _stream(services, turn, closed)
    return await _answer_json(services, turn, closed)


def _stream(services: Services, turn: Turn, closed: Callable[[], None]) -> EventStreamResponse:
    answer = PlainAnswer(turn.thread.id)

    async def produce(send: Callable[[bytes], None]) -> None:
        def translate(chatkit_frame: bytes) -> None:
            if (plain := answer.read(chatkit_frame)) is not None:
                send(plain)

        await turn.run(translate)
        send(frame(answer.last()))

    def failed(message: str | None, allow_retry: bool) -> bytes:
        code = "shutting_down" if message == SHUTDOWN_MESSAGE else "answer_failed"
        return frame(failure(turn.thread.id, code, message, allow_retry))

    return EventStreamResponse(
        produce,
        on_close=closed,
        hooks=turn,
        keepalive_seconds=services.settings.sse_keepalive_seconds,
        drain=services.drain,
        failure_frame=failed,
    )


async def _answer_json(services: Services, turn: Turn, closed: Callable[[], None]) -> Response:
    """Run the turn to its end, then answer; at the drain deadline it ends as a stream
    would (what was said is kept)."""
    answer = PlainAnswer(turn.thread.id)

    def follow(chatkit_frame: bytes) -> None:
        answer.read(chatkit_frame)  # its partials are for streams

    outcome = "cancelled"  # unless it ends below: the server cancelled the request
    try:
        failed = False
        with anyio.CancelScope() as deadline:
            async with anyio.create_task_group() as watch:

                async def end_at_drain_deadline() -> None:
                    await services.drain.deadline()
                    deadline.cancel()

                watch.start_soon(end_at_drain_deadline)
                try:
                    await turn.run(follow)
                except Exception as exc:
                    logger.warning("answer failed: %s", type(exc).__name__)
                    failed = True
                watch.cancel_scope.cancel()
        outcome = "error" if failed else "completed"
        if deadline.cancelled_caught:
            outcome = "drained"
    finally:
        turn.closed(outcome)
        closed()
    thread_id = turn.thread.id
    if outcome == "drained":
        body = failure(thread_id, "shutting_down", SHUTDOWN_MESSAGE, True)
        headers = {"Retry-After": str(SHUTDOWN_RETRY_AFTER_SECONDS)}
        return _failed(503, body, headers)
    if failed:
        return _failed(502, failure(thread_id, "answer_failed", None, True))
    if answer.error is not None:
        return _failed(502, answer.error)
    return JSONResponse(
        {"type": "message", "content": answer.answer, "done": True, "thread_id": thread_id}
    )


def _failed(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The error envelope (`message` at the top too, as everywhere), with the thread."""
    count_error(body["error"]["code"])
    return JSONResponse({**body, "message": body["error"]["message"]}, status, headers)

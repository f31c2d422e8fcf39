"""A lean reader for the model's streamed output: SSE bytes to the SDK's event objects.

openai's `AsyncStream` validates every SSE event with pydantic (`construct_type` tries
`validate_type` first on a union, and on each `Optional` field), which profiles as the
largest CPU cost per streamed token: `ResponseStreamEvent` is a union of ~60 models whose
discriminator pydantic does not see, so each event is tried against them. `LeanStream` is
an `AsyncStream` that reads the same HTTP response itself: it splits events as openai's
`SSEDecoder` does, parses them with orjson, and builds the per-token events (Responses
`*.delta` events, Chat Completions text chunks) directly, with the class, field order,
set fields and extras openai would have given them. Values are taken as sent: where
validation would coerce one (a numeric string to an int), this does not. Every other
event goes through openai's own `_process_response_data`, so it is exactly the object
the stock stream yields.

What it keeps from openai's stream: `data: [DONE]` ends the stream (draining HTTP/1.1);
a JSON object with a truthy `error` raises `APIError`; transport errors while reading
raise `APITimeoutError` / `APIConnectionError`; the response is closed on exhaustion,
on error and on `close()`. What it leaves out: the Assistants-only `event: thread.*`
wrapping (neither API here sends it). A client with strict response validation gets no
fast path at all: every event is validated, as openai would.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from types import AsyncGeneratorType
from typing import Any, ClassVar, TypeVar, get_args

import orjson
from openai import APIConnectionError, APIError, APITimeoutError, AsyncStream
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming_cleanup import drain_response_async
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)
from openai.types.responses import (
    ResponseAudioTranscriptDeltaEvent,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseMcpCallArgumentsDeltaEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseRefusalDeltaEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel

_T = TypeVar("_T")
Json = dict[str, Any]
_NO_EVENTS: tuple[bytes, ...] = ()


# --- SSE ---------------------------------------------------------------------------


class SSEReader:
    """Splits upstream bytes into the `data` of each SSE event, as openai's `SSEDecoder`.

    Lines end at LF, CR or CRLF (also across reads); a blank line dispatches the event;
    `data:` lines are joined with LF; comments and unknown fields are ignored. Like
    openai, an event with no data but an `event:`, `retry:` or (ever) an `id:` field is
    dispatched with empty data, which then fails to parse; an unfinished event at the
    end of the body is dropped.
    """

    __slots__ = ("_after_cr", "_data", "_event", "_id", "_pending", "_retry")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._event = b""  # the last `event` line since the last dispatch
        self._id = False  # openai never resets the last event id between events
        self._retry = False
        self._pending: list[bytes] = []  # the start of a line that has not ended yet
        self._after_cr = False  # the last read ended with CR: skip a leading LF

    def feed(self, chunk: bytes) -> Sequence[bytes]:
        """The data of the events this read completes, in order."""
        if not chunk:
            return _NO_EVENTS
        if self._after_cr:
            self._after_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            if chunk:
                self._pending.append(chunk)
            return _NO_EVENTS
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending.clear()
        last = lines.pop()
        if last:
            self._pending.append(last)

        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                elif self._id or self._retry or _field_value(self._event):
                    events.append(b"")
                else:
                    continue
                self._event = b""
                self._retry = False
            elif line.startswith(b"data: "):
                data.append(line[6:])
            elif line.startswith(b"data:"):
                data.append(line[5:])
            elif line.startswith(b"event:"):
                self._event = line
            elif line[0] != 0x3A:  # a line starting with ':' is a comment
                self._other_field(line)
        return events

    def _other_field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":  # "data" with no colon: an empty data line
            self._data.append(value)
        elif name == b"event":
            self._event = line
        elif name == b"id":
            if b"\0" not in value:
                self._id = value != b""
        elif name == b"retry":
            try:
                int(value)
            except ValueError:
                return
            self._retry = True


def _field_value(line: bytes) -> bytes:
    """The value of an SSE field line: after the first colon, less one leading space."""
    value = line.partition(b":")[2]
    return value[1:] if value.startswith(b" ") else value


# --- Building events without validation -------------------------------------------

# The four slots pydantic's `model_construct` fills, set through their descriptors: half
# the cost of `object.__setattr__`, which looks them up along the model's MRO each time.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def bare_model(cls: type[BaseModel], values: Json, fields_set: set[str], extra: Json | None) -> Any:
    """An instance of `cls` holding exactly these values: what `model_construct` (or the
    validation of already valid data) leaves, without walking the fields."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, fields_set)
    _set_extra(model, extra)
    _set_private(model, None)
    return model


def _template(cls: type[BaseModel]) -> Json:
    """Every field of `cls` with its default, in declaration order (no factories here)."""
    values: Json = {}
    for name, info in cls.model_fields.items():
        assert info.alias is None and info.default_factory is None, (cls, name)
        values[name] = None if info.is_required() else info.default
    return values


def _delta_event_builder(cls: type[BaseModel]) -> Callable[[Json], Any]:
    """Builds a flat Responses delta event as openai's validation would: every field
    required and a scalar, except an (empty) `logprobs` list; the fields in declaration
    order; extra keys such as `obfuscation` kept as extras, and among the fields set."""
    template = _template(cls)
    names = frozenset(template)
    has_logprobs = "logprobs" in names
    for name, info in cls.model_fields.items():
        assert info.is_required(), (cls, name)
        assert info.annotation in (str, int) or name in ("type", "logprobs"), (cls, name)

    def build(data: Json) -> Any:
        keys = data.keys()
        if keys == names:
            extra: Json = {}
            values = {**template, **data}
        elif keys > names:  # e.g. api.openai.com's `obfuscation` on every delta
            values = {**template, **data}
            extra = {key: values.pop(key) for key in keys - names}
        else:
            return None  # a field is missing: let openai decide what that makes
        if has_logprobs:
            logprobs = data["logprobs"]
            if type(logprobs) is not list or logprobs:
                return None  # log probabilities are objects: openai builds them
        model = _new(cls)
        _set_dict(model, values)
        _set_fields_set(model, set(keys))
        _set_extra(model, extra)
        _set_private(model, None)
        return model

    return build


RESPONSE_DELTA_EVENTS: tuple[type[BaseModel], ...] = (
    ResponseTextDeltaEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseRefusalDeltaEvent,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseMcpCallArgumentsDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
)

_RESPONSE_BUILDERS: dict[object, Callable[[Json], Any]] = {
    get_args(cls.model_fields["type"].annotation)[0]: _delta_event_builder(cls)
    for cls in RESPONSE_DELTA_EVENTS
}


def fast_response_event(data: Json) -> Any:
    """The Responses event for `data` if it is a pure delta event, else None."""
    build = _RESPONSE_BUILDERS.get(data.get("type"))
    return None if build is None else build(data)


# Chat Completions: openai builds a chunk with `construct`, whose Optional fields are
# validated one by one; for the values below that gives back the values unchanged.
_CHUNK = _template(ChatCompletionChunk)
_CHUNK_FIELDS = frozenset(_CHUNK)
_CHOICE = _template(Choice)
_CHOICE_FIELDS = frozenset(_CHOICE)
_DELTA = _template(ChoiceDelta)
_DELTA_FIELDS = frozenset(_DELTA)
_TEXT_DELTA_FIELDS = frozenset({"content", "role"})
_USAGE = _template(CompletionUsage)
_USAGE_FIELDS = frozenset(_USAGE)
_DETAILS: dict[str, tuple[type[BaseModel], Json]] = {
    "completion_tokens_details": (
        CompletionTokensDetails,
        _template(CompletionTokensDetails),
    ),
    "prompt_tokens_details": (PromptTokensDetails, _template(PromptTokensDetails)),
}


def _chat_choice(choice: object) -> Any:
    """Choice 0 with a text (or empty) delta, else None."""
    if type(choice) is not dict:
        return None
    delta = choice.get("delta")
    if (
        type(delta) is not dict
        or not choice.keys() <= _CHOICE_FIELDS
        or choice.get("logprobs") is not None
    ):
        return None
    keys = delta.keys()
    if not keys <= _TEXT_DELTA_FIELDS and (
        not keys <= _DELTA_FIELDS
        or any(delta[key] is not None for key in keys - _TEXT_DELTA_FIELDS)
    ):
        return None  # tool calls, a refusal, audio or a provider's own keys
    values = {**_CHOICE, **choice}
    values["delta"] = bare_model(ChoiceDelta, {**_DELTA, **delta}, set(keys), {})
    return bare_model(Choice, values, set(choice), {})


def _chat_usage(usage: Json) -> Any:
    """The usage openai would validate, if it is plain token counts, else None."""
    if not usage.keys() <= _USAGE_FIELDS:
        return None
    values = {**_USAGE, **usage}
    for name, value in usage.items():
        if value is None:
            continue
        details = _DETAILS.get(name)
        if details is None:
            if type(value) is not int:
                return None  # a float or a string: validation would coerce it
            continue
        if type(value) is not dict:
            return None
        cls, template = details
        if not value.keys() <= template.keys() or any(
            count is not None and count.__class__ is not int for count in value.values()
        ):
            return None
        values[name] = bare_model(cls, {**template, **value}, set(value), {})
    return bare_model(CompletionUsage, values, set(usage), {})


def fast_chat_chunk(data: Json) -> Any:
    """The chunk for `data` if it is one text delta and/or plain usage, else None."""
    if not data.keys() <= _CHUNK_FIELDS or data.get("moderation") is not None:
        return None
    choices = data.get("choices")
    if type(choices) is not list:
        return None
    values = {**_CHUNK, **data}
    if choices:
        if len(choices) != 1 or (choice := _chat_choice(choices[0])) is None:
            return None
        values["choices"] = [choice]
    usage = data.get("usage")
    if usage is not None:
        if type(usage) is not dict or (usage_model := _chat_usage(usage)) is None:
            return None
        values["usage"] = usage_model
    return bare_model(ChatCompletionChunk, values, set(data), {})


# --- The stream --------------------------------------------------------------------


class LeanStream(AsyncStream[_T]):
    """openai's `AsyncStream` over the same HTTP response, with a faster reader."""

    # The event for a JSON object if it takes the fast path, else None.
    build_fast: ClassVar[Callable[[Json], Any]]

    async def __stream__(self) -> AsyncIterator[_T]:
        response = self.response
        cast_to: Any = self._cast_to
        process = self._client._process_response_data
        fast = None if self._client._strict_response_validation else type(self).build_fast
        loads = orjson.loads
        reader = SSEReader()
        chunks = response.aiter_bytes()
        try:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except timeout_exceptions() as err:
                    raise APITimeoutError(request=response.request) from err
                except request_exceptions() as err:
                    raise APIConnectionError(request=response.request) from err
                for raw in reader.feed(chunk):
                    if raw.startswith(b"[DONE]"):
                        # As openai: HTTP/1.1 needs the rest of the body read for reuse.
                        if response.http_version == "HTTP/1.1":
                            await drain_response_async(response)
                        return
                    data = loads(raw)
                    if type(data) is dict:
                        if data.get("error"):
                            raise _stream_error(data, response.request)
                        if fast is not None and (event := fast(data)) is not None:
                            yield event
                            continue
                    yield process(data=data, cast_to=cast_to, response=response)
        finally:
            try:
                await chunks.aclose()
            finally:
                await response.aclose()

    def __aiter__(self) -> AsyncIterator[_T]:
        # The generator itself: one async-generator hop less per event than openai's.
        return self._iterator

    async def close(self) -> None:
        """Close the reader (if it is not running) and the response."""
        iterator = self._iterator
        try:
            if isinstance(iterator, AsyncGeneratorType) and not iterator.ag_running:
                await iterator.aclose()
        finally:
            await self.response.aclose()


def _stream_error(data: Json, request: Any) -> APIError:
    """The error openai's stream raises for an event with an `error` key."""
    error = data["error"]
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return APIError(message=message, request=request, body=error)


class ResponseEventStream(LeanStream[ResponseStreamEvent]):
    """Responses API events."""

    build_fast = fast_response_event


class ChatChunkStream(LeanStream[ChatCompletionChunk]):
    """Chat Completions chunks."""

    build_fast = fast_chat_chunk

"""From request bytes to a validated ChatKit request, or a clear 4xx; the request shapes
of the original design notes are accepted alongside the SDK's own."""

import json
from typing import Any, get_args

from chatkit.types import ChatKitReq, StreamingReq, is_streaming_req
from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from typing_extensions import TypeIs

from chatkit_backend.chat.ids import check_request_ids
from chatkit_backend.chat.json_requests import ThreadsCreateEmptyReq
from chatkit_backend.errors import InvalidRequest, PayloadTooLarge, UnknownType

# Built once: the SDK's `process()` builds this adapter for every request.
REQUEST_ADAPTER: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)


def _request_types() -> frozenset[str]:
    union = get_args(ChatKitReq)[0]
    return frozenset(model.model_fields["type"].default for model in get_args(union))


REQUEST_TYPES = _request_types()
# What `parse_request` gives: the SDK's requests, and one of the design notes' shapes.
ParsedRequest = ChatKitReq | ThreadsCreateEmptyReq
_MAX_REPORTED_ERRORS = 3


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is over the {limit}-byte limit")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"The request body is over the {limit}-byte limit")
    except ClientDisconnect:
        # Nobody will read the answer, but an unhandled error would be logged as a crash.
        raise InvalidRequest("The client went away before sending the whole body") from None
    return bytes(body)


def read_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object every string of which can be stored, or a 400."""
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON") from None
    except ValueError:
        # Valid JSON Python will not read: an integer past its 4,300-digit limit.
        raise InvalidRequest("The request body has a number too long to read") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    if not _storable(data):
        raise InvalidRequest("The request contains a NUL character or an unpaired surrogate")
    return data


def parse_request(body: bytes) -> ParsedRequest:
    """Decode, normalise the seed shapes, and validate against the SDK's request union."""
    data = read_json_object(body)
    asked = data.get("type")
    data = normalise(data)
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        expected = "expected one of: " + ", ".join(sorted(REQUEST_TYPES))
        if kind is None:
            raise UnknownType(f"The request has no type; {expected}")
        if not isinstance(kind, str):
            raise UnknownType(f"The request's type must be a string; {expected}")
        raise UnknownType(f"Unknown request type {kind[:80]!r}; {expected}")
    params = data.get("params", {})
    if asked == "threads.create" and isinstance(params, dict) and "input" not in params:
        return _new_thread(data)
    try:
        request = REQUEST_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid {kind} request: {validation_summary(exc)}") from None
    except RecursionError:
        raise InvalidRequest("The request is nested too deeply") from None
    # Here, before the ids reach a query, the request's log lines or an error message.
    check_request_ids(request)
    return request


def _new_thread(data: dict[str, Any]) -> ThreadsCreateEmptyReq:
    """`threads.create` without `input`: a new, empty thread (the design notes' shape)."""
    try:
        return ThreadsCreateEmptyReq.model_validate(data)
    except ValidationError as exc:
        summary = validation_summary(exc, tags=0)
        raise InvalidRequest(f"Invalid threads.create request: {summary}") from None


def is_streaming(request: ParsedRequest) -> TypeIs[StreamingReq]:
    """Whether the request is answered with a stream; a new, empty thread is JSON."""
    return not isinstance(request, ThreadsCreateEmptyReq) and is_streaming_req(request)


def _storable(data: Any) -> bool:
    """Whether every key and string can be stored and sent back.

    JSON allows `\\u0000` and unpaired surrogates (`\\ud800`), and so does `json.loads`;
    but PostgreSQL refuses NUL in a text parameter and no UTF-8 encoder takes a lone
    surrogate. Found by the reliability suite's fuzzing: they failed deep in the store
    or the stream (a 500, or a thread created without its message).
    """
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value or not (value.isascii() or _encodable(value)):
                return False
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validation_summary(exc: ValidationError, tags: int = 1) -> str:
    """`tags`: how many leading parts of a location name the union's member, not a field."""
    # Locations and messages only: the offending values could be huge or private.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:_MAX_REPORTED_ERRORS]:
        location = ".".join(str(part) for part in error["loc"][tags:]) or "body"
        parts.append(f"{location}: {error['msg']}")
    more = exc.error_count() - _MAX_REPORTED_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# Old name -> SDK name. `messages.send` is resolved per request (see below).
TYPE_ALIASES = {"threads.get": "threads.get_by_id"}


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    """Rewrite seed-shape requests into the SDK's shapes; leave everything else alone."""
    kind = body.get("type")
    params = body.get("params")
    if not isinstance(params, dict):
        return body
    if kind == "messages.send":
        kind = "threads.add_user_message" if params.get("thread_id") else "threads.create"
        params = {key: value for key, value in params.items() if key != "thread_id" or value}
    kind = TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if "input" in params:
        params = {**params, "input": _input(params["input"])}
    return {**body, "type": kind, "params": params}


def _input(value: Any) -> Any:
    if isinstance(value, str):
        value = {"content": [{"type": "input_text", "text": value}]}
    if not isinstance(value, dict):
        return value
    value = {"attachments": [], "inference_options": {}, **value}
    content = value.get("content")
    if isinstance(content, str):
        value["content"] = [{"type": "input_text", "text": content}]
    elif isinstance(content, list):
        value["content"] = [_part(part) for part in content]
    return value


def _part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "text":
        return {**part, "type": "input_text"}
    return part

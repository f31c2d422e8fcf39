"""The OpenAI wire formats the fakes speak, in each API's own shapes: frames and JSON.

Both fake upstreams use it: the scriptable one the tests drive (`fake_openai.py`) and
the benchmark's fast one (bench/upstream.py), which builds its frames from the same
response objects, message items and events, so the two cannot drift apart.

Every encoder takes the assistant's `text` (None: no message at all), the `ToolCall`s it
makes and the request body, and returns either the SSE frames of a streamed answer or the
JSON of a plain one. The frames are (SSE event name or None, data); data is a JSON object,
or a literal string such as Chat Completions' closing `[DONE]`.
"""

import json
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]
Frame = tuple[str | None, Json | str]  # (SSE event name, data)

_TOKEN = re.compile(r"\s*\S+")


def tokens(text: str) -> list[str]:
    """The deltas the fake streams for `text`: word-sized, joining back to `text`."""
    return _TOKEN.findall(text)


def _token_count(*texts: str) -> int:
    return sum(len(tokens(text)) for text in texts)


def _hex() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class ToolCall:
    """A function call the fake model makes (an Agents SDK handoff is one too)."""

    name: str
    arguments: Json | str = "{}"  # a dict is sent as JSON; a str goes out verbatim
    call_id: str | None = None  # None: a fresh `call_...` id in each answer

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


def _calls(calls: Sequence[ToolCall]) -> list[tuple[str, ToolCall]]:
    """The calls with the call ids one answer uses for them."""
    return [(call.call_id or f"call_{_hex()}", call) for call in calls]


_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def error_body(status: int, api_key: str) -> Json:
    """An OpenAI-style error body; both APIs use the same one."""
    kind, code = _ERRORS.get(status, ("server_error", None))
    # Like the real service, the 401 message quotes the key: our app must not pass it on.
    message = f"Incorrect API key provided: {api_key}." if status == 401 else f"Fake {status}"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --- The Responses API (POST /v1/responses) ------------------------------------------


def response_object(response_id: str, model: str, output: list[Json], usage: Json | None) -> Json:
    """A Responses API `response`: in progress without `usage`, else completed."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if usage else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def responses_usage(input_tokens: int, output_tokens: int) -> Json:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(item_id: str, text: str) -> Json:
    """A finished assistant message, as a response's `output` holds it."""
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }


def _output_items(text: str | None, calls: Sequence[ToolCall]) -> list[Json]:
    """The finished `output` of a response: the message first, then the function calls."""
    items: list[Json] = []
    if text is not None:
        items.append(message_item(f"msg_{_hex()}", text))
    for call_id, call in _calls(calls):
        items.append(
            {
                "id": f"fc_{_hex()}",
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": call.name,
                "arguments": call.arguments_json,
            }
        )
    return items


def message_opening(index: int, item: Json) -> list[tuple[str, Json]]:
    """The events before a message's text deltas (`item` from `message_item`)."""
    [part] = item["content"]
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    started = {**item, "status": "in_progress", "content": []}
    return [
        ("response.output_item.added", {"output_index": index, "item": started}),
        ("response.content_part.added", {**at, "part": {**part, "text": ""}}),
    ]


def text_delta(index: int, item_id: str, token: str) -> tuple[str, Json]:
    at = {"item_id": item_id, "output_index": index, "content_index": 0}
    return "response.output_text.delta", {**at, "delta": token, "logprobs": []}


def message_closing(index: int, item: Json) -> list[tuple[str, Json]]:
    """The events after a message's text deltas."""
    [part] = item["content"]
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    return [
        ("response.output_text.done", {**at, "text": part["text"], "logprobs": []}),
        ("response.content_part.done", {**at, "part": part}),
        ("response.output_item.done", {"output_index": index, "item": item}),
    ]


def _message_events(index: int, item: Json) -> Iterator[tuple[str, Json]]:
    yield from message_opening(index, item)
    for token in tokens(item["content"][0]["text"]):
        yield text_delta(index, item["id"], token)
    yield from message_closing(index, item)


def _function_call_events(index: int, item: Json) -> Iterator[tuple[str, Json]]:
    at = {"item_id": item["id"], "output_index": index}
    started = {**item, "status": "in_progress", "arguments": ""}
    yield "response.output_item.added", {"output_index": index, "item": started}
    for token in tokens(item["arguments"]):
        yield "response.function_call_arguments.delta", {**at, "delta": token}
    done = {**at, "name": item["name"], "arguments": item["arguments"]}
    yield "response.function_call_arguments.done", done
    yield "response.output_item.done", {"output_index": index, "item": item}


def _responses_events(
    text: str | None, calls: Sequence[ToolCall], body: Json
) -> Iterator[tuple[str, Json]]:
    response_id, model = f"resp_{_hex()}", body.get("model", "unknown")
    output = _output_items(text, calls)
    yield "response.created", {"response": response_object(response_id, model, [], None)}
    for index, item in enumerate(output):
        events = _message_events if item["type"] == "message" else _function_call_events
        yield from events(index, item)
    said = [text or "", *(call.arguments_json for call in calls)]
    input_tokens, output_tokens = _token_count(json.dumps(body.get("input"))), _token_count(*said)
    usage = responses_usage(input_tokens, output_tokens)
    yield "response.completed", {"response": response_object(response_id, model, output, usage)}


def responses_frames(text: str | None, calls: Sequence[ToolCall], body: Json) -> Iterator[Frame]:
    """The SSE events of a streamed Responses API answer, `response.completed` last."""
    for sequence_number, (event, data) in enumerate(_responses_events(text, calls, body)):
        yield event, {"type": event, "sequence_number": sequence_number, **data}


def responses_json(text: str | None, calls: Sequence[ToolCall], body: Json) -> Json:
    """A non-streamed Responses API answer: the response `response.completed` carries."""
    *_, (_, completed) = _responses_events(text, calls, body)
    response: Json = completed["response"]
    return response


def is_responses_delta(frame: Frame) -> bool:
    return frame[0] in ("response.output_text.delta", "response.function_call_arguments.delta")


# --- Chat Completions (POST /v1/chat/completions) ------------------------------------


def _chat_usage(body: Json, text: str | None, calls: Sequence[ToolCall]) -> Json:
    said = [text or "", *(call.arguments_json for call in calls)]
    prompt, completion = _token_count(json.dumps(body.get("messages"))), _token_count(*said)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _completion(kind: str, body: Json) -> Json:
    return {
        "id": f"chatcmpl-{_hex()}",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "system_fingerprint": None,
    }


def _chat_deltas(text: str | None, calls: Sequence[ToolCall]) -> list[Json]:
    """The `delta`s of choice 0, as the real API splits them: role first, then text, calls."""
    deltas: list[Json] = []
    if text is not None:
        deltas += [{"content": ""}, *({"content": token} for token in tokens(text))]
    for index, (call_id, call) in enumerate(_calls(calls)):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": index, "id": call_id, "type": "function", "function": function}
        deltas.append({"tool_calls": [opening]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": token}}]}
            for token in tokens(call.arguments_json)
        ]
    first = deltas[0] if deltas else {}
    deltas[:1] = [{"role": "assistant", "content": None, "refusal": None, **first}]
    return deltas


def chat_frames(text: str | None, calls: Sequence[ToolCall], body: Json) -> Iterator[Frame]:
    """The `chat.completion.chunk`s of a streamed answer, then `[DONE]`.

    Like the real API, usage comes only when `stream_options.include_usage` is set: then
    every chunk has `"usage": null` and one more chunk, with no choices, carries it.
    """
    head = _completion("chat.completion.chunk", body)
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    tail = {"usage": None} if with_usage else {}
    finish_reason = "tool_calls" if calls else "stop"
    for delta, finish in [*((d, None) for d in _chat_deltas(text, calls)), ({}, finish_reason)]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        yield None, {**head, "choices": [choice], **tail}
    if with_usage:
        yield None, {**head, "choices": [], "usage": _chat_usage(body, text, calls)}
    yield None, "[DONE]"


def chat_json(text: str | None, calls: Sequence[ToolCall], body: Json) -> Json:
    """A non-streamed `chat.completion`."""
    message: Json = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call_id, call in _calls(calls)
        ]
    finish_reason = "tool_calls" if calls else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    usage = _chat_usage(body, text, calls)
    return {**_completion("chat.completion", body), "choices": [choice], "usage": usage}


def is_chat_delta(frame: Frame) -> bool:
    """A chunk carrying text, or a piece of a call's arguments (`cut_after` counts these)."""
    data = frame[1]
    if isinstance(data, str) or not data["choices"]:
        return False
    delta = data["choices"][0]["delta"]
    arguments = [call.get("function", {}).get("arguments") for call in delta.get("tool_calls", [])]
    return bool(delta.get("content")) or any(arguments)

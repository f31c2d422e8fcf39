"""A fake OpenAI-compatible HTTP server, so tests drive the real `openai` client over HTTP.

    with running_fake_openai() as fake:
        fake.always(Reply(text="Hi there"))       # every request, until changed
        fake.once(Reply(status=429), Reply())     # the next requests, in order, first
        ...  AsyncOpenAI(base_url=fake.base_url, ...)
        fake.requests[-1].body["model"]

It speaks the Responses API (`POST /v1/responses`, streaming and not). Each endpoint
is a small function from (reply, request body) to frames, so Chat Completions and
function calls can be added as one more route and one more `Reply` field.
"""

import asyncio
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Json = dict[str, Any]
Frame = tuple[str | None, Json]  # (SSE event name, data)

_TOKEN = re.compile(r"\s*\S+")


def tokens(text: str) -> list[str]:
    """The deltas the fake streams for `text`: word-sized, joining back to `text`."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Reply:
    """What the fake does with one request."""

    text: str = "Hello from the fake model."
    status: int = 200  # anything else answers an OpenAI-style JSON error
    cut_after: int | None = None  # drop the connection after this many deltas
    stall: float = 0.0  # seconds of silence before the first byte
    delta_delay: float = 0.0  # seconds between deltas
    retry_after_ms: int | None = 5  # sent with errors, so client retries are quick


@dataclass(frozen=True)
class Recorded:
    """One request the fake got."""

    path: str
    headers: dict[str, str]
    body: Json

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def messages(self) -> list[tuple[str, str]]:
        """The Responses `input` (or Chat `messages`) as (role, text) pairs, oldest first."""
        raw = self.body.get("input", self.body.get("messages", []))
        if isinstance(raw, str):
            return [("user", raw)]
        pairs = []
        for item in raw:
            if "role" not in item:
                continue
            content = item.get("content")
            if isinstance(content, str):
                pairs.append((item["role"], content))
            else:
                text = "".join(part.get("text", "") for part in content or [])
                pairs.append((item["role"], text))
        return pairs


_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def error_body(status: int, api_key: str) -> Json:
    kind, code = _ERRORS.get(status, ("server_error", None))
    # Like the real service, the 401 message quotes the key: our app must not pass it on.
    message = f"Incorrect API key provided: {api_key}." if status == 401 else f"Fake {status}"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --- The Responses API --------------------------------------------------------------


def _response(response_id: str, model: str, output: list[Json], usage: Json | None) -> Json:
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


def _message(item_id: str, text: str | None) -> Json:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    status = "in_progress" if text is None else "completed"
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _usage(body: Json, text: str) -> Json:
    input_tokens, output_tokens = len(tokens(json.dumps(body.get("input")))), len(tokens(text))
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def responses_frames(reply: Reply, body: Json) -> Iterator[Frame]:
    """The SSE events of a streamed Responses API answer, `response.completed` last."""
    response_id, item_id = f"resp_{secrets.token_hex(12)}", f"msg_{secrets.token_hex(12)}"
    model, text = body.get("model", "unknown"), reply.text
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    yield "response.created", {"response": _response(response_id, model, [], None)}
    yield "response.output_item.added", {"output_index": 0, "item": _message(item_id, None)}
    yield "response.content_part.added", {**at, "part": {**part, "text": ""}}
    for token in tokens(text):
        yield "response.output_text.delta", {**at, "delta": token, "logprobs": []}
    yield "response.output_text.done", {**at, "text": text, "logprobs": []}
    yield "response.content_part.done", {**at, "part": part}
    yield "response.output_item.done", {"output_index": 0, "item": _message(item_id, text)}
    output = [_message(item_id, text)]
    final = _response(response_id, model, output, _usage(body, text))
    yield "response.completed", {"response": final}


def responses_json(reply: Reply, body: Json) -> Json:
    """A non-streamed Responses API answer: the response `response.completed` carries."""
    *_, (_, completed) = responses_frames(reply, body)
    response: Json = completed["response"]
    return response


@dataclass(frozen=True)
class Endpoint:
    frames: Callable[[Reply, Json], Iterator[Frame]]
    json: Callable[[Reply, Json], Json]
    is_delta: Callable[[Frame], bool]


ENDPOINTS = {
    "/v1/responses": Endpoint(
        responses_frames, responses_json, lambda frame: frame[0] == "response.output_text.delta"
    ),
}


# --- The server ---------------------------------------------------------------------

Receive = Callable[[], Awaitable[Json]]
Send = Callable[[Json], Awaitable[None]]


@dataclass
class FakeOpenAI:
    """The ASGI app: answers from its script and records every request."""

    default: Reply = field(default_factory=Reply)
    queued: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""  # set once serving, e.g. http://127.0.0.1:PORT/v1

    def always(self, reply: Reply) -> None:
        self.default = reply

    def once(self, *replies: Reply) -> None:
        self.queued.extend(replies)

    def reset(self) -> None:
        self.default, self.requests = Reply(), []
        self.queued.clear()

    async def __call__(self, scope: Json, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while (message := await receive())["type"] == "http.request":
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        endpoint = ENDPOINTS.get(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is None:
            await _send_json(send, 404, {"error": {"message": "Not found", "type": "not_found"}})
            return
        body: Json = json.loads(raw or b"{}")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(Recorded(scope["path"], headers, body))
        reply = self.queued.popleft() if self.queued else self.default
        if reply.stall and not await _silent_for(reply.stall, receive):
            return  # the client gave up first
        if reply.status != 200:
            key = headers.get("authorization", "").removeprefix("Bearer ")
            extra = {} if reply.retry_after_ms is None else {"retry-after-ms": reply.retry_after_ms}
            await _send_json(send, reply.status, error_body(reply.status, key), extra)
        elif body.get("stream"):
            await _send_stream(send, endpoint, reply, body)
        else:
            await _send_json(send, 200, endpoint.json(reply, body))


async def _silent_for(seconds: float, receive: Receive) -> bool:
    """Wait `seconds`, or until the client disconnects (then False)."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return True
    return False


async def _send_json(send: Send, status: int, data: Json, extra: Json | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), str(v).encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


async def _send_stream(send: Send, endpoint: Endpoint, reply: Reply, body: Json) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    deltas = 0
    for sequence_number, (event, data) in enumerate(endpoint.frames(reply, body)):
        if endpoint.is_delta((event, data)):
            await asyncio.sleep(reply.delta_delay)
            if deltas == reply.cut_after:
                # Returning mid-body makes uvicorn drop the connection: no final chunk.
                # (uvicorn logs "ASGI callable returned without completing response".)
                return
            deltas += 1
        data = {"type": event, "sequence_number": sequence_number, **data}
        frame = (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"
        await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@contextmanager
def running_fake_openai() -> Iterator[FakeOpenAI]:
    """Serve a `FakeOpenAI` on 127.0.0.1 on a free port, in a background thread."""
    fake = FakeOpenAI()
    # log_config=None: leave the process's logging alone; uvicorn's records propagate.
    config = uvicorn.Config(
        fake,
        lifespan="off",
        http="h11",
        loop="asyncio",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the fake OpenAI server did not start")
                time.sleep(0.01)
            fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
            yield fake
        finally:
            server.should_exit = True
            thread.join(timeout=10)

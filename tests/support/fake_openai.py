"""A fake OpenAI-compatible HTTP server, so tests drive the real `openai` client over HTTP.

    with running_fake_openai() as fake:
        fake.always(Reply(text="Hi there"))       # every request, until changed
        fake.once(Reply(status=429), Reply())     # the next requests, in order, first
        fake.once(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7})]))
        fake.respond_with(lambda request: Reply(text=f"Got {request.tool_output}"))
        ...  AsyncOpenAI(base_url=fake.base_url, ...)
        fake.requests[-1].body["model"], fake.requests[-1].tool_names

It speaks the Responses API (`POST /v1/responses`) and Chat Completions
(`POST /v1/chat/completions`), streaming and not, text and function calls; an Agents
SDK handoff is a function call too (`handoff("Billing")`). The wire formats are in
`openai_wire` (shared with the benchmark's fast upstream); `ENDPOINTS` routes a path to
its encoders.
"""

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support.openai_wire import (
    Frame,
    Json,
    ToolCall,
    chat_frames,
    chat_json,
    error_body,
    is_chat_delta,
    is_responses_delta,
    responses_frames,
    responses_json,
    tokens,
)

__all__ = [
    "ENDPOINTS",
    "FakeOpenAI",
    "Recorded",
    "Reply",
    "ToolCall",
    "ToolOutput",
    "handoff",
    "running_fake_openai",
    "tokens",
]

DEFAULT_TEXT = "Hello from the fake model."


@dataclass(frozen=True)
class Reply:
    """What the fake does with one request."""

    text: str | None = None  # None: DEFAULT_TEXT, or no text at all if it calls tools
    tool_calls: Sequence[ToolCall] = ()  # function calls (and handoffs), after any text
    status: int = 200  # anything else answers an OpenAI-style JSON error
    cut_after: int | None = None  # drop the connection after this many deltas (text or args)
    stall: float = 0.0  # seconds of silence before the first byte (or see `stall_after`)
    stall_after: int | None = None  # with `stall`: the silence comes after this many deltas
    garbage: bytes | None = None  # sent where `cut_after` cuts (else at the first delta)
    delta_delay: float = 0.0  # seconds between deltas
    retry_after_ms: int | None = 5  # sent with errors, so client retries are quick

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    @property
    def message(self) -> str | None:
        """The assistant text it answers with; None for no message, only tool calls."""
        if self.text is None and not self.tool_calls:
            return DEFAULT_TEXT
        return self.text


def handoff(agent_name: str) -> ToolCall:
    """The call an Agents SDK model makes to hand off to the agent named `agent_name`."""
    # The SDK's default handoff tool name (Handoff.default_tool_name).
    return ToolCall(name="transfer_to_" + re.sub(r"[^a-zA-Z0-9_]", "_", agent_name).lower())


@dataclass(frozen=True)
class ToolOutput:
    """A tool's result sent back to the model: Responses `function_call_output`, Chat `tool`."""

    call_id: str
    output: str


def _text(content: Any) -> str:
    """The text of a message's (or tool output's) content: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


@dataclass(frozen=True)
class Recorded:
    """One request the fake got."""

    path: str
    headers: dict[str, str]
    body: Json

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def items(self) -> list[Json]:
        """The Responses `input` items (a string as one user message), or Chat `messages`."""
        raw: Any = self.body.get("input", self.body.get("messages", []))
        return [{"role": "user", "content": raw}] if isinstance(raw, str) else list(raw)

    def messages(self) -> list[tuple[str, str]]:
        """The messages among the items as (role, text) pairs, oldest first.

        Chat `tool` messages are here as ("tool", output); Responses function calls and
        their outputs, which have no role, are not (see `tool_output`).
        """
        return [(item["role"], _text(item.get("content"))) for item in self.items if "role" in item]

    @property
    def tool_names(self) -> list[str]:
        """The names of the functions offered (handoffs included), in order."""
        tools = self.body.get("tools") or []
        return [tool.get("name") or tool.get("function", {}).get("name") for tool in tools]

    @property
    def tool_output(self) -> ToolOutput | None:
        """The last input item, if it is a tool's result; else None."""
        last = self.items[-1] if self.items else {}
        if last.get("type") == "function_call_output":
            return ToolOutput(last["call_id"], _text(last.get("output")))
        if last.get("role") == "tool":
            return ToolOutput(last["tool_call_id"], _text(last.get("content")))
        return None


@dataclass(frozen=True)
class Endpoint:
    frames: Callable[[str | None, Sequence[ToolCall], Json], Iterator[Frame]]
    json: Callable[[str | None, Sequence[ToolCall], Json], Json]
    is_delta: Callable[[Frame], bool]  # what `cut_after` and `delta_delay` count


ENDPOINTS = {
    "/v1/responses": Endpoint(responses_frames, responses_json, is_responses_delta),
    "/v1/chat/completions": Endpoint(chat_frames, chat_json, is_chat_delta),
}


# --- The server ---------------------------------------------------------------------

Receive = Callable[[], Awaitable[Json]]
Send = Callable[[Json], Awaitable[None]]


@dataclass
class FakeOpenAI:
    """The ASGI app: answers from its script and records every request.

    A request gets the next `once` reply if any is queued, else what the responder
    (`always` or `respond_with`) makes of it. Both APIs share the script.
    """

    responder: Callable[[Recorded], Reply] = field(default=lambda _request: Reply())
    queued: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    streaming: int = 0  # streamed answers in progress; one stops when its client leaves
    base_url: str = ""  # set once serving, e.g. http://127.0.0.1:PORT/v1

    def always(self, reply: Reply) -> None:
        self.responder = lambda _request: reply

    def respond_with(self, responder: Callable[[Recorded], Reply]) -> None:
        """Answer each request with `responder(request)` (queued `once` replies first)."""
        self.responder = responder

    def once(self, *replies: Reply) -> None:
        self.queued.extend(replies)

    def reset(self) -> None:
        self.always(Reply())
        self.requests = []
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
        request = Recorded(scope["path"], headers, body)
        self.requests.append(request)
        # A responder that raises makes a 500 and a traceback in the captured log.
        reply = self.queued.popleft() if self.queued else self.responder(request)
        if (
            reply.stall
            and reply.stall_after is None
            and not await _silent_for(reply.stall, receive)
        ):
            return  # the client gave up first
        if reply.status != 200:
            key = headers.get("authorization", "").removeprefix("Bearer ")
            extra = {} if reply.retry_after_ms is None else {"retry-after-ms": reply.retry_after_ms}
            await _send_json(send, reply.status, error_body(reply.status, key), extra)
        elif body.get("stream"):
            self.streaming += 1
            try:
                await _unless_disconnected(_send_stream(send, endpoint, reply, body), receive)
            finally:
                self.streaming -= 1
        else:
            await _send_json(send, 200, endpoint.json(reply.message, reply.tool_calls, body))


async def _silent_for(seconds: float, receive: Receive) -> bool:
    """Wait `seconds`, or until the client disconnects (then False)."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return True
    return False


async def _unless_disconnected(work: Awaitable[None], receive: Receive) -> None:
    """Run `work` until it ends or the client leaves, as the real API stops generating."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        watcher.cancel()
    for finished in (task, watcher):
        with contextlib.suppress(asyncio.CancelledError):
            await finished  # re-raises what went wrong in `work`


async def _send_json(send: Send, status: int, data: Json, extra: Json | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), str(v).encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


async def _send_stream(send: Send, endpoint: Endpoint, reply: Reply, body: Json) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    deltas = 0
    cut_after = 0 if reply.garbage is not None and reply.cut_after is None else reply.cut_after
    for event, data in endpoint.frames(reply.message, reply.tool_calls, body):
        if endpoint.is_delta((event, data)):
            if deltas == reply.stall_after:
                await asyncio.sleep(reply.stall)
            await asyncio.sleep(reply.delta_delay)
            if deltas == cut_after:
                if reply.garbage is not None:  # bytes that are not the API's, then a clean end
                    body_frame = {"type": "http.response.body", "body": reply.garbage}
                    await send({**body_frame, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                    return
                # Returning mid-body makes uvicorn drop the connection: no final chunk.
                # (uvicorn logs "ASGI callable returned without completing response".)
                return
            deltas += 1
        line = data if isinstance(data, str) else json.dumps(data)
        frame = (f"event: {event}\n" if event else "") + f"data: {line}\n\n"
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

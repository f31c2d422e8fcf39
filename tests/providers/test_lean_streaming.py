"""The lean streaming models against the Agents SDK's stock ones, over HTTP.

`LeanResponsesModel` and `LeanChatCompletionsModel` (providers/openai_models.py) read the
upstream SSE themselves (providers/streaming.py) instead of through openai's
`AsyncStream`. Here a stock model and a lean one answer the same upstream, with the real
`openai` client: the fake OpenAI server, or `RawUpstream` for byte-level SSE (CRLF,
comments, reads split anywhere, cuts). What the SDK sees must be the same: the events,
every object in them (class, values, which fields were set, extras), the errors; and the
HTTP response must be closed however the stream ends.
"""

import asyncio
import hashlib
import inspect
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
import uvicorn
from agents.agent import Agent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel, _ResponseStreamWithRequestId
from agents.run import Runner
from agents.run_config import RunConfig
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from agents.tool import function_tool
from openai import AsyncOpenAI, AsyncStream
from openai._base_client import BaseClient, make_request_options
from openai._response import AsyncResponseContextManager
from openai._streaming import SSEDecoder, _SSELineDecoder
from openai._utils._transform import _async_transform_recursive
from openai.resources.responses.responses import AsyncResponses
from openai.types.responses import Response, ResponseCompletedEvent
from pydantic import BaseModel

from chatkit_backend.providers import streaming
from chatkit_backend.providers.openai_models import LeanChatCompletionsModel, LeanResponsesModel
from chatkit_backend.providers.provider import Provider
from chatkit_backend.providers.streaming import SSEReader, fast_chat_chunk, fast_response_event
from tests.support import openai_wire
from tests.support.fake_openai import (
    FakeOpenAI,
    Reply,
    ToolCall,
    handoff,
    running_fake_openai,
    tokens,
)

MODEL = "fake-model-2025"
ANSWER = "Employee 7 is Ada Lovelace, who works in engineering."
LONG_ANSWER = " ".join(["word"] * 40)
NO_TRACING = RunConfig(tracing_disabled=True)
APIS = ("responses", "chat_completions")
STOCK: dict[str, type[Model]] = {
    "responses": OpenAIResponsesModel,
    "chat_completions": OpenAIChatCompletionsModel,
}
LEAN: dict[str, type[Model]] = {
    "responses": LeanResponsesModel,
    "chat_completions": LeanChatCompletionsModel,
}
# The SDK stamps the Response it builds for a Chat Completions stream with time.time().
CLOCK_FIELDS = {"responses": frozenset(), "chat_completions": frozenset({"created_at"})}


# --- Upstreams ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOpenAI) -> FakeOpenAI:
    fake_server.reset()
    return fake_server


@pytest.fixture
def steady_wire(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The fake's ids and clock made repeatable; call the result before each run."""
    ids: list[Iterator[int]] = [itertools.count()]
    monkeypatch.setattr(openai_wire, "_hex", lambda: f"{next(ids[0]):024x}")
    monkeypatch.setattr(openai_wire, "time", SimpleNamespace(time=lambda: 1_750_000_000.0))

    def restart() -> None:
        ids[0] = itertools.count()

    return restart


@dataclass
class RawUpstream:
    """Answers every POST with `chunks`, each sent as a body part of its own."""

    chunks: Sequence[bytes] = ()
    pause: float = 0.002  # between parts, so that each tends to be a read of its own
    cut: bool = False  # end by dropping the connection instead of ending the body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(self.pause)
        if not self.cut:  # returning mid-body makes uvicorn drop the connection
            await send({"type": "http.response.body", "body": b""})


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 in a background thread; its /v1 base URL."""
    config = uvicorn.Config(
        app,
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
                assert thread.is_alive() and time.monotonic() < deadline, "no upstream"
                time.sleep(0.01)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[tuple[RawUpstream, str]]:
    upstream = RawUpstream()
    with serving(upstream) as base_url:
        yield upstream, base_url


@pytest.fixture
def raw(raw_server: tuple[RawUpstream, str]) -> tuple[RawUpstream, str]:
    upstream, base_url = raw_server
    upstream.chunks, upstream.pause, upstream.cut = (), 0.002, False
    return upstream, base_url


def sse(frames: Sequence[tuple[str | None, Any]], newline: str = "\n") -> bytes:
    """SSE bytes for (event name, data) frames; data a JSON value or a literal string."""
    out = []
    for event, data in frames:
        line = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {event}{newline}" if event else "") + f"data: {line}{newline * 2}")
    return "".join(out).encode()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- Observing everything ----------------------------------------------------------


def anatomy(value: Any, ignore: frozenset[str] = frozenset()) -> Any:
    """What anyone could observe of a value, to compare exactly: for a pydantic model its
    class, the fields set, the extras and every field, all the way down."""
    if isinstance(value, BaseModel):
        extra = value.__pydantic_extra__
        return (
            type(value).__qualname__,
            sorted(value.model_fields_set),
            None if extra is None else {k: anatomy(v, ignore) for k, v in extra.items()},
            {k: anatomy(v, ignore) for k, v in value.__dict__.items() if k not in ignore},
        )
    if isinstance(value, list | tuple):
        return [anatomy(item, ignore) for item in value]
    if isinstance(value, dict):
        return {k: anatomy(v, ignore) for k, v in value.items() if k not in ignore}
    return (type(value).__name__, value)


def observed(event: StreamEvent, ignore: frozenset[str]) -> Any:
    """A run's stream event as the app could see it."""
    if isinstance(event, RawResponsesStreamEvent):
        return ("raw", anatomy(event.data, ignore))
    if isinstance(event, RunItemStreamEvent):
        item = event.item
        return ("item", event.name, type(item).__name__, item.agent.name, anatomy(item.raw_item))
    return ("agent", event.new_agent.name)


@asynccontextmanager
async def openai_client(
    base_url: str, responses: list[httpx2.Response] | None = None, **options: Any
) -> AsyncIterator[AsyncOpenAI]:
    """The real client; every HTTP response it gets is appended to `responses`."""

    async def keep(response: httpx2.Response) -> None:
        if responses is not None:
            responses.append(response)

    http = openai.DefaultAsyncHttpx2Client(event_hooks={"response": [keep]})
    options = {"max_retries": 0, **options}
    async with AsyncOpenAI(base_url=base_url, api_key="k", http_client=http, **options) as c:
        yield c


def stream_response(model: Model, settings: ModelSettings | None = None) -> AsyncIterator[Any]:
    """One model call, as the Runner makes it."""
    return model.stream_response(
        None, "Hi", settings or ModelSettings(), [], None, [], ModelTracing.DISABLED
    )


async def model_events(
    api: str, models: dict[str, type[Model]], base_url: str, **options: Any
) -> tuple[list[Any], BaseException | None]:
    """The events one model call yields (as anatomies), and what it raised, if anything."""
    seen: list[Any] = []
    async with openai_client(base_url, **options) as client:
        model = models[api](MODEL, openai_client=client)  # type: ignore[call-arg]
        try:
            async for event in stream_response(model, ModelSettings(include_usage=True)):
                seen.append(anatomy(event, CLOCK_FIELDS[api]))
        except Exception as exc:
            return seen, exc
    return seen, None


async def both_models(
    api: str, base_url: str, restart: Callable[[], None] = lambda: None, **options: Any
) -> tuple[tuple[list[Any], BaseException | None], tuple[list[Any], BaseException | None]]:
    """A stock model's call, then a lean one's (`restart` before each: see `steady_wire`)."""
    restart()
    stock = await model_events(api, STOCK, base_url, **options)
    restart()
    lean = await model_events(api, LEAN, base_url, **options)
    return stock, lean


def same_failure(stock: BaseException | None, lean: BaseException | None) -> None:
    assert stock is not None and lean is not None
    assert type(lean) is type(stock)
    assert str(lean) == str(stock)


# --- Whole runs: text, a tool call, a handoff, usage --------------------------------


@function_tool
def get_employee(employee_id: int) -> str:
    """Look up an employee by id."""
    return json.dumps({"id": employee_id, "name": "Ada Lovelace"})


def scripted(fake: FakeOpenAI, scenario: str) -> None:
    match scenario:
        case "text":
            fake.always(Reply(text=ANSWER))
        case "tool":
            fake.once(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7})]))
            fake.always(Reply(text=ANSWER))
        case "text and tool":
            calls = [ToolCall("get_employee", {"employee_id": 7})]
            fake.once(Reply(text="Let me look.", tool_calls=calls))
            fake.always(Reply(text=ANSWER))
        case "handoff":
            fake.once(Reply(tool_calls=[handoff("Billing")]), Reply(text="Your invoice is paid."))


def starting_agent(scenario: str, model: Model, settings: ModelSettings) -> Agent[Any]:
    if scenario == "handoff":
        billing = Agent(name="Billing", instructions="Invoices.", model=model)
        return Agent(
            name="Triage", instructions="Route.", handoffs=[billing], model=model,
            model_settings=settings,
        )  # fmt: skip
    return Agent(
        name="HR", instructions="Help.", tools=[get_employee], model=model, model_settings=settings
    )


@dataclass
class Run:
    events: list[Any]
    completed: list[Response]
    usage: tuple[int, int, int, int]
    final_output: Any
    requests: list[Any]


async def run_agent(
    fake: FakeOpenAI, models: dict[str, type[Model]], api: str, scenario: str, usage: bool
) -> Run:
    fake.reset()
    scripted(fake, scenario)
    async with openai_client(fake.base_url) as client:
        model = models[api](MODEL, openai_client=client)  # type: ignore[call-arg]
        agent = starting_agent(scenario, model, ModelSettings(include_usage=usage or None))
        result = Runner.run_streamed(agent, "Who is employee 7?", run_config=NO_TRACING)
        events = [event async for event in result.stream_events()]
    ignore = CLOCK_FIELDS[api]
    completed = [
        event.data.response.model_copy(update=dict.fromkeys(ignore, 0))
        for event in events
        if isinstance(event, RawResponsesStreamEvent)
        and isinstance(event.data, ResponseCompletedEvent)
    ]
    spent = result.context_wrapper.usage
    return Run(
        events=[observed(event, ignore) for event in events],
        completed=completed,
        usage=(spent.requests, spent.input_tokens, spent.output_tokens, spent.total_tokens),
        final_output=result.final_output,
        requests=[(request.path, request.body) for request in fake.requests],
    )


@pytest.mark.parametrize("scenario", ["text", "tool", "text and tool", "handoff"])
@pytest.mark.parametrize(
    ("api", "usage"),
    # The Responses API always reports usage; Chat Completions only when asked.
    [("responses", True), ("chat_completions", True), ("chat_completions", False)],
    ids=["responses", "chat_completions-usage", "chat_completions-no-usage"],
)
async def test_a_run_sees_the_same_events_as_with_the_sdk_models(
    fake: FakeOpenAI, steady_wire: Callable[[], None], api: str, usage: bool, scenario: str
) -> None:
    steady_wire()
    stock = await run_agent(fake, STOCK, api, scenario, usage)
    steady_wire()
    lean = await run_agent(fake, LEAN, api, scenario, usage)

    assert lean.requests == stock.requests, "the SDK builds the requests either way"
    assert lean.events == stock.events
    assert lean.completed == stock.completed
    assert [anatomy(r) for r in lean.completed] == [anatomy(r) for r in stock.completed]
    assert lean.usage == stock.usage
    assert lean.final_output == stock.final_output
    # What was compared is a real run, not two empty ones.
    assert len(stock.completed) == len(stock.requests) == (1 if scenario == "text" else 2)
    assert all(response.output for response in stock.completed)
    assert (stock.usage[2] > 0) is usage
    deltas = [e for e in stock.events if e[0] == "raw" and "text.delta" in str(e[1])]
    assert len(deltas) >= len(tokens(ANSWER if scenario != "handoff" else "paid."))


def test_the_provider_builds_the_lean_models() -> None:
    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    assert isinstance(Provider("m", "responses", client).get_model(None), LeanResponsesModel)
    chat = Provider("m", "chat_completions", client).get_model(None)
    assert isinstance(chat, LeanChatCompletionsModel)


# --- Every object, fast path or not, as openai builds it -----------------------------

TEXT_DELTA = {
    "type": "response.output_text.delta",
    "sequence_number": 4,
    "item_id": "msg_1",
    "output_index": 0,
    "content_index": 0,
    "delta": " Ada",
    "logprobs": [],
}
AT = {"item_id": "fc_1", "output_index": 1, "sequence_number": 9}
RESPONSES_EVENTS: list[tuple[bool, dict[str, Any]]] = [  # (takes the fast path, event)
    (False, {"type": "response.created", "sequence_number": 0,
             "response": openai_wire.response_object("resp_1", MODEL, [], None)}),
    (True, TEXT_DELTA),
    (True, {**TEXT_DELTA, "obfuscation": "x7Qz"}),  # what api.openai.com adds
    (True, {**TEXT_DELTA, "delta": "", "sequence_number": 5}),
    (False, {**TEXT_DELTA, "logprobs": [{"token": " Ada", "logprob": -0.25,
                                         "top_logprobs": [{"token": " Ada", "logprob": -1}]}]}),
    (False, {k: v for k, v in TEXT_DELTA.items() if k != "logprobs"}),
    (False, {**TEXT_DELTA, "logprobs": None}),
    (True, {"type": "response.function_call_arguments.delta", **AT, "delta": '{"employee'}),
    (True, {"type": "response.function_call_arguments.delta", **AT, "delta": "",
            "obfuscation": ""}),
    (True, {"type": "response.reasoning_summary_text.delta", **AT, "summary_index": 0,
            "delta": "Thinking"}),
    (True, {"type": "response.reasoning_text.delta", **AT, "content_index": 0, "delta": "Hm"}),
    (True, {"type": "response.refusal.delta", **AT, "content_index": 0, "delta": "No"}),
    (True, {"type": "response.custom_tool_call_input.delta", **AT, "delta": "x"}),
    (True, {"type": "response.mcp_call_arguments.delta", **AT, "delta": "{"}),
    (True, {"type": "response.audio.transcript.delta", "sequence_number": 2, "delta": "hi"}),
    (False, {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "text": "Ada", "logprobs": [], "sequence_number": 6}),
    (False, {"type": "response.output_item.done", "output_index": 0, "sequence_number": 7,
             "item": openai_wire.message_item("msg_1", "Ada")}),
    (False, {"type": "response.something_new", "sequence_number": 8, "delta": "?"}),
    (False, {"type": "error", "code": "server_error", "message": "Boom", "param": None,
             "sequence_number": 9}),
    (False, {"type": "response.completed", "sequence_number": 10,
             "response": openai_wire.response_object(
                 "resp_1", MODEL, [openai_wire.message_item("msg_1", "Ada")],
                 openai_wire.responses_usage(3, 1))}),
]  # fmt: skip

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1750000000}
HEAD = {**HEAD, "model": MODEL}
OPENAI_HEAD = {**HEAD, "service_tier": "default", "system_fingerprint": "fp_1", "usage": None}


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "choices": [choice], **top}


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": 0},
}
TOOL_CALL = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_employee", "arguments": ""}}  # fmt: skip
CHAT_CHUNKS: list[tuple[bool, dict[str, Any]]] = [  # (takes the fast path, chunk)
    (True, chunk({"role": "assistant", "content": "", "refusal": None})),
    (True, chunk({"content": " Ada"})),
    (True, {**chunk({"content": " Ada"}), **OPENAI_HEAD, "obfuscation": "k2"}),
    (True, chunk({"role": "assistant", "content": "Hi"}, system_fingerprint="fp_ollama")),
    (True, chunk({"content": None, "tool_calls": None, "function_call": None, "audio": None})),
    (True, chunk({}, "stop")),
    (True, chunk({}, "eos")),  # not one of openai's finish reasons: kept as sent
    (True, {**HEAD, "choices": [], "usage": USAGE}),
    (True, {**chunk({"content": "!"}, "stop"), "usage": USAGE}),  # usage on the last chunk
    (True, {**chunk({"content": " Ada"}), "usage": {**USAGE, "prompt_tokens_details": None}}),
    (True, {"choices": [{"index": 0, "delta": {"content": "no id"}}]}),  # a sparse server
    (False, {**HEAD, "choices": [], "usage": {**USAGE, "cost": 0.002}}),
    (False, {**HEAD, "choices": [], "usage": {**USAGE, "total_tokens": 17.0}}),
    (False, {**HEAD, "choices": [], "usage": {**USAGE, "prompt_tokens_details": {"x": 1}}}),
    (False, chunk({"tool_calls": [TOOL_CALL]})),
    (False, chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"id": 7}'}}]})),
    (False, chunk({"refusal": "I can't help with that."})),
    (False, chunk({"content": "", "reasoning_content": "Let me think"})),
    (False, chunk({"content": "", "reasoning": "Hmm"})),
    (False, {**chunk({"content": "x"}), "choices": [{"index": 0, "delta": {"content": "x"},
             "finish_reason": None, "logprobs": {"content": [], "refusal": None}}]}),
    (False, {**HEAD, "choices": [chunk({"content": "a"})["choices"][0],
                                 {**chunk({"content": "b"})["choices"][0], "index": 1}]}),
    (False, {**chunk({"content": " Ada"}), "provider": "somewhere"}),
    (False, {**chunk({"content": " Ada"}), "moderation": {"input": None, "output": None}}),
    (False, {**HEAD, "choices": None}),
]  # fmt: skip


@pytest.mark.parametrize("api", APIS)
async def test_every_object_is_the_one_openai_builds(
    raw: tuple[RawUpstream, str], api: str
) -> None:
    upstream, base_url = raw
    catalog = RESPONSES_EVENTS if api == "responses" else CHAT_CHUNKS
    fast = fast_response_event if api == "responses" else fast_chat_chunk
    assert [fast(json.loads(json.dumps(data))) is not None for _, data in catalog] == [
        takes_fast_path for takes_fast_path, _ in catalog
    ]
    frames = [(data.get("type") if api == "responses" else None, data) for _, data in catalog]
    upstream.chunks = [sse([*frames, (None, "[DONE]")])]
    objects: dict[type[AsyncStream[Any]], list[Any]] = {}
    async with openai_client(base_url) as client:
        for cls in (AsyncStream, streaming.ResponseEventStream, streaming.ChatChunkStream):
            if api == "responses":
                stream = await client.responses.create(model=MODEL, input="Hi", stream=True)
            else:
                stream = await client.chat.completions.create(model=MODEL, messages=[], stream=True)
            if cls is not AsyncStream:  # what the lean models do with the stock stream
                stream = cls(cast_to=stream._cast_to, response=stream.response, client=client)
            objects[cls] = [item async for item in stream]
            assert stream.response.is_closed

    stock = objects.pop(AsyncStream)
    mine = objects[
        streaming.ResponseEventStream if api == "responses" else streaming.ChatChunkStream
    ]
    assert len(stock) == len(catalog)
    assert [anatomy(item) for item in mine] == [anatomy(item) for item in stock]
    assert mine == stock
    assert [item.model_dump_json() for item in mine] == [item.model_dump_json() for item in stock]


# --- SSE: exactly openai's reading of the bytes -------------------------------------

SSE_STREAMS = {
    "lf": b'event: e\ndata: {"n": 1}\n\ndata: {"n": 2}\n\n',
    "crlf": b'event: e\r\ndata: {"n": 1}\r\n\r\ndata: {"n": 2}\r\n\r\n',
    "cr": b'event: e\rdata: {"n": 1}\r\rdata: {"n": 2}\r\r',
    "mixed line ends": b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\r\ndata: 4\n\n",
    "comments": b': hello\n\n: ping\ndata: {"n": 1}\n: pong\n\n',
    "data lines joined": b'data: {"n":\ndata: 1}\ndata:\n\n',
    "no space, two spaces": b'data:{"n": 1}\n\ndata:  {"n": 2}\n\n',
    "data without a colon": b"data\n\n",
    "an event with no data": b"event: ping\n\nevent:\n\nevent: \n\ndata: 1\n\n",
    "id and retry": b"id: 7\ndata: 1\n\n\n: after an id a blank line dispatches\n\n",
    "empty id, NUL id": b"id:\n\nid: a\x00b\n\nid\n\n",
    "retry": b"retry: 10\n\nretry: soon\n\nretry\n\n",
    "unknown fields": b"foo: bar\nbaz\ndata: 1\n\n",
    "unfinished last event": b'data: {"n": 1}\n\ndata: {"n": 2}',
    "unfinished last line": b'data: {"n": 1}\n\ndata: {"n": 2}\n',
    "done": b"data: 1\n\ndata: [DONE]\n\ndata: 2\n\n",
    "utf-8": 'data: {"t": "héllo ✓ 日本"}\n\n'.encode(),
    "long line": b"data: " + b"x" * 5000 + b"\n\n",
}


def openai_reads(chunks: Sequence[bytes]) -> list[str]:
    return [event.data for event in SSEDecoder().iter_bytes(iter(chunks))]


def lean_reads(chunks: Sequence[bytes]) -> list[str]:
    reader = SSEReader()
    return [data.decode() for part in chunks for data in reader.feed(part)]


@pytest.mark.parametrize("name", SSE_STREAMS)
def test_sse_is_read_as_openai_reads_it_however_it_is_split(name: str) -> None:
    data = SSE_STREAMS[name]
    expected = openai_reads([data])
    assert lean_reads([data]) == expected
    assert lean_reads(pieces(data, 1)) == expected, "one byte per read"
    assert lean_reads([b"", *pieces(data, 3), b""]) == expected, "empty reads too"
    for cut in range(1, len(data)):
        assert lean_reads([data[:cut], data[cut:]]) == openai_reads([data[:cut], data[cut:]])
    for first, second in itertools.combinations(range(1, min(len(data), 40)), 2):
        parts = [data[:first], data[first:second], data[second:]]
        assert lean_reads(parts) == openai_reads(parts)


def encoded_answer(api: str, newline: str, comments: bool) -> bytes:
    calls = [ToolCall("get_employee", {"employee_id": 7}, call_id="call_1")]
    body = {"model": MODEL, "stream_options": {"include_usage": True}}
    frames = (openai_wire.responses_frames if api == "responses" else openai_wire.chat_frames)(
        ANSWER, calls, body
    )
    data = b""
    for frame in frames:
        if comments:
            data += f": keep-alive{newline}{newline}".encode()
        data += sse([frame], newline)
    return data


# Every split of the bytes is in the test above; over HTTP, reads cut lines anywhere.
@pytest.mark.parametrize("read_size", [None, 61, 7], ids=["whole", "61-byte", "7-byte"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("api", APIS)
async def test_sse_edge_cases_over_http(
    raw: tuple[RawUpstream, str], api: str, newline: str, read_size: int | None
) -> None:
    upstream, base_url = raw
    data = encoded_answer(api, newline, comments=True)
    if api == "responses":  # a [DONE] ends this one too, and what follows is not read
        data += b"data: [DONE]\n\ndata: {not json\n\n"
    else:
        data += b"data: {not json\n\n"
    upstream.chunks = [data] if read_size is None else pieces(data, read_size)
    upstream.pause = 0.0002 if read_size == 7 else 0.001
    (stock, stock_error), (lean, lean_error) = await both_models(api, base_url)
    assert stock_error is lean_error is None
    assert lean == stock
    assert len(stock) > len(tokens(ANSWER))


# --- Failures: the same exceptions as the stock path ---------------------------------


def answer_prefix(api: str) -> list[tuple[str | None, Any]]:
    """The frames of an answer up to (not including) its third text delta."""
    frames = list(
        (openai_wire.responses_frames if api == "responses" else openai_wire.chat_frames)(
            ANSWER, [], {"model": MODEL}
        )
    )
    deltas = [i for i, frame in enumerate(frames) if "delta" in json.dumps(frame[1])]
    return frames[: deltas[2]]


IN_STREAM_ERRORS = {
    "error key": {"error": {"message": "The server is overloaded.", "type": "server_error"}},
    "error key, no message": {"error": {"code": 500}},
    "error key, odd message": {"error": {"message": ["?"]}},
    "responses error event": {"type": "error", "code": "server_error", "message": "Boom",
                              "param": None, "sequence_number": 5},
    "response.failed": {"type": "response.failed", "sequence_number": 5,
                        "response": {**openai_wire.response_object("resp_1", MODEL, [], None),
                                     "status": "failed",
                                     "error": {"code": "server_error", "message": "Boom"}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("api", "error"),
    [(api, error) for api in APIS for error in IN_STREAM_ERRORS
     if api == "responses" or error.startswith("error key")],
)  # fmt: skip
async def test_an_in_stream_error_raises_as_with_the_stock_model(
    raw: tuple[RawUpstream, str], api: str, error: str
) -> None:
    upstream, base_url = raw
    upstream.chunks = [sse([*answer_prefix(api), (None, IN_STREAM_ERRORS[error])])]
    (stock, stock_error), (lean, lean_error) = await both_models(api, base_url)
    same_failure(stock_error, lean_error)
    assert lean == stock
    if error.startswith("error key"):
        assert type(lean_error) is openai.APIError
        assert lean_error.body == IN_STREAM_ERRORS[error]["error"]  # type: ignore[union-attr]


@pytest.mark.parametrize("api", APIS)
async def test_bad_json_raises_a_json_error_as_with_the_stock_model(
    raw: tuple[RawUpstream, str], api: str
) -> None:
    upstream, base_url = raw
    upstream.chunks = [sse(answer_prefix(api)), b"data: {not json\n\n"]
    (stock, stock_error), (lean, lean_error) = await both_models(api, base_url)
    # orjson's error is a json.JSONDecodeError too: a ValueError, not an openai error.
    assert isinstance(stock_error, json.JSONDecodeError)
    assert isinstance(lean_error, json.JSONDecodeError)
    assert lean == stock


@pytest.mark.parametrize("api", APIS)
async def test_a_dropped_connection_raises_as_with_the_stock_model(
    fake: FakeOpenAI, steady_wire: Callable[[], None], raw: tuple[RawUpstream, str], api: str
) -> None:
    fake.always(Reply(text=ANSWER, cut_after=3))
    (stock, stock_error), (lean, lean_error) = await both_models(api, fake.base_url, steady_wire)
    same_failure(stock_error, lean_error)
    assert type(lean_error) is openai.APIConnectionError
    assert lean == stock and stock

    # Cut mid-line, mid-event, not on a frame boundary.
    upstream, base_url = raw
    data = sse(answer_prefix(api))
    upstream.chunks, upstream.cut = [data, b'data: {"type": "respo'], True
    (stock, stock_error), (lean, lean_error) = await both_models(api, base_url)
    same_failure(stock_error, lean_error)
    assert type(lean_error) is openai.APIConnectionError
    assert lean == stock and stock


@pytest.mark.parametrize("api", APIS)
async def test_a_stall_mid_stream_times_out_as_with_the_stock_model(
    fake: FakeOpenAI, steady_wire: Callable[[], None], api: str
) -> None:
    fake.always(Reply(text=ANSWER, stall=5.0, stall_after=2))
    (stock, stock_error), (lean, lean_error) = await both_models(
        api, fake.base_url, steady_wire, timeout=0.3
    )
    same_failure(stock_error, lean_error)
    assert type(lean_error) is openai.APITimeoutError
    assert lean == stock and stock


@pytest.mark.parametrize("status", [401, 429, 500])
@pytest.mark.parametrize("api", APIS)
async def test_status_errors_are_openais(fake: FakeOpenAI, api: str, status: int) -> None:
    fake.always(Reply(status=status))
    (_, stock_error), (_, lean_error) = await both_models(api, fake.base_url, max_retries=1)
    same_failure(stock_error, lean_error)
    assert isinstance(lean_error, openai.APIStatusError)
    assert lean_error.status_code == status
    retried = status != 401  # openai retries 429 and 5xx, not a refused key
    assert len(fake.requests) == (4 if retried else 2), "the client's retries, for each model"


# --- The HTTP response is closed, however the stream ends ----------------------------


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("models", [LEAN, STOCK], ids=["lean", "stock"])
@pytest.mark.parametrize("ending", ["exhausted", "aclose", "cancelled", "consumer-breaks"])
@pytest.mark.parametrize("api", APIS)
async def test_the_http_response_is_closed(
    fake: FakeOpenAI, api: str, ending: str, models: dict[str, type[Model]]
) -> None:
    fake.always(Reply(text=LONG_ANSWER, delta_delay=0.02))
    responses: list[httpx2.Response] = []
    async with openai_client(fake.base_url, responses) as client:
        model = models[api](MODEL, openai_client=client)  # type: ignore[call-arg]
        events = stream_response(model)
        if ending == "exhausted":
            assert len([event async for event in events]) > len(tokens(LONG_ANSWER))
        else:
            started = asyncio.Event()

            async def read() -> None:
                async for event in events:
                    if event.type == "response.output_text.delta":
                        started.set()
                        if ending == "consumer-breaks":
                            break

            reading = asyncio.ensure_future(read())
            await asyncio.wait_for(started.wait(), 5)
            assert fake.streaming == 1 and not responses[0].is_closed
            if ending == "cancelled":
                reading.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reading
            else:
                await reading
                await events.aclose()  # type: ignore[attr-defined]
        await until(lambda: fake.streaming == 0, "the fake still streams to us")
        [response] = responses
        await until(lambda: response.is_closed, "the HTTP response is still open")
        if ending != "exhausted":
            assert len(fake.requests) == 1


async def test_a_lean_stream_closed_before_reading_closes_its_response(fake: FakeOpenAI) -> None:
    fake.always(Reply(text=ANSWER))
    responses: list[httpx2.Response] = []
    async with openai_client(fake.base_url, responses) as client:
        stock = await client.chat.completions.create(model=MODEL, messages=[], stream=True)
        lean = streaming.ChatChunkStream(
            cast_to=stock._cast_to, response=stock.response, client=client
        )
        async with lean:
            pass
        assert lean.response.is_closed
        await until(lambda: fake.streaming == 0, "the fake still streams to us")


# --- The SDK code the lean models mirror or reuse ------------------------------------

# (what, its source, the fingerprint we read): a new SDK version that changes one fails
# here; re-read it, check providers/streaming.py and openai_models.py, then update.
MIRRORED: list[tuple[str, Any, str]] = [
    ("openai AsyncStream.__stream__", AsyncStream.__stream__, "381c66f37dd55cb8"),
    ("openai AsyncStream._iter_events", AsyncStream._iter_events, "afe83a0e0ef594c7"),
    ("openai SSEDecoder", SSEDecoder, "1d0c33231ca865ce"),
    ("openai _SSELineDecoder", _SSELineDecoder, "0da4c54ed2094232"),
    (
        "openai BaseClient._process_response_data",
        BaseClient._process_response_data,
        "4406fcb1a3ae4105",
    ),
    (
        "agents OpenAIResponsesModel._fetch_response",
        OpenAIResponsesModel._fetch_response,
        "e52c9665ddfe8d00",
    ),
    (
        "agents OpenAIChatCompletionsModel._fetch_response",
        OpenAIChatCompletionsModel._fetch_response,
        "c82c41c6283098dd",
    ),
    ("agents _ResponseStreamWithRequestId", _ResponseStreamWithRequestId, "fcaf1a7fff92a226"),
    # The Responses request is posted without the typed transform (openai_models.py
    # `_post_streamed`): what `responses.create` does, and the transform it skips.
    ("openai AsyncResponses.create", AsyncResponses.create, "e933c7dc90fd1573"),
    ("openai make_request_options", make_request_options, "b7cb5b48fc154743"),
    ("openai AsyncResponseContextManager", AsyncResponseContextManager, "cb0daf943b2d9d96"),
    ("openai _async_transform_recursive", _async_transform_recursive, "5d6a5002e314755b"),
]


@pytest.mark.parametrize(("name", "source", "expected"), MIRRORED)
def test_the_sdk_code_we_mirror_is_what_we_read(name: str, source: Any, expected: str) -> None:
    fingerprint = hashlib.sha256(inspect.getsource(source).encode()).hexdigest()[:16]
    assert fingerprint == expected, f"{name} changed in the installed SDK: re-read it"

"""The OpenAI provider end to end: the app, the real `openai` client, a fake server."""

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from agents import OpenAIResponsesModel

from chatkit_backend.app import create_app
from chatkit_backend.settings import Settings
from tests.support.fake_openai import FakeOpenAI, Reply, tokens

API_KEY = "sk-test-" + "k3y" * 8
MODEL = "fake-model-2025"
ANSWER = "The capital of France is Paris, of course."

Event = dict[str, Any]


@asynccontextmanager
async def chat_client(
    fake: FakeOpenAI, database_url: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the OpenAI provider pointed at `fake`, for a user of its own."""
    settings = Settings(
        _env_file=None,
        llm_provider="openai",
        openai_api_key=API_KEY,
        openai_base_url=fake.base_url,
        llm_model=MODEL,
        database_url=database_url,
        local_user_id=f"user-{secrets.token_hex(6)}",
        **{"titles": False, **overrides},  # a title is one more model request
    )
    app = create_app(settings)
    provider = app.state.services.turns.answerer.provider
    assert isinstance(provider.get_model(None), OpenAIResponsesModel)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c,
    ):
        yield c


def user_input(text: str) -> dict[str, Any]:
    return {"content": [{"type": "input_text", "text": text}], "attachments": []}


async def send(client: httpx.AsyncClient, text: str, thread_id: str | None = None) -> list[Event]:
    """Post a message (a new thread unless `thread_id`); the SSE events it streamed."""
    if thread_id is None:
        body = {"type": "threads.create", "params": {"input": user_input(text)}}
    else:
        params = {"thread_id": thread_id, "input": user_input(text)}
        body = {"type": "threads.add_user_message", "params": params}
    response = await client.post("/chatkit", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *frames, rest = response.text.split("\n\n")
    assert rest == "", "the stream must end on a complete frame"
    assert all(frame.startswith("data: ") for frame in frames)
    return [json.loads(frame.removeprefix("data: ")) for frame in frames]


async def items(client: httpx.AsyncClient, thread_id: str) -> list[Event]:
    params = {"thread_id": thread_id, "order": "asc"}
    response = await client.post("/chatkit", json={"type": "items.list", "params": params})
    assert response.status_code == 200
    data: list[Event] = response.json()["data"]
    return data


def thread_id_of(events: list[Event]) -> str:
    thread_id: str = events[0]["thread"]["id"]
    assert events[0]["type"] == "thread.created"
    return thread_id


def deltas(events: list[Event]) -> list[str]:
    return [
        event["update"]["delta"]
        for event in events
        if event["type"] == "thread.item.updated"
        and event["update"]["type"] == "assistant_message.content_part.text_delta"
    ]


def done_items(events: list[Event], kind: str) -> list[Event]:
    return [
        e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == kind
    ]


def text_of(item: Event) -> str:
    return "".join(part["text"] for part in item["content"])


def conversation(thread_items: list[Event]) -> list[tuple[str, str]]:
    roles = {"user_message": "user", "assistant_message": "assistant"}
    return [(roles[item["type"]], text_of(item)) for item in thread_items]


def the_error(events: list[Event]) -> Event:
    """The one `error` event, which must be the last thing in the stream."""
    errors = [event for event in events if event["type"] == "error"]
    assert len(errors) == 1, events
    assert events[-1] is errors[0], "the stream must end with the error"
    assert errors[0]["code"] == "custom"
    assert API_KEY not in json.dumps(events)
    return errors[0]


async def test_answers_token_by_token_and_keeps_history(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.once(Reply(text=ANSWER), Reply(text="Lyon is second."))
    async with chat_client(fake, sqlite_database_url) as client:
        first = await send(client, "What is the capital of France?")
        thread_id = thread_id_of(first)
        assert not [event for event in first if event["type"] == "error"]
        assert deltas(first) == tokens(ANSWER)
        [answer] = done_items(first, "assistant_message")
        assert text_of(answer) == ANSWER

        [request] = fake.requests
        assert request.path == "/v1/responses"
        assert request.body["model"] == MODEL
        assert request.body["stream"] is True
        assert request.authorization == f"Bearer {API_KEY}"
        assert request.messages()[-1] == ("user", "What is the capital of France?")

        second = await send(client, "And the second city?", thread_id)
        assert deltas(second) == tokens("Lyon is second.")
        [second_answer] = done_items(second, "assistant_message")
        assert second_answer["id"] != answer["id"]

        assert len(fake.requests) == 2
        assert fake.requests[1].messages() == [
            ("user", "What is the capital of France?"),
            ("assistant", ANSWER),
            ("user", "And the second city?"),
        ]
        assert conversation(await items(client, thread_id)) == [
            ("user", "What is the capital of France?"),
            ("assistant", ANSWER),
            ("user", "And the second city?"),
            ("assistant", "Lyon is second."),
        ]


async def test_refused_key_is_final_and_not_leaked(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.always(Reply(status=401))
    async with chat_client(fake, sqlite_database_url) as client:
        events = await send(client, "Hello?")
        error = the_error(events)
        assert error["allow_retry"] is False
        assert error["message"]
        assert len(fake.requests) == 1, "a refused key is not retried"
        assert conversation(await items(client, thread_id_of(events))) == [("user", "Hello?")]


@pytest.mark.parametrize("status", [429, 500])
async def test_provider_trouble_may_be_retried(
    fake: FakeOpenAI, sqlite_database_url: str, status: int
) -> None:
    fake.always(Reply(status=status))
    async with chat_client(fake, sqlite_database_url) as client:
        events = await send(client, "Hello?")
        error = the_error(events)
        assert error["allow_retry"] is True
        assert error["message"]
        assert len(fake.requests) == 2, "the client retries once (max_retries=1)"
        assert conversation(await items(client, thread_id_of(events))) == [("user", "Hello?")]


async def test_one_failed_attempt_is_retried_by_the_client(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.once(Reply(status=429), Reply(text=ANSWER))
    async with chat_client(fake, sqlite_database_url) as client:
        events = await send(client, "Hello?")
        assert not [event for event in events if event["type"] == "error"]
        assert deltas(events) == tokens(ANSWER)
        assert len(fake.requests) == 2


async def test_cut_stream_keeps_partial_answer(fake: FakeOpenAI, sqlite_database_url: str) -> None:
    # The pause between deltas matters: the Agents SDK drops stream events it has
    # received but not yet handed on when the model call fails (see RunResultStreaming).
    cut = Reply(text=ANSWER, cut_after=3, delta_delay=0.05)
    fake.once(cut, Reply(text="Sorry, as I was saying: Paris."))
    partial = "".join(tokens(ANSWER)[:3])
    async with chat_client(fake, sqlite_database_url) as client:
        events = await send(client, "Capital of France?")
        thread_id = thread_id_of(events)
        assert deltas(events) == tokens(ANSWER)[:3]
        assert the_error(events)["allow_retry"] is True
        assert conversation(await items(client, thread_id)) == [
            ("user", "Capital of France?"),
            ("assistant", partial),
        ]

        again = await send(client, "Go on.", thread_id)
        assert not [event for event in again if event["type"] == "error"]
        assert deltas(again) == tokens("Sorry, as I was saying: Paris.")
        assert fake.requests[-1].messages() == [
            ("user", "Capital of France?"),
            ("assistant", partial),
            ("user", "Go on."),
        ]
        assert conversation(await items(client, thread_id)) == [
            ("user", "Capital of France?"),
            ("assistant", partial),
            ("user", "Go on."),
            ("assistant", "Sorry, as I was saying: Paris."),
        ]


async def test_stalled_provider_times_out(fake: FakeOpenAI, sqlite_database_url: str) -> None:
    stall = 10.0
    fake.always(Reply(stall=stall))
    async with chat_client(fake, sqlite_database_url, llm_timeout_seconds=0.2) as client:
        started = time.monotonic()
        events = await send(client, "Anyone there?")
        assert time.monotonic() - started < stall / 2
        assert the_error(events)["allow_retry"] is True
        assert len(fake.requests) == 2, "the client retries once (max_retries=1)"

"""`POST /chatkit/api`: one message in, the answer out, as JSON or a stream of partials;
stored as a ChatKit thread. Over HTTP (ASGI) on SQLite and PostgreSQL, the stream also
through a real uvicorn process."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import ChatClient, assert_envelope, chat_client, local_app
from tests.support.fake_openai import FakeOpenAI, Reply, ToolCall
from tests.support.processes import run_cli, serving
from tests.support.sse import parse_events

PATH = "/chatkit/api"
SSE = {"accept": "text/event-stream"}


async def ask(http: httpx.AsyncClient, content: str, **more: Any) -> httpx.Response:
    return await http.post(PATH, json={"message": {"content": content}, **more})


async def ask_streaming(http: httpx.AsyncClient, content: str, **more: Any) -> httpx.Response:
    return await http.post(PATH, json={"message": {"content": content}, **more}, headers=SSE)


def frames(response: httpx.Response) -> list[dict[str, Any]]:
    """The stream's frames; it must be one, and end with its one `done` frame."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    decoded = parse_events(response.text)
    assert [frame.get("done") for frame in decoded] == [None] * (len(decoded) - 1) + [True]
    return decoded


def partials(decoded: list[dict[str, Any]]) -> str:
    assert all(set(frame) == {"partial"} for frame in decoded[:-1]), decoded
    return "".join(frame["partial"] for frame in decoded[:-1])


def conversation(thread: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (item["type"], "".join(part.get("text", "") for part in item.get("content", [])))
        for item in thread["items"]["data"]
    ]


async def test_a_message_is_answered_as_json_and_shows_in_chatkit(client: ChatClient) -> None:
    response = await ask(client.http, "hello plain")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {"type", "content", "done", "thread_id"}
    assert answer["type"] == "message" and answer["done"] is True
    assert '"hello plain"' in answer["content"]
    thread_id = answer["thread_id"]
    assert thread_id.startswith("thr_")

    thread = await client.call("threads.get_by_id", thread_id=thread_id)
    assert conversation(thread) == [
        ("user_message", "hello plain"),
        ("assistant_message", answer["content"]),
    ]
    assert thread["title"]
    listed = await client.call("threads.list")
    assert [t["id"] for t in listed["data"]] == [thread_id]

    again = await ask(client.http, "and more", thread_id=thread_id)
    assert again.status_code == 200, again.text
    assert again.json()["thread_id"] == thread_id and '"and more"' in again.json()["content"]
    assert len(await client.items(thread_id)) == 4


async def test_a_message_to_a_chatkit_thread_continues_it(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread("started in ChatKit")
    response = await ask(client.http, "continued plainly", thread_id=thread_id)
    assert response.status_code == 200, response.text
    assert [i["type"] for i in await client.items(thread_id)] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]


async def test_the_stream_sends_partials_then_the_final_answer(client: ChatClient) -> None:
    decoded = frames(await ask_streaming(client.http, "stream me"))
    last = decoded[-1]
    assert set(last) == {"final", "done", "thread_id"}
    assert '"stream me"' in last["final"]
    assert len(decoded) > 2  # the answer came in pieces
    assert partials(decoded) == last["final"]

    thread = await client.call("threads.get_by_id", thread_id=last["thread_id"])
    assert conversation(thread) == [
        ("user_message", "stream me"),
        ("assistant_message", last["final"]),
    ]
    continued = frames(await ask_streaming(client.http, "more", thread_id=last["thread_id"]))
    assert continued[-1]["thread_id"] == last["thread_id"]


INVALID = [
    pytest.param({"message": {"content": ""}}, "empty", id="empty"),
    pytest.param({"message": {"content": " \n\t"}}, "empty", id="blank"),
    pytest.param({}, "message: Field required", id="no-message"),
    pytest.param({"message": "hi"}, "message:", id="message-not-an-object"),
    pytest.param({"message": {"text": "hi"}}, "message.content: Field required", id="no-content"),
    pytest.param({"message": {"content": 5}}, "message.content:", id="content-not-text"),
    pytest.param({"message": {"content": "hi"}, "thread": "thr_x"}, "thread:", id="misspelt"),
    pytest.param({"message": {"content": "hi"}, "thread_id": "thr x\n"}, "thread_id:", id="bad-id"),
    pytest.param({"message": {"content": "hi \ud800"}}, "surrogate", id="lone-surrogate"),
]


@pytest.mark.parametrize(("body", "says"), INVALID)
async def test_bad_messages_are_400_and_store_nothing(
    client: ChatClient, body: dict[str, Any], says: str
) -> None:
    for headers in ({}, SSE):
        content = json.dumps(body).encode()
        response = await client.http.post(
            PATH, content=content, headers={"content-type": "application/json", **headers}
        )
        assert_envelope(response, 400, "invalid_request")
        assert says in response.json()["message"]
        assert "thr x" not in response.text
    assert (await client.call("threads.list"))["data"] == []


async def test_refusals_before_the_answer_are_the_json_envelope(
    sqlite_database_url: str,
) -> None:
    async with chat_client(sqlite_database_url, max_message_chars=50) as client:
        for headers in ({}, SSE):
            response = await client.http.post(
                PATH, content=b"message=hi", headers={"content-type": "text/plain", **headers}
            )
            assert_envelope(response, 415, "unsupported_media_type")
            assert "/chatkit/api" in response.json()["message"]
            assert_envelope(
                await client.http.post(
                    PATH, content=b"{nope", headers={"content-type": "application/json", **headers}
                ),
                400,
                "invalid_request",
            )
            too_long = await client.http.post(
                PATH, json={"message": {"content": "x" * 51}}, headers=headers
            )
            assert_envelope(too_long, 400, "invalid_request")
            missing = await client.http.post(
                PATH,
                json={"message": {"content": "hi"}, "thread_id": "thr_missing"},
                headers=headers,
            )
            assert_envelope(missing, 404, "not_found")
        assert (await client.call("threads.list"))["data"] == []


async def test_a_viewer_may_not_send_and_a_stranger_needs_a_token(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url) as app:
        stranger = await app.raw()
        assert_envelope(await ask(stranger, "hi"), 401, "unauthorized")
        viewer = await app.client(new_user(), role="viewer")
        assert_envelope(await ask(viewer.http, "hi"), 403, "forbidden")
        member = await app.client(new_user())
        answered = await ask(member.http, "hi")
        assert answered.status_code == 200, answered.text
        # Another user's thread is not found, however the id was learnt.
        other = await app.client(new_user())
        response = await ask(other.http, "mine now", thread_id=answered.json()["thread_id"])
        assert_envelope(response, 404, "not_found")


async def test_the_request_rate_limit_covers_it(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, rate_limit_per_minute=2) as client:
        assert (await ask(client.http, "one")).status_code == 200
        assert (await ask(client.http, "two")).status_code == 200
        refused = await ask(client.http, "three")
        assert_envelope(refused, 429, "rate_limited")
        assert refused.headers["retry-after"]


async def test_a_busy_thread_is_409(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, offline_token_delay_ms=50) as client:
        thread_id, _ = await client.new_thread("first")
        slow = asyncio.create_task(ask(client.http, "a long answer", thread_id=thread_id))
        await asyncio.sleep(0.3)
        busy = await ask(client.http, "meanwhile", thread_id=thread_id)
        assert_envelope(busy, 409, "thread_busy")
        assert (await slow).status_code == 200


# ---- failures after the answer started ----


def provider(fake: FakeOpenAI) -> dict[str, Any]:
    return {"llm_provider": "openai-compatible", "llm_base_url": fake.base_url, "titles": False}


async def test_a_model_failure_mid_answer_ends_with_an_error_frame(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    text = "Paris is the capital and largest city of France."
    async with chat_client(sqlite_database_url, **provider(fake)) as client:
        fake.once(Reply(text=text, cut_after=3, delta_delay=0.05))
        decoded = frames(await ask_streaming(client.http, "Capital of France?"))
        last = decoded[-1]
        assert set(last) == {"error", "done", "thread_id"}
        assert last["error"]["code"] == "answer_failed"
        assert last["error"]["message"] and last["error"]["allow_retry"] is True
        streamed = partials(decoded)
        assert streamed and text.startswith(streamed)
        # As on /chatkit: the message and the answer so far stay in the thread.
        thread = await client.call("threads.get_by_id", thread_id=last["thread_id"])
        assert conversation(thread) == [
            ("user_message", "Capital of France?"),
            ("assistant_message", streamed),
        ]

        fake.once(Reply(text=text, cut_after=3, delta_delay=0.05))
        response = await ask(client.http, "Again?", thread_id=last["thread_id"])
        assert_envelope(response, 502, "answer_failed")
        body = response.json()
        assert body["done"] is True and body["thread_id"] == last["thread_id"]
        assert body["error"]["allow_retry"] is True
        assert len(await client.items(last["thread_id"])) == 4

        fake.always(Reply(text="Fine now."))
        retried = await ask(client.http, "Third time?", thread_id=last["thread_id"])
        assert retried.json()["content"] == "Fine now."


async def test_an_answer_in_several_messages_is_one_answer(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    # A tool call between two messages: the answer is both, and so are the partials.
    fake.once(
        Reply(
            text="Let me look that up.", tool_calls=[ToolCall("get_employee", {"employee_id": 7})]
        )
    )
    fake.once(Reply(text="Employee 7 is not in the directory."))
    settings = {**provider(fake), "agent": "erp-support"}
    async with chat_client(sqlite_database_url, **settings) as client:
        decoded = frames(await ask_streaming(client.http, "Who is employee 7?"))
        final = decoded[-1]["final"]
        assert final == "Let me look that up.\n\nEmployee 7 is not in the directory."
        assert partials(decoded) == final

        fake.once(Reply(text="Looking.", tool_calls=[ToolCall("get_employee", {"employee_id": 8})]))
        fake.once(Reply(text="Not there either."))
        response = await ask(client.http, "And 8?", thread_id=decoded[-1]["thread_id"])
        assert response.json()["content"] == "Looking.\n\nNot there either."


async def test_shutting_down_ends_an_open_answer_and_keeps_it(sqlite_database_url: str) -> None:
    settings = {"offline_token_delay_ms": 100, "shutdown_grace_seconds": 0.3}
    async with local_app(sqlite_database_url, **settings) as (app, http):
        asked = asyncio.create_task(ask(http, "a long story please"))
        streamed = asyncio.create_task(ask_streaming(http, "another long story"))
        await asyncio.sleep(0.5)
        began = time.monotonic()
        app.state.services.drain.begin()
        response = await asyncio.wait_for(asked, timeout=10)
        stream = await asyncio.wait_for(streamed, timeout=10)
        assert time.monotonic() - began < 5

        assert_envelope(response, 503, "shutting_down")
        assert response.headers["retry-after"]
        body = response.json()
        assert body["done"] is True and body["error"]["allow_retry"] is True
        decoded = frames(stream)
        assert decoded[-1]["error"]["code"] == "shutting_down"

        # As a stopped answer: the message and the answer so far are kept.
        client = ChatClient(http)
        kept = await client.items(body["thread_id"])
        assert [i["type"] for i in kept] == ["user_message", "assistant_message"]
        kept = await client.items(decoded[-1]["thread_id"])
        assert [i["type"] for i in kept] == ["user_message", "assistant_message"]
        assert kept[1]["content"][0]["text"] == partials(decoded)


# ---- a real server ----


@pytest.mark.slow
def test_the_stream_arrives_in_pieces_over_a_socket(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}",
        "OFFLINE_TOKEN_DELAY_MS": "30",
        "LLM_PROVIDER": "offline",
    }
    assert run_cli("migrate", env=env).returncode == 0
    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        body = {"message": {"content": "over the wire"}}
        arrivals: list[tuple[float, dict[str, Any]]] = []
        with http.stream("POST", PATH, json=body, headers=SSE) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.extend((time.monotonic(), f) for f in parse_events(line + "\n\n"))
        decoded = [frame for _, frame in arrivals]
        assert decoded[-1]["done"] is True
        assert partials(decoded) == decoded[-1]["final"]
        # Streamed, not buffered: the first partial came well before the end.
        assert arrivals[-1][0] - arrivals[0][0] > 0.2

        thread_id = decoded[-1]["thread_id"]
        thread = http.post(
            "/chatkit", json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
        ).json()
        assert conversation(thread)[1] == ("assistant_message", decoded[-1]["final"])
        answered = http.post(
            PATH, json={"message": {"content": "json too"}, "thread_id": thread_id}
        )
        assert answered.json()["thread_id"] == thread_id

"""Edges of the protocol on the wire: the last page's cursor, empty messages, a body
without `type`, and `threads.create` without a message. Over HTTP (ASGI), on SQLite and
PostgreSQL."""

from pathlib import Path
from typing import Any

import pytest

from tests.support.attachments import message, uploaded
from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import ChatClient, assert_envelope, chat_client
from tests.support.sse import user_input


async def test_only_a_page_with_more_after_it_carries_a_cursor(client: ChatClient) -> None:
    first, _ = await client.new_thread("first")
    second, _ = await client.new_thread("second")

    # The SDK serialises no nulls: a last page's `after` is left out.
    page = await client.call("threads.list", limit=1, order="desc")
    assert (page["has_more"], page["after"]) == (True, second)
    last = await client.call("threads.list", limit=1, order="desc", after=page["after"])
    assert [t["id"] for t in last["data"]] == [first]
    assert last["has_more"] is False and "after" not in last
    whole = await client.call("threads.list", limit=10)
    assert whole["has_more"] is False and "after" not in whole

    ids = [item["id"] for item in await client.items(first)]
    assert len(ids) == 2
    items = await client.call("items.list", thread_id=first, limit=1, order="asc")
    assert (items["has_more"], items["after"]) == (True, ids[0])
    rest = await client.call(
        "items.list", thread_id=first, limit=1, order="asc", after=items["after"]
    )
    assert [i["id"] for i in rest["data"]] == [ids[1]]
    assert rest["has_more"] is False and "after" not in rest
    thread = await client.call("threads.get_by_id", thread_id=first)
    assert thread["items"]["has_more"] is False and "after" not in thread["items"]


BLANK_MESSAGES = [
    pytest.param({"type": "threads.create", "params": {"input": user_input("")}}, id="empty"),
    pytest.param({"type": "threads.create", "params": {"input": user_input("   ")}}, id="spaces"),
    pytest.param(
        {"type": "threads.create", "params": {"input": user_input("\n\t \u3000")}}, id="whitespace"
    ),
    pytest.param({"type": "messages.send", "params": {"input": ""}}, id="messages.send"),
    pytest.param(
        {
            "type": "threads.create",
            "params": {"input": {"content": [{"type": "text", "text": ""}]}},
        },
        id="seed-shape-part",
    ),
]


@pytest.mark.parametrize("body", BLANK_MESSAGES)
async def test_a_blank_message_is_400_before_any_stream_and_stores_nothing(
    client: ChatClient, body: dict[str, Any]
) -> None:
    response = await client.post(body)
    assert_envelope(response, 400, "invalid_request")
    assert "empty" in response.json()["message"]
    assert (await client.call("threads.list"))["data"] == []


async def test_a_blank_message_to_a_thread_leaves_it_as_it_was(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread("hello")
    before = await client.call("threads.get_by_id", thread_id=thread_id)

    for text in ("", "  \n "):
        response = await client.post(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input(text)},
            }
        )
        assert_envelope(response, 400, "invalid_request")

    assert await client.call("threads.get_by_id", thread_id=thread_id) == before
    # Not left busy either: the next real message is answered.
    await client.stream("threads.add_user_message", thread_id=thread_id, input=user_input("more"))
    assert len(await client.items(thread_id)) == 4


async def test_a_file_with_blank_text_is_a_message(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    async with chat_client(sqlite_database_url, attachments_dir=str(tmp_path)) as chat:
        file = await uploaded(chat, "notes.txt", b"some notes", "text/plain")
        events = await chat.stream("threads.create", input=message("", file["id"]))
        assert events[0]["type"] == "thread.created"
        stored = (await chat.items(events[0]["thread"]["id"]))[0]
        assert [a["id"] for a in stored["attachments"]] == [file["id"]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"params": {}}, "has no type"),
        ({"type": None, "params": {}}, "has no type"),
        ({"type": 7, "params": {}}, "must be a string"),
        ({"type": "threads.explode", "params": {}}, "'threads.explode'"),
    ],
)
async def test_a_missing_or_unknown_type_is_named_as_such(
    sqlite_client: ChatClient, body: dict[str, Any], says: str
) -> None:
    response = await sqlite_client.post(body)
    assert_envelope(response, 400, "unknown_type")
    message = response.json()["message"]
    assert says in message and "'None'" not in message
    assert "threads.list" in message  # the types it could have been


@pytest.mark.parametrize("params", [{}, None], ids=["empty-params", "no-params"])
async def test_threads_create_without_input_answers_a_new_empty_thread(
    client: ChatClient, params: dict[str, Any] | None
) -> None:
    body: dict[str, Any] = {"type": "threads.create"}
    if params is not None:
        body["params"] = params
    response = await client.post(body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    created = response.json()
    assert created["id"].startswith("thr_")
    assert created["items"] == {"data": [], "has_more": False}
    # The SDK's Thread, exactly as threads.get_by_id answers it.
    assert await client.call("threads.get_by_id", thread_id=created["id"]) == created
    listed = await client.call("threads.list", order="desc")
    assert [t["id"] for t in listed["data"]] == [created["id"]]

    # A message to it is answered as in any thread, and gives it a title.
    events = await client.stream(
        "threads.add_user_message", thread_id=created["id"], input=user_input("hello there")
    )
    assert any(e["type"] == "thread.updated" for e in events)
    thread = await client.call("threads.get_by_id", thread_id=created["id"])
    assert [i["type"] for i in thread["items"]["data"]] == ["user_message", "assistant_message"]
    assert thread["title"]


async def test_threads_create_with_a_misspelt_input_is_400_not_an_empty_thread(
    client: ChatClient,
) -> None:
    response = await client.post({"type": "threads.create", "params": {"inptu": "hi"}})
    assert_envelope(response, 400, "invalid_request")
    assert "params.inptu" in response.json()["message"]
    # A message-sending shape without its message is no request for an empty thread.
    response = await client.post({"type": "messages.send", "params": {}})
    assert_envelope(response, 400, "invalid_request")
    assert "input" in response.json()["message"]
    assert (await client.call("threads.list"))["data"] == []


async def test_a_viewer_may_not_create_an_empty_thread(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url) as app:
        viewer = await app.client(new_user(), role="viewer")
        response = await viewer.post({"type": "threads.create", "params": {}})
        assert_envelope(response, 403, "forbidden")
        assert (await viewer.call("threads.list"))["data"] == []

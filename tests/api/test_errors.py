"""Client mistakes get a 4xx JSON envelope, decided before any stream starts."""

import json
from typing import Any

import pytest

from chatkit_backend.api.errors import MAX_MESSAGE_CHARS, error_response
from tests.support.chat_client import ChatClient, assert_envelope, chat_client
from tests.support.sse import user_input

STREAMING_WITH_THREAD: list[tuple[str, dict[str, Any]]] = [
    ("threads.add_user_message", {"input": user_input("hi")}),
    ("threads.add_client_tool_output", {"result": {}}),
    ("threads.add_structured_input", {"item_id": "msg_x", "input": {}}),
    ("threads.retry_after_item", {"item_id": "msg_x"}),
    ("threads.custom_action", {"action": {"type": "a", "payload": {}}}),
]
JSON_WITH_THREAD: list[tuple[str, dict[str, Any]]] = [
    ("threads.get_by_id", {}),
    ("threads.update", {"title": "t"}),
    ("threads.delete", {}),
    ("items.list", {}),
    ("items.feedback", {"item_ids": ["msg_x"], "kind": "positive"}),
    ("threads.sync_custom_action", {"action": {"type": "a", "payload": {}}}),
]


@pytest.mark.parametrize(("type", "params"), STREAMING_WITH_THREAD + JSON_WITH_THREAD)
async def test_unknown_thread_is_404_for_every_type(
    client: ChatClient, type: str, params: dict[str, Any]
) -> None:
    response = await client.post({"type": type, "params": {"thread_id": "thr_nope", **params}})
    assert_envelope(response, 404, "not_found")


async def test_another_users_thread_is_not_found(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url) as alice, chat_client(sqlite_database_url) as bob:
        thread_id, _ = await alice.new_thread("private")
        for type, params in STREAMING_WITH_THREAD + JSON_WITH_THREAD:
            response = await bob.post({"type": type, "params": {"thread_id": thread_id, **params}})
            assert_envelope(response, 404, "not_found")
        assert (await bob.call("threads.list"))["data"] == []
        assert len(await alice.items(thread_id)) == 2


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
        (b"[1, 2]", "invalid_request"),
        (b'"text"', "invalid_request"),
        (b"", "invalid_request"),
        (b'{"type": "threads.explode", "params": {}}', "unknown_type"),
        (b'{"params": {}}', "unknown_type"),
        (b'{"type": 7}', "unknown_type"),
        (b'{"type": "threads.get_by_id", "params": {}}', "invalid_request"),
        (b'{"type": "threads.get_by_id"}', "invalid_request"),
        (b'{"type": "threads.list", "params": {"limit": "many"}}', "invalid_request"),
        (b'{"type": "threads.list", "params": {"limit": -1}}', "invalid_request"),
        (b'{"type": "threads.list", "params": {"order": "sideways"}}', "invalid_request"),
        (b'{"type": "threads.create", "params": {"input": {"content": 5}}}', "invalid_request"),
        (
            b'{"type": "items.feedback", "params": '
            b'{"thread_id": "t", "item_ids": [], "kind": "meh"}}',
            "invalid_request",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_request"),
        # Valid JSON, but past Python's 4,300-digit limit for integers (was a 500).
        (b'{"type": "threads.list", "params": {"limit": ' + b"1" * 5000 + b"}}", "invalid_request"),
        (b'{"type": ' + b"9" * 4301 + b"}", "invalid_request"),
        # NUL and lone surrogates: valid JSON, but PostgreSQL and UTF-8 refuse them.
        (
            b'{"type": "threads.get_by_id", "params": {"thread_id": "thr_\\u0000"}}',
            "invalid_request",
        ),
        (b'{"type": "threads.list", "params": {"after": "\\ud800"}}', "invalid_request"),
        (
            b'{"type": "threads.create", "params": {"input": '
            b'{"content": [{"type": "input_text", "text": "hi \\udc00"}]}}}',
            "invalid_request",
        ),
    ],
)
async def test_malformed_requests_are_400(client: ChatClient, content: bytes, code: str) -> None:
    response = await client.http.post(
        "/chatkit", content=content, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, code)


async def test_feedback_on_too_many_items_is_400(client: ChatClient) -> None:
    # Each id is a bound parameter; 40,000 were once a database error (a 5xx).
    thread_id, _ = await client.new_thread()
    ids = [f"msg_{n}" for n in range(40_000)]
    body = {"thread_id": thread_id, "item_ids": ids, "kind": "positive"}
    assert_envelope(
        await client.post({"type": "items.feedback", "params": body}), 400, "invalid_request"
    )


async def test_empty_message_is_400_and_creates_no_thread(client: ChatClient) -> None:
    response = await client.post(
        {"type": "threads.create", "params": {"input": {**user_input(""), "content": []}}}
    )
    assert_envelope(response, 400, "invalid_request")
    assert (await client.call("threads.list"))["data"] == []


async def test_validation_message_names_the_field_not_the_value(client: ChatClient) -> None:
    secret = "s3cr3t-" * 10
    response = await client.post({"type": "threads.update", "params": {"thread_id": secret}})
    assert_envelope(response, 400, "invalid_request")
    assert "title" in response.json()["error"]["message"]
    assert secret not in response.text


async def test_oversized_body_is_413(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, max_body_bytes=2048) as client:
        big = {"type": "threads.create", "params": {"input": user_input("x" * 5000)}}
        assert_envelope(await client.post(big), 413, "payload_too_large")

        async def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b"x" * 1000

        response = await client.http.post(
            "/chatkit", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_envelope(response, 413, "payload_too_large")
        assert (await client.call("threads.list"))["data"] == []


async def test_page_size_is_capped(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, max_page_size=2) as client:
        for _ in range(3):
            await client.new_thread()
        page = await client.call("threads.list", limit=50)
        assert len(page["data"]) == 2 and page["has_more"] is True


async def test_other_routes_use_the_envelope(client: ChatClient) -> None:
    assert_envelope(await client.http.get("/nowhere"), 404, "not_found")
    assert_envelope(await client.http.get("/chatkit"), 405, "http_error")


def test_error_messages_are_bounded() -> None:
    # Sent twice (`error.message` and `message`): a message quoting a client's input
    # must not grow with it.
    body = error_response(400, "invalid_request", "Model " + "x" * 100_000).body
    assert len(body) < 2 * MAX_MESSAGE_CHARS + 200
    assert json.loads(body)["message"].endswith("…")

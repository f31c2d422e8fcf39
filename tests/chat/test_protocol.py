"""Every ChatKit request type over HTTP, on SQLite and PostgreSQL."""

from datetime import datetime

import pytest
from chatkit.types import (
    ClientToolCallItem,
    InferenceOptions,
    StructuredInputFreeform,
    StructuredInputItem,
    UserMessageItem,
    UserMessageTextContent,
)

from chatkit_backend.chat.leases import new_lease
from chatkit_backend.context import Owner, RequestContext
from tests.support.chat_client import ChatClient
from tests.support.sse import answer_item, answer_text, deltas, user_input


def _context(client: ChatClient) -> RequestContext:
    settings = client.http._transport.app.state.services.settings  # type: ignore[attr-defined]
    return RequestContext(Owner(tenant_id=settings.local_tenant_id, user_id=settings.local_user_id))


def _store(client: ChatClient):  # type: ignore[no-untyped-def]
    return client.http._transport.app.state.services.store  # type: ignore[attr-defined]


async def test_create_streams_an_offline_answer_token_by_token(client: ChatClient) -> None:
    thread_id, events = await client.new_thread("What is ChatKit?")
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["thread.created", "thread.item.done", "stream_options"]
    assert events[1]["item"]["type"] == "user_message"
    assert kinds.count("thread.item.updated") > 10
    assert kinds[-2:] == ["thread.item.done", "thread.updated"]
    assert events[-1]["thread"]["title"] == "What is ChatKit?"  # offline: the first words
    text = answer_text(events)
    assert "offline model" in text
    assert '"What is ChatKit?"' in text
    assert deltas(events) == text
    assert thread_id.startswith("thr_") and len(thread_id) >= 4 + 24


async def test_add_user_message_keeps_both_answers_in_order(client: ChatClient) -> None:
    thread_id, first = await client.new_thread("one")
    second = await client.stream(
        "threads.add_user_message", thread_id=thread_id, input=user_input("two")
    )
    assert "thread.created" not in [e["type"] for e in second]
    assert "thread.updated" not in [e["type"] for e in second]  # titled once, at first
    items = await client.items(thread_id)
    assert [i["type"] for i in items] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    assert len({i["id"] for i in items}) == 4
    assert items[1]["content"][0]["text"] == answer_text(first)
    assert items[3]["content"][0]["text"] == answer_text(second)
    assert '"two"' in items[3]["content"][0]["text"]


async def test_get_list_update_delete(client: ChatClient) -> None:
    first, _ = await client.new_thread("first")
    second, _ = await client.new_thread("second")

    thread = await client.call("threads.get_by_id", thread_id=first)
    assert thread["id"] == first
    assert [i["type"] for i in thread["items"]["data"]] == ["user_message", "assistant_message"]

    page = await client.call("threads.list", limit=1, order="desc")
    assert [t["id"] for t in page["data"]] == [second]
    assert page["has_more"] is True and page["after"] == second
    rest = await client.call("threads.list", limit=1, order="desc", after=page["after"])
    assert [t["id"] for t in rest["data"]] == [first]
    assert rest["has_more"] is False

    renamed = await client.call("threads.update", thread_id=first, title="Renamed")
    assert renamed["title"] == "Renamed"
    assert (await client.call("threads.get_by_id", thread_id=first))["title"] == "Renamed"

    assert await client.call("threads.delete", thread_id=first) == {}
    response = await client.post({"type": "threads.get_by_id", "params": {"thread_id": first}})
    assert response.status_code == 404
    listed = await client.call("threads.list")
    assert [t["id"] for t in listed["data"]] == [second]


async def test_items_list_pages_both_ways(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread("a")
    await client.stream("threads.add_user_message", thread_id=thread_id, input=user_input("b"))
    everything = [i["id"] for i in await client.items(thread_id)]
    page = await client.call("items.list", thread_id=thread_id, limit=3, order="asc")
    assert [i["id"] for i in page["data"]] == everything[:3] and page["has_more"] is True
    page = await client.call(
        "items.list", thread_id=thread_id, limit=3, order="asc", after=page["after"]
    )
    assert [i["id"] for i in page["data"]] == everything[3:] and page["has_more"] is False
    newest = await client.call("items.list", thread_id=thread_id, limit=2, order="desc")
    assert [i["id"] for i in newest["data"]] == everything[::-1][:2]


async def test_feedback_is_stored(client: ChatClient) -> None:
    thread_id, events = await client.new_thread()
    answer_id = answer_item(events)["id"]
    result = await client.call(
        "items.feedback", thread_id=thread_id, item_ids=[answer_id], kind="positive"
    )
    assert result == {}
    await client.call("items.feedback", thread_id=thread_id, item_ids=[answer_id], kind="negative")
    feedback = await _store(client).load_feedback(thread_id, _context(client))
    assert feedback == {answer_id: "negative"}
    response = await client.post(
        {
            "type": "items.feedback",
            "params": {"thread_id": thread_id, "item_ids": ["msg_missing"], "kind": "positive"},
        }
    )
    assert response.status_code == 404


async def test_retry_after_item_replaces_the_answer(client: ChatClient) -> None:
    thread_id, events = await client.new_thread("retry me")
    user_id, old_answer = events[1]["item"]["id"], answer_item(events)["id"]
    retried = await client.stream("threads.retry_after_item", thread_id=thread_id, item_id=user_id)
    assert "retry me" in answer_text(retried)
    items = await client.items(thread_id)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[0]["id"] == user_id and items[1]["id"] != old_answer

    for item_id, status in [("msg_missing", 404), (items[1]["id"], 400)]:
        response = await client.post(
            {
                "type": "threads.retry_after_item",
                "params": {"thread_id": thread_id, "item_id": item_id},
            }
        )
        assert response.status_code == status


async def test_client_tool_output_completes_the_pending_call(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread()
    request = {
        "type": "threads.add_client_tool_output",
        "params": {"thread_id": thread_id, "result": {"ok": True}},
    }
    assert (await client.post(request)).status_code == 400

    call = ClientToolCallItem(
        id="tc_" + "a" * 32,
        thread_id=thread_id,
        created_at=datetime.now(),
        call_id="call_1",
        name="get_location",
        arguments={},
    )
    await _store(client).add_thread_item(thread_id, call, _context(client))
    events = await client.stream(
        "threads.add_client_tool_output", thread_id=thread_id, result={"ok": True}
    )
    assert events[-1]["type"] == "thread.item.done"
    stored = next(i for i in await client.items(thread_id) if i["id"] == call.id)
    assert stored["status"] == "completed" and stored["output"] == {"ok": True}


async def test_structured_input_is_answered(client: ChatClient) -> None:
    thread_id, _ = await client.new_thread()
    question = StructuredInputItem(
        id="msg_" + "b" * 32,
        thread_id=thread_id,
        created_at=datetime.now(),
        inputs=[StructuredInputFreeform(id="q1", question="Your name?")],
    )
    await _store(client).add_thread_item(thread_id, question, _context(client))
    events = await client.stream(
        "threads.add_structured_input",
        thread_id=thread_id,
        item_id=question.id,
        input={"answers": {"q1": {"values": ["Ada"]}}},
    )
    assert events[1]["type"] == "thread.item.replaced"
    stored = next(i for i in await client.items(thread_id) if i["id"] == question.id)
    assert stored["status"] == "answered"
    assert stored["inputs"][0]["answer"]["values"] == ["Ada"]

    again = await client.post(
        {
            "type": "threads.add_structured_input",
            "params": {"thread_id": thread_id, "item_id": question.id, "input": {}},
        }
    )
    assert again.status_code == 400


# Attachments are offered now: tests/test_attachments*.py.
@pytest.mark.parametrize(
    ("type", "params", "status", "code"),
    [
        ("input.transcribe", {"audio_base64": "AAAA", "mime_type": "audio/webm"}, 501, None),
    ],
)
async def test_features_not_offered_yet_say_so(
    client: ChatClient, type: str, params: dict[str, object], status: int, code: str | None
) -> None:
    response = await client.post({"type": type, "params": params})
    assert response.status_code == status
    assert response.json()["error"]["code"] in ("not_enabled", "not_implemented")


@pytest.mark.parametrize("type", ["threads.custom_action", "threads.sync_custom_action"])
async def test_actions_are_refused_before_any_stream(client: ChatClient, type: str) -> None:
    action = {"type": "noop", "payload": {}}
    missing = await client.post(
        {"type": type, "params": {"thread_id": "thr_missing", "action": action}}
    )
    assert missing.status_code == 404
    thread_id, _ = await client.new_thread()
    refused = await client.post(
        {"type": type, "params": {"thread_id": thread_id, "action": action}}
    )
    assert refused.status_code == 501
    assert refused.headers["content-type"].startswith("application/json")


async def test_history_is_the_newest_items_oldest_first(sqlite_database_url: str) -> None:
    from tests.support.chat_client import chat_client

    async with chat_client(sqlite_database_url, history_items=3) as client:
        thread_id, _ = await client.new_thread("m1")
        for text in ("m2", "m3"):
            await client.stream(
                "threads.add_user_message", thread_id=thread_id, input=user_input(text)
            )
        services = client.http._transport.app.state.services  # type: ignore[attr-defined]
        lease = new_lease()
        opened = await services.turns.turns.open(thread_id, _context(client), lease, 3)
        await services.turns.turns.release(thread_id, lease)
        recent = opened.history
        every = await client.items(thread_id)
        assert [i.id for i in recent] == [i["id"] for i in every[-3:]]


def test_user_message_item_round_trips_through_the_sdk_types() -> None:
    # Guards the assumption the checks rely on: the SDK's request types stay as pinned.
    item = UserMessageItem(
        id="msg_1",
        thread_id="thr_1",
        created_at=datetime.now(),
        content=[UserMessageTextContent(text="hi")],
        inference_options=InferenceOptions(),
    )
    assert UserMessageItem.model_validate_json(item.model_dump_json()) == item

"""Every frame our own turn loop writes is a valid `ThreadStreamEvent` of the SDK, for
every kind of turn: text, a tool call with its workflow, a handoff, a title, a
guardrail's error, a retry, a cancel; and a text delta written from its template is
byte for byte what the SDK's serialisation writes."""

import asyncio
import json
from typing import Any

import pytest
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
)
from pydantic import TypeAdapter
from starlette.types import Message

from chatkit_backend.chat.stream import encode
from tests.support.asgi import chatkit_post_scope
from tests.support.chat_client import ChatClient, local_app
from tests.support.sse import user_input

EVENT: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


def frames_of(body: str) -> list[str]:
    frames = [frame for frame in body.split("\n\n") if frame.startswith("data: ")]
    assert frames, body
    return [frame.removeprefix("data: ") for frame in frames]


def validated(body: str) -> list[Any]:
    """Each frame parsed by the SDK's own adapter; any invalid one fails the test."""
    return [EVENT.validate_json(frame) for frame in frames_of(body)]


async def streamed(client: ChatClient, type: str, **params: Any) -> list[Any]:
    response = await client.post({"type": type, "params": params})
    assert response.status_code == 200, response.text
    return validated(response.text)


def kinds(events: list[Any]) -> list[str]:
    return [event.type for event in events]


@pytest.mark.parametrize(
    ("agent", "text", "shows"),
    [
        ("assistant", "Hello there", "assistant_message"),
        ("erp-support", "Who is employee 7?", "workflow"),
        ("router", "I need a refund for my invoice", "workflow"),
    ],
)
async def test_every_frame_of_a_turn_is_an_sdk_event(
    database_url: str, agent: str, text: str, shows: str
) -> None:
    async with local_app(database_url, agent=agent) as (_, http):
        client = ChatClient(http)
        first = await streamed(client, "threads.create", input=user_input(text))
        thread_id = first[0].thread.id
        assert kinds(first)[:3] == ["thread.created", "thread.item.done", "stream_options"]
        done = [e.item.type for e in first if e.type == "thread.item.done"]
        assert shows in done and "assistant_message" in done
        # The title comes last, after the answer is stored.
        assert kinds(first)[-1] == "thread.updated" and first[-1].thread.title
        again = await streamed(
            client, "threads.add_user_message", thread_id=thread_id, input=user_input(text)
        )
        assert "thread.updated" not in kinds(again)  # titled once
        user = next(e.item for e in again if e.type == "thread.item.done")
        retried = await streamed(
            client, "threads.retry_after_item", thread_id=thread_id, item_id=user.id
        )
        assert "assistant_message" in [e.item.type for e in retried if e.type == "thread.item.done"]


async def test_a_guardrail_ends_the_turn_with_a_valid_error(sqlite_database_url: str) -> None:
    async with local_app(sqlite_database_url, input_guardrail_max_chars=10) as (_, http):
        events = await streamed(
            ChatClient(http), "threads.create", input=user_input("far longer than ten")
        )
    errors = [event for event in events if event.type == "error"]
    assert len(errors) == 1 and errors[0].code == "custom" and not errors[0].allow_retry


async def test_the_frames_before_a_cancel_are_valid_and_the_partial_answer_stays(
    sqlite_database_url: str,
) -> None:
    async with local_app(sqlite_database_url, offline_token_delay_ms=30) as (app, http):
        client = ChatClient(http)
        thread_id, _ = await client.new_thread()
        body = json.dumps(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input("tell me more")},
            }
        ).encode()
        chunks: list[bytes] = []
        gone = asyncio.Event()
        asked = False

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                chunks.append(message["body"])
                if b"text_delta" in b"".join(chunks) and b"".join(chunks).count(b"delta") >= 3:
                    gone.set()  # the user stops the answer after a few words

        await app(chatkit_post_scope(), receive, send)
        events = validated(b"".join(chunks).decode())
        # Stopped mid-answer: the answer never showed as done.
        done = [e.item.type for e in events if e.type == "thread.item.done"]
        assert done == ["user_message"]
        shown = "".join(
            e.update.delta
            for e in events
            if e.type == "thread.item.updated" and e.update.type.endswith("text_delta")
        )
        assert shown
        # The cancelled answer was kept as far as it got, in the thread.
        await asyncio.sleep(0.2)
        items = await client.items(thread_id)
    answers = [item for item in items if item["type"] == "assistant_message"]
    assert len(answers) == 2
    kept = "".join(part["text"] for part in answers[-1]["content"])
    assert kept.startswith(shown.strip()[:10])


@pytest.mark.parametrize(
    "delta",
    ["plain", ' "quoted" ', "back\\slash", "new\nline\ttab", "ünïcødé ✓ 😀", "\x00\x1f\x7f", ""],
)
@pytest.mark.parametrize("index", [0, 3])
def test_a_delta_from_its_template_is_what_the_sdk_writes(delta: str, index: int) -> None:
    event = ThreadItemUpdatedEvent(
        item_id="msg_1",
        update=AssistantMessageContentPartTextDelta(content_index=index, delta=delta),
    )
    sdk = event.model_dump_json(
        by_alias=True, exclude_none=True, context={"exclude_metadata": True}
    )
    ours = encode(event)
    assert ours.startswith(b"data: ") and ours.endswith(b"\n\n")
    assert json.loads(ours[len(b"data: ") : -2]) == json.loads(sdk)
    assert EVENT.validate_json(ours[len(b"data: ") : -2]) == event

"""No caller reaches another user's or another tenant's data, and cannot tell it exists.

Every request type is sent with the owner's real ids by two intruders: another user of
the same tenant, and the same user id in another tenant. Each answer must equal the
answer for ids that exist nowhere (same status, same body apart from the id), and the
owner's threads, items and feedback must be unchanged afterwards. On SQLite and
PostgreSQL (the `database_url` fixture).
"""

import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chatkit.types import StructuredInputFreeform, StructuredInputItem

from chatkit_backend.api.requests import REQUEST_TYPES
from chatkit_backend.context import Owner, RequestContext
from tests.support.attachments import PNG, message, stored_files, uploaded
from tests.support.auth import JwtApp, jwt_app, new_user
from tests.support.chat_client import ChatClient
from tests.support.sse import user_input

TENANT = "acme"


@dataclass
class Ids:
    thread: str  # the owner's thread ...
    user_message: str  # ... its first user message,
    answer: str  # the answer to it (rated by the owner),
    question: str  # and a pending structured-input item.
    attachment: str  # the owner's uploaded (not yet sent) attachment
    own_thread: str  # the intruder's own thread, to smuggle foreign item ids into


Body = Callable[[Ids], dict[str, Any]]

# (type, expected status, request). The request names the owner's ids through `Ids`; the same
# request with never-used ids is the reference answer.
CASES: list[tuple[str, int, Body]] = [
    ("threads.get_by_id", 404, lambda i: {"thread_id": i.thread}),
    ("threads.list", 200, lambda i: {"after": i.thread, "limit": 5}),
    ("items.list", 404, lambda i: {"thread_id": i.thread}),
    ("items.list", 200, lambda i: {"thread_id": i.own_thread, "after": i.user_message}),
    ("threads.update", 404, lambda i: {"thread_id": i.thread, "title": "pwned"}),
    ("threads.delete", 404, lambda i: {"thread_id": i.thread}),
    (
        "items.feedback",
        404,
        lambda i: {"thread_id": i.thread, "item_ids": [i.answer], "kind": "negative"},
    ),
    (
        "items.feedback",
        404,
        lambda i: {"thread_id": i.own_thread, "item_ids": [i.answer], "kind": "negative"},
    ),
    ("threads.add_user_message", 404, lambda i: {"thread_id": i.thread, "input": user_input("hi")}),
    ("threads.retry_after_item", 404, lambda i: {"thread_id": i.thread, "item_id": i.user_message}),
    (
        "threads.retry_after_item",
        404,
        lambda i: {"thread_id": i.own_thread, "item_id": i.user_message},
    ),
    (
        "threads.add_structured_input",
        404,
        lambda i: {"thread_id": i.thread, "item_id": i.question, "input": {"answers": {}}},
    ),
    (
        "threads.add_structured_input",
        404,
        lambda i: {"thread_id": i.own_thread, "item_id": i.question, "input": {"answers": {}}},
    ),
    ("threads.add_client_tool_output", 404, lambda i: {"thread_id": i.thread, "result": {}}),
    (
        "threads.custom_action",
        404,
        lambda i: {
            "thread_id": i.thread,
            "item_id": i.answer,
            "action": {"type": "a", "payload": {}},
        },
    ),
    (
        "threads.sync_custom_action",
        404,
        lambda i: {
            "thread_id": i.thread,
            "item_id": i.answer,
            "action": {"type": "a", "payload": {}},
        },
    ),
    ("attachments.delete", 404, lambda i: {"attachment_id": i.attachment}),
    # Sending the owner's attachment, in a new thread or the intruder's own.
    ("threads.create", 404, lambda i: {"input": message("mine now", i.attachment)}),
    (
        "threads.add_user_message",
        404,
        lambda i: {"thread_id": i.own_thread, "input": message("mine now", i.attachment)},
    ),
    # Types that name no existing record: they must not reveal or touch the owner's data.
    ("threads.create", 200, lambda i: {"input": user_input("mine")}),
    ("threads.list", 200, lambda i: {}),
    ("attachments.create", 200, lambda i: {"name": "a.txt", "size": 3, "mime_type": "text/plain"}),
    ("input.transcribe", 501, lambda i: {"audio_base64": "AAAA", "mime_type": "audio/webm"}),
]
INTRUDERS = ["other user, same tenant", "same user id, other tenant"]


def test_the_matrix_covers_every_request_type() -> None:
    assert {name for name, _, _ in CASES} == REQUEST_TYPES


def _missing_ids(own_thread: str) -> Ids:
    def fresh(prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(16)}"

    return Ids(
        thread=fresh("thr"),
        user_message=fresh("msg"),
        answer=fresh("msg"),
        question=fresh("msg"),
        attachment=fresh("atc"),
        own_thread=own_thread,
    )


def _normalised(response_text: str, ids: Ids) -> str:
    """The body with the named ids replaced, so foreign and missing ids compare equal."""
    for name in ("thread", "user_message", "answer", "question", "attachment"):
        response_text = response_text.replace(getattr(ids, name), f"<{name}>")
    return response_text


@dataclass
class World:
    app: JwtApp
    owner: ChatClient
    owner_context: RequestContext
    ids: Ids
    attachments_dir: Path

    async def snapshot(self) -> dict[str, Any]:
        thread = await self.owner.call("threads.get_by_id", thread_id=self.ids.thread)
        threads = await self.owner.call("threads.list", limit=100)
        store = self.app.app.state.services.store
        return {
            "thread": thread,
            "items": await self.owner.items(self.ids.thread),
            "threads": [t["id"] for t in threads["data"]],
            "feedback": await store.load_feedback(self.ids.thread, self.owner_context),
            "attachment": await store.attachments.load(
                self.ids.attachment, self.owner_context.owner
            ),
            "files": stored_files(self.attachments_dir),
        }


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with jwt_app(database_url, attachments_dir=str(tmp_path)) as app:
        user = new_user()
        owner = await app.client(user, TENANT)
        thread_id, _ = await owner.new_thread("my secret plans")
        user_message, answer = [item["id"] for item in await owner.items(thread_id)]
        await owner.call("items.feedback", thread_id=thread_id, item_ids=[answer], kind="positive")
        context = RequestContext(Owner(tenant_id=TENANT, user_id=user))
        question = StructuredInputItem(
            id=f"msg_{secrets.token_hex(16)}",
            thread_id=thread_id,
            created_at=datetime.now(),
            inputs=[StructuredInputFreeform(id="q1", question="Your name?")],
        )
        store = app.app.state.services.store
        await store.add_thread_item(thread_id, question, context)
        attachment = await uploaded(owner, "plans.png", PNG, "image/png")
        ids = Ids(thread_id, user_message, answer, question.id, attachment["id"], "")
        yield World(app, owner, context, ids, tmp_path)


async def _intruder(world: World, kind: str) -> ChatClient:
    if kind == INTRUDERS[0]:
        return await world.app.client(new_user(), TENANT)
    owner = world.owner_context.owner
    return await world.app.client(owner.user_id, f"other_{secrets.token_hex(4)}")


@pytest.mark.parametrize("intruder_kind", INTRUDERS)
@pytest.mark.parametrize(
    ("type", "status", "body"), CASES, ids=[f"{name}-{n}" for n, (name, *_) in enumerate(CASES)]
)
async def test_foreign_ids_answer_as_missing_ones_and_change_nothing(
    world: World, intruder_kind: str, type: str, status: int, body: Body
) -> None:
    intruder = await _intruder(world, intruder_kind)
    own_thread, _ = await intruder.new_thread("the intruder's own thread")
    foreign = Ids(**{**world.ids.__dict__, "own_thread": own_thread})
    missing = _missing_ids(own_thread)
    before = await world.snapshot()

    reference = await intruder.post({"type": type, "params": body(missing)})
    attempt = await intruder.post({"type": type, "params": body(foreign)})

    assert attempt.status_code == reference.status_code == status, attempt.text
    assert attempt.headers["content-type"] == reference.headers["content-type"]
    # These answers name the new thread or attachment: compare statuses only.
    if type not in ("threads.create", "attachments.create") or status != 200:
        assert _normalised(attempt.text, foreign) == _normalised(reference.text, missing)
    for secret in ("my secret plans", world.owner_context.owner.user_id + "@"):
        assert secret not in attempt.text
    assert "Traceback" not in attempt.text

    assert await world.snapshot() == before
    # And the intruder's own listing holds only the intruder's threads.
    listed = await intruder.call("threads.list", limit=100)
    assert world.ids.thread not in json.dumps(listed)


@pytest.mark.parametrize("intruder_kind", INTRUDERS)
async def test_threads_list_never_shows_another_owners_threads(
    world: World, intruder_kind: str
) -> None:
    intruder = await _intruder(world, intruder_kind)
    assert (await intruder.call("threads.list"))["data"] == []
    mine, _ = await intruder.new_thread("mine")
    for order in ("asc", "desc"):
        page = await intruder.call("threads.list", order=order, limit=100)
        assert [t["id"] for t in page["data"]] == [mine]
    owner_page = await world.owner.call("threads.list", limit=100)
    assert [t["id"] for t in owner_page["data"]] == [world.ids.thread]

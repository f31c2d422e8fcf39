"""What one streamed turn asks of the database, on SQLite and PostgreSQL.

Before the first delta, one transaction: claim the thread (its lease), load its newest
items and store the user's message. After the last delta, one more: the answer's items,
its token usage, the thread's new state with the lease released. Every answer pays for
these, so a statement more is a regression these tests catch; and a client that sends
its next message the instant the stream ends finds the thread free.

Nothing more while the answer runs, however long: the lease is not renewed per stream;
the process's heartbeat (one statement a second for all its streams, in a transaction of
its own, chat/leases.py) keeps its leases, and is not counted here.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from starlette.types import Message

from tests.support.asgi import chatkit_post_scope
from tests.support.chat_client import ChatClient, local_app
from tests.support.sse import parse_events, user_input

# Before the first delta: claim (UPDATE ... RETURNING), history (SELECT), the message
# (INSERT ... SELECT). After: the answer (INSERT ... SELECT, one executemany), usage
# (INSERT), the thread (UPDATE, freeing the lease).
STATEMENTS_BEFORE_FIRST_DELTA = 3
STATEMENTS_PER_TURN = 6
TRANSACTIONS_PER_TURN = 2

OnBody = Callable[[bytes], Awaitable[None]]


async def post_streamed(app: FastAPI, body: dict[str, Any], on_body: OnBody) -> bytes:
    """POST /chatkit through the app as a server would, calling `on_body` with each chunk
    of the answer as it is sent (before the next one is produced)."""
    payload = json.dumps(body).encode()
    done = asyncio.Event()
    received: list[bytes] = []

    async def receive() -> Message:
        if not received:
            received.append(payload)
            return {"type": "http.request", "body": payload, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
                await on_body(message["body"])
            if not message.get("more_body", False):
                done.set()

    await app(chatkit_post_scope(), receive, send)
    return b"".join(chunks)


def is_heartbeat(statement: str) -> bool:
    return statement.startswith(("INSERT INTO holders", "DELETE FROM holders"))


class Counter:
    """Statements and transactions an engine runs, as SQLAlchemy reports them, but for
    the process's heartbeat, which runs whether or not anyone is answering."""

    def __init__(self, app: FastAPI) -> None:
        self.statements: list[str] = []
        self.heartbeats = 0
        self.begins = 0
        self.engine = app.state.services.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "begin", self._begin)

    @property
    def transactions(self) -> int:
        # A beat is one statement in a transaction of its own.
        return self.begins - self.heartbeats

    def _statement(self, *args: Any) -> None:
        if is_heartbeat(args[2]):
            self.heartbeats += 1
        else:
            self.statements.append(args[2])

    def _begin(self, *_: Any) -> None:
        self.begins += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "begin", self._begin)


def add_message(thread_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text)},
    }


async def test_a_follow_up_turn_costs_two_transactions(database_url: str) -> None:
    async with local_app(database_url, titles=False) as (app, http):
        thread_id, _ = await ChatClient(http).new_thread()
        counter = Counter(app)
        at_first_delta: list[int] = []

        async def watch(body: bytes) -> None:
            if not at_first_delta and b"content_part.text_delta" in body:
                at_first_delta.append(len(counter.statements))

        try:
            streamed = await post_streamed(app, add_message(thread_id, "and again"), watch)
        finally:
            counter.close()
    events = parse_events(streamed.decode())
    assert [e["type"] for e in events if e["type"] == "error"] == []
    assert at_first_delta == [STATEMENTS_BEFORE_FIRST_DELTA], counter.statements
    assert len(counter.statements) == STATEMENTS_PER_TURN, counter.statements
    assert counter.transactions == TRANSACTIONS_PER_TURN


async def test_a_new_thread_costs_two_transactions(database_url: str) -> None:
    async with local_app(database_url, titles=False) as (app, _):
        counter = Counter(app)
        body = {"type": "threads.create", "params": {"input": user_input("hello")}}

        async def ignore(_: bytes) -> None:
            return None

        try:
            await post_streamed(app, body, ignore)
        finally:
            counter.close()
    # The thread with its lease and the message; then the answer, usage and the thread.
    assert len(counter.statements) == 5, counter.statements
    assert counter.transactions == TRANSACTIONS_PER_TURN


async def test_the_next_message_sent_as_the_stream_ends_finds_the_thread_free(
    database_url: str,
) -> None:
    async with local_app(database_url, titles=False) as (app, http):
        client = ChatClient(http)
        thread_id, _ = await client.new_thread()
        statuses: list[int] = []

        async def send_again_when_answered(body: bytes) -> None:
            # The instant the answer is shown as done, as a scripted client would.
            if b'"type":"thread.item.done"' in body and b'"assistant_message"' in body:
                response = await client.post(add_message(thread_id, "right away"))
                statuses.append(response.status_code)

        for turn in range(5):
            await post_streamed(
                app, add_message(thread_id, f"turn {turn}"), send_again_when_answered
            )
    assert statuses and set(statuses) == {200}, statuses

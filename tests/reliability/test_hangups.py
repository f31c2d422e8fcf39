"""Clients hang up at random points of many streams; nothing is half-written or leaked.

One user of a real server on PostgreSQL opens stream after stream (new threads and
messages to earlier ones, several at once) and hangs up after a random number of
events, or mid-request. Afterwards: every upstream model call has stopped, no database
connection is busy and the pool never grew past its size, the user can open as many
streams as the limit allows (and no more), every thread loads, every message the
server acknowledged is stored, every answer the client saw is stored at least as far
as it saw it, every stored answer is a clean prefix of the model's answer, and every
thread takes a new message.
"""

import asyncio
import random
import secrets
import socket
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.kit import (
    LONG,
    POOL,
    SLOTS,
    Event,
    Turn,
    all_items,
    all_threads,
    client_for,
    count,
    create_body,
    eventually,
    message_body,
    scale,
    stream,
    text_of,
    token,
)
from tests.reliability.servers import gauges_at_rest
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.postgres import postgres_backends
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

ANSWER = " ".join(f"word{n}" for n in range(40)) + "."
STREAMS = scale(40, 400)
# Events to read before hanging up; None reads to the end, 0 hangs up at the headers.
STOP_POINTS = [0, 1, 2, 3, 4, 6, 9, 14, 22, 35, None]


@dataclass
class Attempt:
    text: str
    thread_id: str | None  # the thread written to, once known
    turn: Turn


def hang_up_mid_body(base_url: str, user: str) -> None:
    """Send the headers and half the promised body, then close the socket."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = (
            "POST /chatkit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token(user)}\r\nContent-Length: 4000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"type": "threads.create", "params": {"input": ')


async def test_random_hang_ups_leave_nothing_half_written(
    served: ServerProcess, fake: FakeOpenAI
) -> None:
    fake.always(Reply(text=ANSWER, delta_delay=0.01))
    rng = random.Random(8 if not LONG else None)
    database = served.env["DATABASE_URL"]
    attempts: list[Attempt] = []
    threads: list[str] = []
    most_connections = 0

    async def watch_connections() -> None:
        nonlocal most_connections
        while True:
            most_connections = max(most_connections, await postgres_backends(database))
            await asyncio.sleep(0.05)

    async def one(http: httpx.AsyncClient, n: int) -> None:
        text = f"message {n} {secrets.token_hex(3)}"
        thread_id = rng.choice(threads) if threads and rng.random() < 0.6 else None
        body = create_body(text) if thread_id is None else message_body(thread_id, text)
        stop_after = rng.choice(STOP_POINTS)
        for _ in range(200):
            turn = await stream(http, body, stop_after)
            # A slot (429) or a thread (409) is freed only once the server has noticed
            # the hang-up that came before: wait for it as a client would.
            if turn.status not in (409, 429):
                break
            await asyncio.sleep(0.05)
        assert turn.status == 200, turn.body
        thread_id = thread_id or turn.thread_id
        if thread_id is not None and thread_id not in threads:
            threads.append(thread_id)
        attempts.append(Attempt(text, thread_id, turn))

    watcher = asyncio.create_task(watch_connections())
    mid_body = 0
    user = f"hangups-{secrets.token_hex(4)}"
    async with client_for(served, user) as http:
        for start in range(0, STREAMS, SLOTS):
            batch = range(start, min(start + SLOTS, STREAMS))
            await asyncio.gather(*(one(http, n) for n in batch))
            if rng.random() < 0.2:
                await asyncio.to_thread(hang_up_mid_body, served.base_url, user)
                mid_body += 1
        watcher.cancel()

        # Nothing runs on after its client: no model call, no busy connection.
        await eventually(lambda: fake.streaming == 0, "every upstream stream closed")
        await eventually(
            lambda: _no_busy_connections(database), "every database connection idle again"
        )
        assert most_connections <= POOL, f"{most_connections} connections, pool is {POOL}"
        await gauges_at_rest(served)  # and the server's own metrics agree

        checked = await _check_threads(http, attempts)
        await _slots_are_all_free(served, user, fake)
    count(
        streams=len(attempts) + mid_body,
        faults_injected=sum(not a.turn.ended_cleanly for a in attempts) + mid_body,
        items_checked=checked,
    )


async def _no_busy_connections(database: str) -> bool:
    return await postgres_backends(database, busy_only=True) == 0


async def _check_threads(http: httpx.AsyncClient, attempts: list[Attempt]) -> int:
    """Every thread whole and loadable, nothing acknowledged or shown missing."""
    sent = {attempt.text for attempt in attempts}
    stored: dict[str, list[Event]] = {}
    for thread_id in await all_threads(http):
        loaded = await http.post("/chatkit", json=_get(thread_id))
        assert loaded.status_code == 200, loaded.text
        items = stored[thread_id] = await all_items(http, thread_id)
        kinds = [item["type"] for item in items]
        assert set(kinds) <= {"user_message", "assistant_message"}, kinds
        # A thread can be empty: its creator hung up before the message was accepted.
        assert not items or kinds[0] == "user_message", kinds
        said = [text_of(item) for item in items if item["type"] == "user_message"]
        assert set(said) <= sent and len(said) == len(set(said)), said
        for item in items:
            if item["type"] == "assistant_message":
                assert text_of(item).strip() and ANSWER.startswith(text_of(item)), item
    assert {a.thread_id for a in attempts if a.thread_id} <= set(stored)

    for attempt in attempts:
        acknowledged, shown = attempt.turn.user_message, attempt.turn.shown_text
        if acknowledged is None:
            assert not shown
            continue
        assert attempt.thread_id is not None
        items = stored[attempt.thread_id]
        [position] = [n for n, item in enumerate(items) if item["id"] == acknowledged["id"]]
        assert text_of(items[position]) == attempt.text
        if shown:  # the answer the client saw begin is stored, after its question
            [answer] = [n for n, item in enumerate(items) if item["id"] == attempt.turn.answer_id]
            assert answer > position and text_of(items[answer]).startswith(shown)

    for thread_id in list(stored)[:5]:  # and they all take new messages
        turn = await stream(http, message_body(thread_id, "still there?"))
        assert turn.status == 200 and turn.ended_cleanly and not turn.errors, turn.body
        assert text_of(turn.acknowledged[-1]) == ANSWER
    return sum(len(items) for items in stored.values())


def _get(thread_id: str) -> dict[str, object]:
    return {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}


async def _slots_are_all_free(served: ServerProcess, user: str, fake: FakeOpenAI) -> None:
    """SLOTS streams open at once (none was leaked), and one more is refused."""
    fake.always(Reply(text=ANSWER, delta_delay=0.05))
    first = [Turn(0) for _ in range(SLOTS)]
    async with client_for(served, user) as other:
        tasks = [
            asyncio.create_task(stream(other, create_body(f"slot {n}"), turn=turn))
            for n, turn in enumerate(first)
        ]
        await eventually(lambda: all(turn.events for turn in first), "all slots streaming")
        extra = await stream(other, create_body("one too many"))
        assert extra.status == 429, extra.body
        await asyncio.gather(*tasks)
    assert all(turn.status == 200 and not turn.errors for turn in first)


async def test_a_hang_up_stops_the_model_call_at_once(
    served: ServerProcess, fake: FakeOpenAI
) -> None:
    # A slow answer (8 s): a model call left running would still be streaming long after.
    fake.always(Reply(text=ANSWER, delta_delay=0.2))
    async with client_for(served) as http:
        turn = await stream(http, create_body("tell me everything"), stop_after=6)
        assert turn.shown_text and fake.streaming == 1
        await eventually(lambda: fake.streaming == 0, "the model call stopped", seconds=2)
        thread_id = turn.thread_id
        assert thread_id is not None
        await eventually(
            lambda: _answer_kept(http, thread_id, turn.shown_text), "the partial answer kept"
        )
    count(streams=1, faults_injected=1, items_checked=2)


async def _answer_kept(http: httpx.AsyncClient, thread_id: str, shown: str) -> bool:
    items = await all_items(http, thread_id)
    kept = [text_of(item) for item in items if item["type"] == "assistant_message"]
    return len(kept) == 1 and kept[0].startswith(shown) and len(kept[0]) < len(ANSWER)

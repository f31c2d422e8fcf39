"""Streams under real conditions: keep-alives, drain at shutdown, one answer per thread."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.types import Message

from chatkit_backend.api.streaming import KEEPALIVE_FRAME, EventStreamResponse
from chatkit_backend.chat.leases import AnswerLocks
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.errors import ThreadBusy
from chatkit_backend.ops.shutdown import Drain
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.leases import ThreadLeases
from tests.fake_openai import FakeOpenAI, Reply, running_fake_openai
from tests.ops_helpers import body, lease_of, message, ops_app, wait_for_lease
from tests.sse import answer_text, parse_events, user_input
from tests.test_errors import assert_envelope

Sent = list[tuple[float, Message]]


async def _run(response: EventStreamResponse, disconnect_after: float | None = None) -> Sent:
    """Drive the response as an ASGI server would; record each message with its time."""
    sent: Sent = []
    started = time.monotonic()

    async def receive() -> Message:
        if disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append((time.monotonic() - started, message))

    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    return sent


def _bodies(sent: Sent) -> list[tuple[float, bytes]]:
    return [(at, m["body"]) for at, m in sent if m["type"] == "http.response.body" and m["body"]]


async def _silent_then(seconds: float, *frames: bytes) -> AsyncIterator[bytes]:
    yield b'data: {"type":"stream_options"}\n\n'
    await asyncio.sleep(seconds)
    for frame in frames:
        yield frame


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.outcomes: list[str] = []

    async def frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    async def closed(self, outcome: str) -> None:
        self.outcomes.append(outcome)


# ---- keep-alives ----


async def test_silent_stretches_get_keepalive_comments_at_the_interval() -> None:
    hooks = Recorder()
    done = b'data: {"type":"thread.item.done"}\n\n'
    response = EventStreamResponse(_silent_then(1.0, done), hooks=hooks, keepalive_seconds=0.2)
    bodies = _bodies(await asyncio.wait_for(_run(response), timeout=5))
    keepalives = [at for at, frame in bodies if frame == KEEPALIVE_FRAME]
    assert 4 <= len(keepalives) <= 5, bodies
    gaps = [b - a for a, b in itertools.pairwise(keepalives)]
    assert all(0.15 <= gap <= 0.35 for gap in gaps), gaps
    assert bodies[-1][1] == done
    assert hooks.outcomes == ["completed"]
    assert KEEPALIVE_FRAME not in hooks.frames  # comments are not events


async def test_a_busy_stream_gets_no_keepalives() -> None:
    async def chatty() -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.02)
            yield b'data: {"type":"progress_update"}\n\n'

    response = EventStreamResponse(chatty(), keepalive_seconds=0.2)
    bodies = _bodies(await asyncio.wait_for(_run(response), timeout=5))
    assert KEEPALIVE_FRAME not in [frame for _, frame in bodies]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as fake:
        yield fake


async def test_a_stalled_model_stream_stays_alive(
    fake_server: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake_server.reset()
    fake_server.always(Reply(text="Finally, an answer.", stall=1.0))
    settings: dict[str, Any] = {
        "llm_provider": "openai",
        "openai_api_key": "sk-test-key",
        "openai_base_url": fake_server.base_url,
        "llm_model": "fake-model",
        "titles": False,
        "sse_keepalive_seconds": 0.25,
    }
    async with ops_app(sqlite_database_url, **settings) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
    assert created.text.count(": keep-alive\n\n") >= 3
    assert answer_text(parse_events(created.text)) == "Finally, an answer."


# ---- drain ----


async def test_a_stream_open_at_the_drain_deadline_ends_cleanly() -> None:
    hooks = Recorder()
    drain = Drain(grace_seconds=0.3)
    cancelled = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b'data: {"type":"thread.item.updated"}\n\n'
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            cancelled.set()  # where the SDK keeps the partial answer
            raise

    response = EventStreamResponse(endless(), hooks=hooks, drain=drain)
    task = asyncio.create_task(_run(response))
    await asyncio.sleep(0.2)
    began = time.monotonic()
    drain.begin()
    sent = await asyncio.wait_for(task, timeout=5)
    assert 0.25 <= time.monotonic() - began <= 1.0
    assert cancelled.is_set()
    bodies = [frame for _, frame in _bodies(sent)]
    assert bodies[-1].startswith(b'data: {"type":"error"')
    assert b'"allow_retry":true' in bodies[-1]
    assert sent[-1][1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert hooks.outcomes == ["drained"]


async def test_a_stream_that_finishes_within_the_grace_is_left_alone() -> None:
    hooks = Recorder()
    drain = Drain(grace_seconds=5)
    response = EventStreamResponse(
        _silent_then(0.3, b'data: {"type":"thread.item.done"}\n\n'), hooks=hooks, drain=drain
    )
    task = asyncio.create_task(_run(response))
    await asyncio.sleep(0.1)
    drain.begin()
    sent = await asyncio.wait_for(task, timeout=5)
    assert _bodies(sent)[-1][1] == b'data: {"type":"thread.item.done"}\n\n'
    assert hooks.outcomes == ["completed"]


# ---- one answer at a time per thread ----


async def test_a_second_stream_on_an_answering_thread_is_409(database_url: str) -> None:
    async with ops_app(database_url, offline_token_delay_ms=20) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
        assert await lease_of(database_url, thread_id) is None  # released at the end

        first = asyncio.create_task(http.post("/chatkit", json=message(thread_id, "first")))
        await wait_for_lease(database_url, thread_id, held=True)
        busy = await http.post("/chatkit", json=message(thread_id, "second"))
        assert_envelope(busy, 409, "thread_busy")
        assert busy.headers["retry-after"] == "1"
        retried = await http.post(
            "/chatkit", json=body("threads.retry_after_item", thread_id=thread_id, item_id="x")
        )
        assert retried.status_code == 404  # checks come first: a bad item is still 404
        # Reading is never blocked.
        assert (
            await http.post("/chatkit", json=body("items.list", thread_id=thread_id))
        ).is_success
        answered = await first
        assert '"first"' in answer_text(parse_events(answered.text))
        await wait_for_lease(database_url, thread_id, held=False)
        again = await http.post("/chatkit", json=message(thread_id, "second"))
        assert '"second"' in answer_text(parse_events(again.text))
        items = (
            await http.post("/chatkit", json=body("items.list", thread_id=thread_id, order="asc"))
        ).json()
        # The refused message was never stored.
        users = [i for i in items["data"] if i["type"] == "user_message"]
        assert [u["content"][0]["text"] for u in users] == ["hi", "first", "second"]


async def test_a_new_thread_is_locked_while_its_first_answer_runs(sqlite_database_url: str) -> None:
    async with ops_app(sqlite_database_url, offline_token_delay_ms=20) as (_app, http):
        creating = asyncio.create_task(
            http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        )
        thread_id = None
        for _ in range(500):
            page = (await http.post("/chatkit", json=body("threads.list"))).json()
            if page["data"]:
                thread_id = page["data"][0]["id"]
                break
            await asyncio.sleep(0.01)
        assert thread_id is not None
        await wait_for_lease(sqlite_database_url, thread_id, held=True)
        assert_envelope(await http.post("/chatkit", json=message(thread_id)), 409, "thread_busy")
        await creating
        await wait_for_lease(sqlite_database_url, thread_id, held=False)


async def test_a_lease_runs_out_when_its_holder_dies(sqlite_database_url: str) -> None:
    async with ops_app(sqlite_database_url) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("x")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
        user = await http.post("/chatkit", json=body("threads.get_by_id", thread_id=thread_id))
        assert user.is_success
    engine = create_engine(sqlite_database_url)
    try:
        owner = await _owner(engine, thread_id)
        short = AnswerLocks(ThreadLeases(engine), ttl=0.3, renew_every=60)
        held = await short.acquire(thread_id, owner)
        held._renewer.cancel()  # the holder "crashes": no renewals, no release
        with pytest.raises(ThreadBusy):
            await short.acquire(thread_id, owner)
        await asyncio.sleep(0.4)
        taken = await short.acquire(thread_id, owner)  # ran out: free for the next one
        await held.release()  # a late release by the old holder frees nothing
        with pytest.raises(ThreadBusy):
            await short.acquire(thread_id, owner)
        await taken.release()
        await (await short.acquire(thread_id, owner)).release()
    finally:
        await engine.dispose()


async def test_a_held_lease_is_renewed(sqlite_database_url: str) -> None:
    async with ops_app(sqlite_database_url) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("x")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
    engine = create_engine(sqlite_database_url)
    try:
        owner = await _owner(engine, thread_id)
        locks = AnswerLocks(ThreadLeases(engine), ttl=0.3, renew_every=0.1)
        held = await locks.acquire(thread_id, owner)
        await asyncio.sleep(0.6)  # twice the lease: only renewals keep it
        with pytest.raises(ThreadBusy):
            await locks.acquire(thread_id, owner)
        await held.release()
        await (await locks.acquire(thread_id, owner)).release()
    finally:
        await engine.dispose()


async def _owner(engine: Any, thread_id: str) -> RequestContext:
    from sqlalchemy import select

    from chatkit_backend.store.leases import THREADS

    async with engine.connect() as conn:
        query = select(THREADS.c.tenant_id, THREADS.c.user_id).where(THREADS.c.id == thread_id)
        tenant_id, user_id = (await conn.execute(query)).one()
    return RequestContext(Owner(tenant_id=tenant_id, user_id=user_id))

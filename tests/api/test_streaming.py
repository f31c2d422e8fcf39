"""Streams under real conditions: keep-alives through silent stretches, and the drain at
shutdown (`EventStreamResponse`, driven as an ASGI server would)."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatkit_backend.api.streaming import EventStreamResponse, Producer
from chatkit_backend.chat.stream import KEEPALIVE_FRAME
from chatkit_backend.ops.shutdown import Drain
from tests.support.asgi import Sent, drive
from tests.support.chat_client import local_app
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.ops import body
from tests.support.sse import answer_text, parse_events, user_input


def _bodies(sent: Sent) -> list[tuple[float, bytes]]:
    return [(at, m["body"]) for at, m in sent if m["type"] == "http.response.body" and m["body"]]


async def _silent_then(seconds: float, *frames: bytes) -> AsyncIterator[bytes]:
    yield b'data: {"type":"stream_options"}\n\n'
    await asyncio.sleep(seconds)
    for frame in frames:
        yield frame


def producing(frames: AsyncIterator[bytes]) -> Producer:
    """A producer that hands the stream each of `frames` in turn."""

    async def produce(send: Callable[[bytes], None]) -> None:
        async for frame in frames:
            send(frame)

    return produce


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def closed(self, outcome: str) -> None:
        self.outcomes.append(outcome)


# ---- keep-alives ----


async def test_silent_stretches_get_keepalive_comments_at_the_interval() -> None:
    hooks = Recorder()
    done = b'data: {"type":"thread.item.done"}\n\n'
    response = EventStreamResponse(
        producing(_silent_then(1.0, done)), hooks=hooks, keepalive_seconds=0.2
    )
    bodies = _bodies(await asyncio.wait_for(drive(response), timeout=5))
    keepalives = [at for at, frame in bodies if frame == KEEPALIVE_FRAME]
    assert 4 <= len(keepalives) <= 5, bodies
    gaps = [b - a for a, b in itertools.pairwise(keepalives)]
    assert all(0.15 <= gap <= 0.35 for gap in gaps), gaps
    assert bodies[-1][1] == done
    assert hooks.outcomes == ["completed"]


async def test_a_busy_stream_gets_no_keepalives() -> None:
    async def chatty() -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.02)
            yield b'data: {"type":"progress_update"}\n\n'

    response = EventStreamResponse(producing(chatty()), keepalive_seconds=0.2)
    bodies = _bodies(await asyncio.wait_for(drive(response), timeout=5))
    assert KEEPALIVE_FRAME not in [frame for _, frame in bodies]


async def test_a_stalled_model_stream_stays_alive(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.always(Reply(text="Finally, an answer.", stall=1.0))
    settings: dict[str, Any] = {
        "llm_provider": "openai",
        "openai_api_key": "sk-test-key",
        "openai_base_url": fake.base_url,
        "llm_model": "fake-model",
        "titles": False,
        "sse_keepalive_seconds": 0.25,
    }
    async with local_app(sqlite_database_url, **settings) as (_, http):
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
            cancelled.set()  # where the turn keeps the partial answer
            raise

    response = EventStreamResponse(producing(endless()), hooks=hooks, drain=drain)
    task = asyncio.create_task(drive(response))
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
        producing(_silent_then(0.3, b'data: {"type":"thread.item.done"}\n\n')),
        hooks=hooks,
        drain=drain,
    )
    task = asyncio.create_task(drive(response))
    await asyncio.sleep(0.1)
    drain.begin()
    sent = await asyncio.wait_for(task, timeout=5)
    assert _bodies(sent)[-1][1] == b'data: {"type":"thread.item.done"}\n\n'
    assert hooks.outcomes == ["completed"]

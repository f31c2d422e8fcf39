"""Abuse limits: a token bucket per user, concurrent streams per user, message length."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatkit_backend.chat.limits import InProcessLimiter, RateLimiter, StreamSlots
from chatkit_backend.context import Owner
from tests.chat.limiter_contract import LimiterContract, Limiters
from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import assert_envelope, chat_client
from tests.support.processes import run_cli, serving
from tests.support.sse import user_input


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- the limiter ----


def test_token_bucket_allows_a_burst_then_refills_evenly() -> None:
    clock = Clock()
    bucket = RateLimiter(per_minute=6, clock=clock)  # one token every 10 s
    assert [bucket.take(("t", "a")) for _ in range(6)] == [0.0] * 6
    assert bucket.take(("t", "a")) == pytest.approx(10.0)
    clock.now += 5
    assert bucket.take(("t", "a")) == pytest.approx(5.0)
    clock.now += 5
    assert bucket.take(("t", "a")) == 0.0
    assert bucket.take(("t", "b")) == 0.0  # each user has their own bucket
    clock.now += 600
    assert [bucket.take(("t", "a")) for _ in range(7)][-1] > 0  # refills only to capacity


def test_idle_buckets_are_dropped() -> None:
    clock = Clock()
    bucket = RateLimiter(per_minute=60, clock=clock)
    for n in range(1000):
        bucket.take(("t", str(n)))
    assert len(bucket) == 1000
    clock.now += 120
    bucket.take(("t", "new"))
    assert len(bucket) == 1


def test_stream_slots_are_counted_and_released_once() -> None:
    slots = StreamSlots(per_user=2)
    first, second = slots.acquire(("t", "a")), slots.acquire(("t", "a"))
    assert first and second and slots.acquire(("t", "a")) is None
    assert slots.acquire(("t", "b")) is not None
    first.release()
    first.release()  # harmless: does not free someone else's slot
    assert slots.open_count(("t", "a")) == 1
    second.release()
    assert slots.open_count(("t", "a")) == 0


# ---- the Limiter contract (tests/chat/limiter_contract.py), in one process ----


class TestInProcessLimiter(LimiterContract):
    """The contract's `count` limiters are one limiter: one process shares its count
    with itself."""

    @pytest.fixture
    def limiters(self) -> Limiters:
        @asynccontextmanager
        async def one_process(count: int, **options: Any) -> AsyncIterator[list[Any]]:
            settings: dict[str, Any] = {"requests_per_minute": 100, "streams_per_user": 3}
            limiter = InProcessLimiter(**{**settings, **options})
            async with limiter.running():
                yield [limiter] * count

        return one_process


# ---- over HTTP ----


async def test_over_the_rate_is_429_before_the_body_is_read(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url, rate_limit_per_minute=3) as app:
        alice = await app.client(new_user())
        for _ in range(3):
            await alice.call("threads.list")
        refused = await alice.post({"type": "threads.create", "params": {"input": user_input("x")}})
        assert_envelope(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "20"
        garbage = await alice.http.post("/chatkit", content=b"not even json")
        assert_envelope(garbage, 429, "rate_limited")
        bob = await app.client(new_user())
        await bob.call("threads.list")  # others are not starved
        assert (await bob.call("threads.list"))["data"] == []


async def test_the_local_user_is_limited_too(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, rate_limit_per_minute=1) as client:
        await client.call("threads.list")
        assert_envelope(
            await client.post({"type": "threads.list", "params": {}}), 429, "rate_limited"
        )


async def test_concurrent_streams_over_the_limit_are_429_before_streaming(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(
        sqlite_database_url, max_streams_per_user=1, offline_token_delay_ms=10
    ) as app:
        user = new_user()
        alice = await app.client(user)
        context = Owner("acme", user)
        limiter: InProcessLimiter = app.app.state.services.limiter
        first = asyncio.create_task(alice.new_thread("a long question"))
        for _ in range(1000):  # until the first stream holds its slot
            if limiter.open_streams(context):
                break
            await asyncio.sleep(0.005)
        assert limiter.open_streams(context) == 1

        refused = await alice.post({"type": "threads.create", "params": {"input": user_input("x")}})
        assert_envelope(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        await alice.call("threads.list")  # JSON requests need no stream slot
        bob = await app.client(new_user())
        await bob.new_thread("bob is not blocked")

        thread_id, _ = await first
        assert limiter.open_streams(context) == 0
        await alice.stream("threads.add_user_message", thread_id=thread_id, input=user_input("y"))
        assert limiter.open_streams(context) == 0
        threads = await alice.call("threads.list")
        assert len(threads["data"]) == 1  # the refused create made nothing


async def test_a_failed_stream_frees_its_slot(sqlite_database_url: str) -> None:
    # A real model failure: the OpenAI provider pointed at a port nobody listens on.
    from tests.support.processes import free_port

    async with jwt_app(
        sqlite_database_url,
        max_streams_per_user=1,
        llm_provider="openai",
        openai_api_key="sk-test",
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_timeout_seconds=5,
    ) as app:
        user = new_user()
        alice = await app.client(user)
        _, events = await alice.new_thread("hello?")
        assert events[-1]["type"] == "error"
        assert app.app.state.services.limiter.open_streams(Owner("acme", user)) == 0


async def test_overlong_messages_are_400_before_any_stream(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, max_message_chars=10) as client:
        too_long = {"type": "threads.create", "params": {"input": user_input("x" * 11)}}
        response = await client.post(too_long)
        assert_envelope(response, 400, "invalid_request")
        assert "longer than 10 characters" in response.json()["message"]
        thread_id, _ = await client.new_thread("x" * 10)
        response = await client.post(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input("y" * 11)},
            }
        )
        assert_envelope(response, 400, "invalid_request")
        quoted = {**user_input("short"), "quoted_text": "q" * 10}
        response = await client.post({"type": "threads.create", "params": {"input": quoted}})
        assert_envelope(response, 400, "invalid_request")
        assert len((await client.call("threads.list"))["data"]) == 1


@pytest.mark.slow
def test_a_disconnected_client_frees_its_slot_on_a_real_server(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}",
        "LLM_PROVIDER": "offline",
        # About 40 words at 100 ms: a stream left to finish would hold its slot for ~4 s.
        "OFFLINE_TOKEN_DELAY_MS": "100",
        "MAX_STREAMS_PER_USER": "1",
    }
    assert run_cli("migrate", env=env).returncode == 0
    body: dict[str, Any] = {"type": "threads.create", "params": {"input": user_input("long")}}

    def first_event(http: httpx.Client) -> httpx.Response:
        """Start a stream, read its first event, and hang up."""
        with http.stream("POST", "/chatkit", json=body) as response:
            if response.status_code == 200:
                for line in response.iter_lines():
                    if line.startswith("data: ") and "text_delta" in line:
                        break
            else:
                response.read()
            return response

    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        with http.stream("POST", "/chatkit", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and "text_delta" in line:
                    busy = http.post("/chatkit", json=body)
                    assert busy.status_code == 429 and busy.headers["retry-after"]
                    break  # leaving the block closes the connection mid-answer
        hung_up = time.monotonic()
        while first_event(http).status_code == 429:
            assert time.monotonic() - hung_up < 2, "the slot was not released on disconnect"
            time.sleep(0.05)

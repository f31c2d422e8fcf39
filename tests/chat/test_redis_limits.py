"""Limits counted in Redis (chat/redis_limits.py): one count for every process that
shares the server, slots that lapse when their process dies, and what happens while
Redis is away (REDIS_FAILURE) and when it is back.

Against the Redis at TEST_REDIS_URL (127.0.0.1:6379), each test under a key prefix of
its own; outages against a `redis-server` of the test's own. Locally these skip without
Redis; under CI they fail.
"""

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from chatkit_backend.chat import redis_limits
from chatkit_backend.chat.redis_limits import RedisLimiter, redis_client
from chatkit_backend.context import Owner
from chatkit_backend.errors import TooManyRequests, Unavailable
from chatkit_backend.settings import Settings
from tests.chat.limiter_contract import ALICE, LimiterContract, Limiters
from tests.support.chat_client import assert_envelope, local_app
from tests.support.needs import require_redis, require_redis_server
from tests.support.processes import free_port
from tests.support.redis import REDIS_URL, OwnRedis, own_redis, shared_prefix
from tests.support.sse import user_input


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    with shared_prefix() as fresh:
        yield fresh


@asynccontextmanager
async def limiters(
    count: int, url: str = REDIS_URL, *, run: bool = True, **options: Any
) -> AsyncIterator[list[RedisLimiter]]:
    """`count` limiters on one Redis, like as many processes, each running (keeping its
    slots alive) unless `run` is false."""
    settings: dict[str, Any] = {"requests_per_minute": 100, "streams_per_user": 3, **options}
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(count):
            limiter = RedisLimiter(redis_client(url), holder=secrets.token_hex(8), **settings)
            if run:
                await stack.enter_async_context(limiter.running())
            else:
                stack.push_async_callback(limiter.client.aclose)
            made.append(limiter)
        yield made


async def until(condition: Any, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


def errors_counted(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "chatkit_limits_backend_errors_total", {"operation": operation}
    )
    return value or 0.0


# ---- one count for every process: the Limiter contract (tests/chat/limiter_contract.py) ----


class TestRedisLimiter(LimiterContract):
    """The contract's `count` limiters are as many processes on the shared Redis, under
    the test's own key prefix."""

    @pytest.fixture
    def limiters(self, prefix: str) -> Limiters:
        return functools.partial(limiters, prefix=prefix)

    async def assert_released_to(self, limiter: Any, owner: Owner, count: int) -> None:
        # A release is given back to Redis in a task of its own.
        async def released() -> bool:
            return await self.open_streams(limiter, owner) == count

        await until(released)


async def test_a_check_that_does_not_fail_costs_one_script_call(prefix: str) -> None:
    async with limiters(1, prefix=prefix, failed_auth_per_minute=2) as (one,):
        calls = 0
        bucket = one._bucket

        async def counted(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await bucket(**kwargs)

        one._bucket = counted  # type: ignore[assignment]
        await one.admit_unverified("192.0.2.1")
        await one.release_unverified("192.0.2.1")
        one._bucket = bucket
        assert calls == 1  # it only looks: one call, not two


async def test_a_dead_processes_slots_lapse_a_live_ones_do_not(prefix: str) -> None:
    short = {"prefix": prefix, "streams_per_user": 2, "slot_ttl_seconds": 1.0}
    async with (
        limiters(1, slot_refresh_seconds=0.2, **short) as (live,),
        # Never running: nothing keeps its slots alive, as after SIGKILL.
        limiters(1, run=False, **short) as (dead,),
    ):
        await live.open_stream(ALICE)
        await dead.open_stream(ALICE)
        with pytest.raises(TooManyRequests):
            await live.open_stream(ALICE)
        await asyncio.sleep(2.0)  # two TTLs: the live slot was pushed forward meanwhile
        assert await live.open_streams(ALICE) == 1
        await live.open_stream(ALICE)
        with pytest.raises(TooManyRequests):
            await live.open_stream(ALICE)


async def test_a_stopping_process_gives_its_slots_back(prefix: str) -> None:
    async with limiters(1, prefix=prefix, streams_per_user=1) as (other,):
        async with limiters(1, prefix=prefix, streams_per_user=1) as (stopping,):
            await stopping.open_stream(ALICE)  # a stream the drain did not see end
            with pytest.raises(TooManyRequests):
                await other.open_stream(ALICE)
        # Gone at once, not after the TTL.
        assert await other.open_streams(ALICE) == 0
        await other.open_stream(ALICE)


# ---- Redis away ----


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_redis_away_open_lets_through_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=redis_limits.__name__)
    before = errors_counted("request")
    async with limiters(
        1,
        dead_redis_url(),
        prefix="p:",
        requests_per_minute=1,
        streams_per_user=1,
        failed_auth_per_minute=1,
    ) as (limiter,):
        started = time.monotonic()
        for _ in range(20):
            await limiter.admit_request(ALICE)
        for _ in range(3):
            await limiter.open_stream(ALICE)
        await limiter.admit_unverified("192.0.2.1")
        await limiter.release_unverified("192.0.2.1")
        # Decided without waiting on a dead server each time.
        assert time.monotonic() - started < 5
    assert errors_counted("request") - before == 20
    warnings = [r for r in caplog.records if r.name == redis_limits.__name__]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "Redis cannot be reached" in message and "REDIS_FAILURE=open" in message
    assert "127.0.0.1" not in message  # nothing of the URL


async def test_redis_away_closed_refuses_with_503() -> None:
    async with limiters(
        1, dead_redis_url(), prefix="p:", failure="closed", failed_auth_per_minute=5
    ) as (limiter,):
        for attempt in (
            limiter.admit_request(ALICE),
            limiter.open_stream(ALICE),
            limiter.admit_unverified("192.0.2.1"),
        ):
            with pytest.raises(Unavailable) as refused:
                await attempt
            assert refused.value.status == 503
            assert refused.value.code == "limits_unavailable"
            assert int(refused.value.headers["Retry-After"]) >= 1
        # Giving a token back refuses nothing.
        await limiter.release_unverified("192.0.2.1")


@pytest.fixture
def stoppable_redis() -> Iterator[OwnRedis]:
    with own_redis(require_redis_server()) as server:
        yield server


async def test_limits_come_back_with_redis_without_a_restart(
    stoppable_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=redis_limits.__name__)
    url = stoppable_redis.url
    async with (
        limiters(1, url, prefix="a:", requests_per_minute=2) as (open_,),
        limiters(1, url, prefix="b:", requests_per_minute=2, failure="closed") as (closed,),
    ):
        for limiter in (open_, closed):
            await limiter.admit_request(ALICE)
            await limiter.admit_request(ALICE)
            with pytest.raises(TooManyRequests):
                await limiter.admit_request(ALICE)

        stoppable_redis.stop()
        for _ in range(5):
            await open_.admit_request(ALICE)
            with pytest.raises(Unavailable):
                await closed.admit_request(ALICE)

        stoppable_redis.start()  # empty, as a restarted Redis without persistence is
        await asyncio.sleep(redis_limits.RETRY_AFTER_FAILURE_SECONDS + 0.2)
        for limiter in (open_, closed):
            await limiter.admit_request(ALICE)
            await limiter.admit_request(ALICE)
            with pytest.raises(TooManyRequests):
                await limiter.admit_request(ALICE)
    messages = [r.getMessage() for r in caplog.records if r.name == redis_limits.__name__]
    # Per limiter (process): one line when it went, one when it came back.
    assert sum("cannot be reached" in m for m in messages) == 2, messages
    assert sum("answers again" in m for m in messages) == 2, messages


async def test_a_live_streams_slot_comes_back_after_a_redis_restart(
    stoppable_redis: OwnRedis,
) -> None:
    async with limiters(
        2, stoppable_redis.url, prefix="s:", streams_per_user=1, slot_refresh_seconds=0.2
    ) as (one, two):
        await one.open_stream(ALICE)
        stoppable_redis.stop()
        stoppable_redis.start()  # the slot is lost with Redis's memory...

        async def counted_again() -> bool:
            try:
                return await two.open_streams(ALICE) == 1
            except OSError:
                return False

        await until(counted_again)  # ...and pushed back by its process
        with pytest.raises(TooManyRequests):
            await two.open_stream(ALICE)


# ---- in the app ----


async def test_apps_with_redis_url_share_the_count(prefix: str, sqlite_database_url: str) -> None:
    # Two apps, like two replicas, and one local user.
    options = {
        "redis_url": REDIS_URL,
        "redis_key_prefix": prefix,
        "rate_limit_per_minute": 3,
        "local_user_id": f"user_{secrets.token_hex(6)}",
    }
    async with (
        local_app(sqlite_database_url, **options) as (one_app, one),
        local_app(sqlite_database_url, **options) as (_, two),
    ):
        assert isinstance(one_app.state.services.limiter, RedisLimiter)
        body = {"type": "threads.list", "params": {}}
        answers = [await http.post("/chatkit", json=body) for http in (one, two, one, two)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert_envelope(answers[-1], 429, "rate_limited")
        assert answers[-1].headers["retry-after"] == "20"


async def test_closed_with_redis_away_is_503_and_stores_nothing(
    sqlite_database_url: str,
) -> None:
    options = {"redis_url": dead_redis_url(), "redis_failure": "closed"}
    async with local_app(sqlite_database_url, **options) as (_, http):
        create = {"type": "threads.create", "params": {"input": user_input("hello")}}
        refused = await http.post("/chatkit", json=create)
        assert_envelope(refused, 503, "limits_unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        assert "Traceback" not in refused.text


async def test_open_with_redis_away_answers(sqlite_database_url: str) -> None:
    options = {"redis_url": dead_redis_url(), "rate_limit_per_minute": 1}
    async with local_app(sqlite_database_url, **options) as (_, http):
        create = {"type": "threads.create", "params": {"input": user_input("hello")}}
        for _ in range(2):  # past the rate: not counted while Redis is away
            answered = await http.post("/chatkit", json=create)
            assert answered.status_code == 200, answered.text
            assert answered.headers["content-type"].startswith("text/event-stream")
        listed = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
        assert len(listed.json()["data"]) == 2


# ---- settings ----


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://:s3cret-pw@host:notaport/0", "redis://"],
)
def test_a_bad_redis_url_is_named_not_quoted(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, redis_url=url)
    text = str(refused.value)
    assert "REDIS_URL is not a Redis URL" in text
    assert "s3cret" not in text and "notaport" not in text


def test_redis_settings_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.redis_url is None
    assert settings.redis_failure == "open"
    assert settings.redis_key_prefix == "chatkit:"
    with pytest.raises(ValidationError, match="REDIS_KEY_PREFIX"):
        Settings(_env_file=None, redis_key_prefix="has space")
    configured = Settings(_env_file=None, redis_url="redis://:pw@cache:6379/2")
    assert "pw" not in repr(configured.redis_url)

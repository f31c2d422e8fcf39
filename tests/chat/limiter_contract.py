"""A reusable contract for any `Limiter` (chat/limits.py): what the in-process limiter
and the Redis one (chat/redis_limits.py) must both do.

Subclass `LimiterContract` (with a name pytest collects, `Test...`) and override the
`limiters` fixture: a function that, called as `limiters(count, **options)`, gives an
async context manager yielding `count` limiters that share one count, as the
processes of one deployment do (the options are the limiter's own keyword arguments):

    class TestMyLimiter(LimiterContract):
        @pytest.fixture
        def limiters(self) -> Limiters:
            return my_limiters

Where a released slot shows only later (the Redis limiter gives it back in a task of
its own), override `assert_released_to` to wait for the count.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from chatkit_backend.api.streaming import EventStreamResponse
from chatkit_backend.context import Owner
from chatkit_backend.errors import TooManyRequests
from tests.support.asgi import drive

ALICE = Owner("acme", "alice")
BOB = Owner("acme", "bob")
ALICE_ELSEWHERE = Owner("other", "alice")
# A tenant and user whose parts, joined carelessly, would be Alice's key.
ALICE_SPLIT_ELSEWHERE = Owner("acme:alice", "")

# `limiters(count, **options)`: see the module's docstring.
Limiters = Callable[..., AbstractAsyncContextManager[list[Any]]]


async def _frames(fail: bool = False, forever: bool = False) -> AsyncIterator[bytes]:
    yield b'data: {"type": "progress_update"}\n\n'
    if fail:
        raise RuntimeError("the model went away")
    while forever:
        await asyncio.sleep(0.01)
        yield b": keep-alive\n\n"


class LimiterContract:
    @pytest.fixture
    def limiters(self) -> Limiters:
        raise NotImplementedError("a subclass gives the limiters under test")

    async def open_streams(self, limiter: Any, owner: Owner) -> int:
        """How many streams `owner` has open, as `limiter` counts them."""
        counted = limiter.open_streams(owner)
        return int(await counted if asyncio.iscoroutine(counted) else counted)

    async def assert_released_to(self, limiter: Any, owner: Owner, count: int) -> None:
        """After a release: `owner` has `count` streams open, at once."""
        assert await self.open_streams(limiter, owner) == count

    async def test_the_request_rate_is_one_count_per_owner(self, limiters: Limiters) -> None:
        async with limiters(2, requests_per_minute=4) as (one, two):
            for limiter in (one, two, one, two):
                await limiter.admit_request(ALICE)
            for limiter in (one, two):
                with pytest.raises(TooManyRequests) as refused:
                    await limiter.admit_request(ALICE)
                assert refused.value.status == 429
                assert refused.value.headers["Retry-After"] == "15"  # one token every 15 s
            # Each owner has a bucket of their own, keyed by tenant and user.
            for owner in (BOB, ALICE_ELSEWHERE, ALICE_SPLIT_ELSEWHERE):
                await two.admit_request(owner)

    async def test_uploads_and_failed_sign_ins_are_counted_once(self, limiters: Limiters) -> None:
        options = {"uploads_per_minute": 2, "failed_auth_per_minute": 2}
        async with limiters(2, **options) as (one, two):
            await one.admit_upload(ALICE)
            await two.admit_upload(ALICE)
            with pytest.raises(TooManyRequests) as refused:
                await one.admit_upload(ALICE)
            assert "at most 2 a minute" in refused.value.message
            await one.admit_request(ALICE)  # uploads have a bucket of their own

            # Checks that do not fail give their token back, however many.
            for limiter in (one, two) * 5:
                await limiter.admit_unverified("192.0.2.1")
                await limiter.release_unverified("192.0.2.1")
            # Two failures, one on each: the address's third attempt is refused on both.
            for limiter in (one, two):
                await limiter.admit_unverified("192.0.2.1")
                await limiter.fail_unverified("192.0.2.1")
            for limiter in (one, two):
                with pytest.raises(TooManyRequests) as refused:
                    await limiter.admit_unverified("192.0.2.1")
                assert "failed sign-ins" in refused.value.message
            await one.admit_unverified("192.0.2.2")

    async def test_stream_slots_are_one_count_and_freed_once(self, limiters: Limiters) -> None:
        async with limiters(2, streams_per_user=2) as (one, two):
            first = await one.open_stream(ALICE)
            second = await two.open_stream(ALICE)
            for limiter in (one, two):
                with pytest.raises(TooManyRequests) as refused:
                    await limiter.open_stream(ALICE)
                assert int(refused.value.headers["Retry-After"]) >= 1
            await two.open_stream(BOB)  # others are not blocked
            assert await self.open_streams(one, ALICE) == 2

            first.release()
            first.release()  # harmless: does not free the other stream's slot
            await self.assert_released_to(two, ALICE, 1)
            third = await two.open_stream(ALICE)
            with pytest.raises(TooManyRequests):
                await one.open_stream(ALICE)
            second.release()
            third.release()
            await self.assert_released_to(one, ALICE, 0)

    @pytest.mark.parametrize(
        ("frames", "disconnect_after"),
        [
            ({}, None),  # ends normally
            ({"fail": True}, None),  # fails after starting
            ({"forever": True}, 0.05),  # the client goes away
        ],
        ids=["done", "failed", "disconnected"],
    )
    async def test_the_slot_is_freed_however_the_stream_ends(
        self, limiters: Limiters, frames: dict[str, bool], disconnect_after: float | None
    ) -> None:
        async with limiters(2, streams_per_user=1) as (one, other):
            lease = await one.open_stream(ALICE)
            response = EventStreamResponse(_frames(**frames), on_close=lease.release)
            sent = [
                message
                for _, message in await asyncio.wait_for(
                    drive(response, disconnect_after), timeout=5
                )
            ]
            assert sent[0]["type"] == "http.response.start"
            if frames.get("fail"):
                assert b'"type":"error"' in b"".join(m.get("body", b"") for m in sent)
            await self.assert_released_to(other, ALICE, 0)
            (await other.open_stream(ALICE)).release()

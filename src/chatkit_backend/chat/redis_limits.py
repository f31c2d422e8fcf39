"""The `Limiter` counted in Redis (REDIS_URL): the same limits whatever the number of
workers and replicas that share it.

Each decision is one Lua script, run atomically by Redis and stamped with Redis's clock
(`TIME`), so replicas' clocks need not agree:

- rates (requests, uploads per owner; failed sign-ins per address) are the token buckets
  of `InProcessLimiter`, one hash per key, expiring once full again;
- stream slots are one sorted set per owner: a member per open stream, named by this
  process (its lease holder id) and a counter, scored with its expiry. The process
  pushes its live slots' expiry forward every `SLOT_REFRESH_SECONDS` (one script per
  owner, pipelined: one round trip per beat, however many streams) and removes a
  slot when its stream ends. A process that dies stops pushing: its slots lapse within
  `SLOT_TTL_SECONDS`, and taking a slot first drops the lapsed ones.

When Redis cannot be reached, REDIS_FAILURE says what happens: `open` (the default)
lets the request through, `closed` refuses it with 503 and Retry-After. Either way the
outage is logged once (and its end once), every decision made without Redis counts in
`chatkit_limits_backend_errors_total`, and Redis is tried again after
`RETRY_AFTER_FAILURE_SECONDS`, so requests do not each wait for a dead server and the
limits come back without a restart.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from chatkit_backend.chat.limits import (
    StreamLease,
    too_many_failures,
    too_many_requests,
    too_many_streams,
    too_many_uploads,
)
from chatkit_backend.context import Owner
from chatkit_backend.errors import Unavailable
from chatkit_backend.ops.metrics import count_limits_backend_error
from chatkit_backend.settings import Settings

logger = logging.getLogger(__name__)

# A slot whose process stopped pushing it forward (died) is free after this.
SLOT_TTL_SECONDS = 10.0
# Several pushes per TTL: a late or failed one does not lose a live stream's slot.
SLOT_REFRESH_SECONDS = 2.0
# How long a request waits for Redis before it is decided without it.
REDIS_TIMEOUT_SECONDS = 1.0
# After a failure, requests are decided without Redis for this long, then it is tried
# again: a server that is down costs one attempt a second, not one per request.
RETRY_AFTER_FAILURE_SECONDS = 1.0
# The Retry-After of a 503 while Redis is away (REDIS_FAILURE=closed).
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# Longest a clean shutdown waits to give this process's slots back.
RELEASE_TIMEOUT_SECONDS = 3.0

Failure = Literal["open", "closed"]

# Take (ARGV[3] = "take"), look at (ARGV[3] = "peek": would a take be granted? nothing
# written) or give back (anything else) one token of a bucket of ARGV[1] tokens refilled
# at ARGV[2] tokens a millisecond. Returns 0 when granted, else the milliseconds until a
# token is free.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if ARGV[3] == 'peek' then
  if tokens >= 1 then
    return 0
  end
  return math.ceil((1 - tokens) / rate)
end
if ARGV[3] == 'take' then
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) / rate)
  end
else
  tokens = math.min(capacity, tokens + 1)
end
if tokens >= capacity then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
end
return wait
"""

# Drop lapsed slots, then add ARGV[3] expiring in ARGV[2] ms unless ARGV[1] are taken.
# Returns 1 when added.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Push the expiry of the slots ARGV[2..] forward by ARGV[1] ms (adding any Redis lost,
# as after its restart: they are streams that are still open).
_KEEP_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
"""

# The slots in use now (lapsed ones dropped).
_COUNT_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisUnreachable(Exception):
    """Redis did not answer, or is known to be down: decide without it."""


def redis_client(url: str) -> "Redis":
    """A client that gives up quickly: a request decided without Redis beats a request
    that hangs on it. One retry, on a broken connection only (the pooled connection of
    a Redis that restarted), where nothing was run."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return client


def _owner_part(owner: Owner) -> str:
    # Length-prefixed: tenant "a:b" and user "c" are not tenant "a" and user "b:c".
    return f"{len(owner.tenant_id)}:{owner.tenant_id}:{owner.user_id}"


class RedisLimiter:
    """The `Limiter` whose counts live in Redis; see the module's docstring."""

    def __init__(
        self,
        client: "Redis",
        *,
        prefix: str,
        holder: str,
        requests_per_minute: int,
        streams_per_user: int,
        uploads_per_minute: int = 0,
        failed_auth_per_minute: int = 0,
        failure: Failure = "open",
        slot_ttl_seconds: float = SLOT_TTL_SECONDS,
        slot_refresh_seconds: float = SLOT_REFRESH_SECONDS,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.holder = holder
        self.requests_per_minute = requests_per_minute
        self.streams_per_user = streams_per_user
        self.uploads_per_minute = uploads_per_minute
        self.failed_auth_per_minute = failed_auth_per_minute
        self.failure = failure
        self.slot_ttl_ms = round(slot_ttl_seconds * 1000)
        self.slot_refresh_seconds = slot_refresh_seconds
        self._bucket = client.register_script(_BUCKET)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._keep_slots = client.register_script(_KEEP_SLOTS)
        self._count_slots = client.register_script(_COUNT_SLOTS)
        self._slot_numbers = itertools.count()
        # This process's open streams: key -> members, pushed forward while they last.
        self._live: dict[str, set[str]] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._down = False
        self._retry_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, holder: str) -> "RedisLimiter":
        assert settings.redis_url is not None
        return cls(
            redis_client(settings.redis_url.get_secret_value()),
            prefix=settings.redis_key_prefix,
            holder=holder,
            requests_per_minute=settings.rate_limit_per_minute,
            streams_per_user=settings.max_streams_per_user,
            uploads_per_minute=settings.attachment_uploads_per_minute,
            failed_auth_per_minute=settings.failed_auth_per_minute,
            failure=settings.redis_failure,
        )

    # ---- the Limiter protocol ----

    async def admit_request(self, owner: Owner) -> None:
        wait = await self._take("request", f"rate:{_owner_part(owner)}", self.requests_per_minute)
        if wait > 0:
            raise too_many_requests(wait)

    async def admit_upload(self, owner: Owner) -> None:
        if not self.uploads_per_minute:
            return
        wait = await self._take("upload", f"uploads:{_owner_part(owner)}", self.uploads_per_minute)
        if wait > 0:
            raise too_many_uploads(self.uploads_per_minute, wait)

    # Unlike the in-process limiter (take first, give back on success), a check only
    # looks and a failure takes: one round trip for a good credential, not two. The
    # price: failures checked at the same moment may pass a limit reached meanwhile,
    # by at most the number in flight.
    async def admit_unverified(self, address: str) -> None:
        if not self.failed_auth_per_minute:
            return
        key = f"auth:{address}"
        wait = await self._take("auth", key, self.failed_auth_per_minute, action="peek")
        if wait > 0:
            raise too_many_failures(wait)

    async def release_unverified(self, address: str) -> None:
        # Nothing was taken.
        return

    async def fail_unverified(self, address: str) -> None:
        if not self.failed_auth_per_minute:
            return
        key, per_minute = self.prefix + f"auth:{address}", self.failed_auth_per_minute
        # Counting a failure never refuses anything: decided as if REDIS_FAILURE were open.
        with contextlib.suppress(RedisUnreachable):
            await self._call(
                "auth", lambda: self._bucket(keys=[key], args=_bucket_args(per_minute, "take"))
            )

    async def open_stream(self, owner: Owner) -> StreamLease:
        key = self.prefix + f"streams:{_owner_part(owner)}"
        member = f"{self.holder}:{next(self._slot_numbers)}"
        args: list[str | int | float] = [self.streams_per_user, self.slot_ttl_ms, member]
        try:
            taken = await self._call("stream", lambda: self._take_slot(keys=[key], args=args))
        except RedisUnreachable:
            if self.failure == "closed":
                raise self._unavailable() from None
            # Counted from the next push on, once Redis is back: the stream is open.
            taken = 1
        if not int(taken):
            raise too_many_streams(self.streams_per_user)
        self._live.setdefault(key, set()).add(member)
        return StreamLease(lambda: self._release(key, member))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Push this process's slots forward while the app serves; at the end give back
        what its streams left (they have ended by then) and close the connections."""
        keeper = asyncio.create_task(self._keep_alive())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._give_everything_back()
            await self.client.aclose()

    # ---- for tests and diagnostics ----

    async def open_streams(self, owner: Owner) -> int:
        """How many streams the owner has open, in every process."""
        key = self.prefix + f"streams:{_owner_part(owner)}"
        return int(await self._count_slots(keys=[key]))

    # ---- inside ----

    async def _take(
        self,
        operation: str,
        key: str,
        per_minute: int,
        action: Literal["take", "peek"] = "take",
    ) -> float:
        """Take (or only look for) a token of `key`'s bucket: 0 when granted, else
        seconds to wait."""
        keys, args = [self.prefix + key], _bucket_args(per_minute, action)
        try:
            wait_ms = await self._call(operation, lambda: self._bucket(keys=keys, args=args))
        except RedisUnreachable:
            if self.failure == "closed":
                raise self._unavailable() from None
            return 0.0
        return int(wait_ms) / 1000

    async def _call(self, operation: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis call, or raise `RedisUnreachable`; outages noted once."""
        if self._down and time.monotonic() < self._retry_at:
            count_limits_backend_error(operation)
            raise RedisUnreachable
        try:
            result = await run()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            raise RedisUnreachable from None
        if self._down:
            self._down = False
            logger.warning("Redis answers again: limits are counted there again")
        return result

    def _failed(self, operation: str, exc: BaseException) -> None:
        count_limits_backend_error(operation)
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        if not self._down:
            self._down = True
            # The type only: a message may name the server; the URL may hold a password.
            logger.warning(
                "Redis cannot be reached (%s): requests are %s until it answers "
                "(REDIS_FAILURE=%s); logged once per outage",
                type(exc).__name__,
                "let through unlimited" if self.failure == "open" else "refused with 503",
                self.failure,
            )

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            "The server cannot check its limits right now; try again in a moment",
            "limits_unavailable",
            retry_after_seconds=UNAVAILABLE_RETRY_AFTER_SECONDS,
        )

    def _release(self, key: str, member: str) -> None:
        members = self._live.get(key)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self._live[key]
        # Called where the stream ends, which cannot wait: removed in the background.
        # A removal that fails leaves the slot to lapse, no longer pushed forward.
        try:
            task = asyncio.get_running_loop().create_task(self._remove({key: {member}}))
        except RuntimeError:
            return
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _remove(self, slots: dict[str, set[str]]) -> None:
        with contextlib.suppress(RedisUnreachable, RedisError, OSError):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, members in slots.items():
                    pipe.zrem(key, *members)
                await self._call("release", pipe.execute)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.slot_refresh_seconds)
            if not self._live:
                continue
            with contextlib.suppress(RedisUnreachable):
                await self._push(list(self._live.items()))

    async def _push(self, slots: Iterable[tuple[str, set[str]]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, members in slots:
                await self._keep_slots(keys=[key], args=[self.slot_ttl_ms, *members], client=pipe)
            await self._call("refresh", pipe.execute)

    async def _give_everything_back(self) -> None:
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=RELEASE_TIMEOUT_SECONDS)
        left, self._live = self._live, {}
        if left:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                    await self._remove(left)


def _bucket_args(
    per_minute: int, action: Literal["take", "peek", "give"]
) -> list[str | int | float]:
    """A bucket's capacity, its refill in tokens a millisecond, and what to do."""
    return [per_minute, per_minute / 60_000, action]

"""Abuse limits: requests per minute and concurrent streams per user, and failed
authentication per client address.

Two implementations behind the `Limiter` protocol, chosen in app.py: `InProcessLimiter`
counts in this process (with several workers or replicas each counts on its own, so a
user can reach the limits once per process), `RedisLimiter` (chat/redis_limits.py, with
REDIS_URL) counts in Redis, once for every process that shares it.
"""

import ipaddress
import math
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chatkit_backend.context import Owner
from chatkit_backend.errors import TooManyRequests

# A refused stream cannot know when the user's other streams end; this is a hint.
STREAM_RETRY_AFTER_SECONDS = 2
# How often idle buckets are dropped, so the table does not grow with every user seen.
_PRUNE_EVERY_SECONDS = 60.0
# One IPv6 subscriber usually holds a whole /64: counted per address, each of its 2^64
# addresses would get a bucket of its own.
_IPV6_PREFIX = 64
# The key of a request whose peer address is unknown (no `client` in the ASGI scope).
UNKNOWN_ADDRESS = "unknown"

Key = TypeVar("Key", bound=Hashable)


# The refusals, worded the same whichever limiter counts.
def too_many_requests(wait: float) -> TooManyRequests:
    return TooManyRequests("Too many requests; try again shortly", math.ceil(wait))


def too_many_streams(per_user: int) -> TooManyRequests:
    return TooManyRequests(
        f"You already have {per_user} answers in progress; wait for one to finish",
        retry_after_seconds=STREAM_RETRY_AFTER_SECONDS,
    )


def too_many_uploads(per_minute: int, wait: float) -> TooManyRequests:
    return TooManyRequests(
        f"Too many uploads: at most {per_minute} a minute; try again shortly", math.ceil(wait)
    )


def too_many_failures(wait: float) -> TooManyRequests:
    return TooManyRequests(
        "Too many failed sign-ins from your address; try again shortly", math.ceil(wait)
    )


class StreamLease:
    """One open stream of one user. Releasing twice is harmless."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


class Limiter(Protocol):
    """What the API layer needs from a limiter.

    Asynchronous, since a shared limiter asks another server. Any method may also raise
    `Unavailable` (503) when the counts cannot be reached and the limiter is set to
    refuse then (REDIS_FAILURE=closed).
    """

    async def admit_request(self, owner: Owner) -> None:
        """Count one request; raise `TooManyRequests` when the owner is over the rate."""

    async def open_stream(self, owner: Owner) -> StreamLease:
        """Take a stream slot; raise `TooManyRequests` when all are in use. The lease's
        `release` must be called however the stream ends."""

    async def admit_upload(self, owner: Owner) -> None:
        """Count one new attachment (on top of its request); raise `TooManyRequests` when
        the owner is over the upload rate."""

    async def admit_unverified(self, address: str) -> None:
        """A request from `address` whose credentials are not checked yet: raise
        `TooManyRequests` when the address has failed too often, before anything is
        checked. Then exactly one of `release_unverified` or `fail_unverified` follows."""

    async def release_unverified(self, address: str) -> None:
        """The request `admit_unverified` let through did not fail authentication (its
        credentials held, or they could not be checked): it does not count."""

    async def fail_unverified(self, address: str) -> None:
        """The request `admit_unverified` let through failed authentication: it counts."""

    def running(self) -> AbstractAsyncContextManager[None]:
        """What runs while the app serves (the app's lifespan): for a shared limiter,
        keeping this process's stream slots alive, and giving them back at the end."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter(Generic[Key]):
    """A token bucket per key (a user, an address): `per_minute` at once, refilled evenly."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[Key, _Bucket] = {}
        self._pruned_at = clock()

    def take(self, key: Key) -> float:
        """Take one token; return 0 when granted, else the seconds until one is free."""
        now = self.clock()
        self._prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def give_back(self, key: Key) -> None:
        """Return a token `take` granted (never above capacity)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.capacity, bucket.tokens + 1.0)

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < _PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        # A bucket that has refilled completely is the same as no bucket.
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class StreamSlots:
    """At most `per_user` open streams per user."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[Owner, int] = {}

    def acquire(self, owner: Owner) -> StreamLease | None:
        if self._open.get(owner, 0) >= self.per_user:
            return None
        self._open[owner] = self._open.get(owner, 0) + 1
        return StreamLease(lambda: self._release(owner))

    def _release(self, owner: Owner) -> None:
        remaining = self._open.get(owner, 0) - 1
        if remaining > 0:
            self._open[owner] = remaining
        else:
            self._open.pop(owner, None)

    def open_count(self, owner: Owner) -> int:
        return self._open.get(owner, 0)


def address_key(host: str | None) -> str:
    """What failed authentication is counted by: the client's IPv4 address, or its IPv6
    /64 network; a host that is no address (a Unix socket's) as it is."""
    if not host:
        return UNKNOWN_ADDRESS
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


class FailedAuthLimiter:
    """At most `per_minute` failed authentications per client address (a token bucket).

    Every unverified request takes a token before its credentials are checked, and one
    that does not fail gives it back (`release`): only failures use up the bucket, and requests
    checked at the same moment cannot all slip past a limit already reached. With
    `per_minute` 0 nothing is counted.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate: RateLimiter[str] | None = RateLimiter(per_minute, clock) if per_minute else None

    def admit(self, address: str) -> None:
        if self.rate is None:
            return
        wait = self.rate.take(address)
        if wait > 0:
            raise too_many_failures(wait)

    def release(self, address: str) -> None:
        if self.rate is not None:
            self.rate.give_back(address)


class InProcessLimiter:
    """The `Limiter` for one process: a rate limiter and stream slots, keyed by user, and
    failed authentication, keyed by address."""

    def __init__(
        self,
        requests_per_minute: int,
        streams_per_user: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        failed_auth_per_minute: int = 0,
        uploads_per_minute: int = 0,
    ) -> None:
        self.rate: RateLimiter[Owner] = RateLimiter(requests_per_minute, clock)
        self.streams = StreamSlots(streams_per_user)
        self.failed_auth = FailedAuthLimiter(failed_auth_per_minute, clock)
        # Uploads write to disk, which requests do not: a bucket of their own, far
        # smaller. 0: uploads count only as requests.
        self.uploads: RateLimiter[Owner] | None = (
            RateLimiter(uploads_per_minute, clock) if uploads_per_minute else None
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # Nothing to keep alive: the counts end with the process.
        yield

    async def admit_request(self, owner: Owner) -> None:
        wait = self.rate.take(owner)
        if wait > 0:
            raise too_many_requests(wait)

    async def open_stream(self, owner: Owner) -> StreamLease:
        lease = self.streams.acquire(owner)
        if lease is None:
            raise too_many_streams(self.streams.per_user)
        return lease

    def open_streams(self, owner: Owner) -> int:
        """How many streams the caller has open (for tests and diagnostics)."""
        return self.streams.open_count(owner)

    async def admit_upload(self, owner: Owner) -> None:
        if self.uploads is None:
            return
        wait = self.uploads.take(owner)
        if wait > 0:
            raise too_many_uploads(int(self.uploads.capacity), wait)

    async def admit_unverified(self, address: str) -> None:
        self.failed_auth.admit(address)

    async def release_unverified(self, address: str) -> None:
        self.failed_auth.release(address)

    async def fail_unverified(self, address: str) -> None:
        # Counted already: `admit_unverified` took the token.
        return

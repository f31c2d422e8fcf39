"""Admission control: streams this process can finish are admitted; the rest are refused
with 503 and `Retry-After` before their first byte, never failed half-way.

Every stream needs the database at its start and at its end. Under a burst the pool
runs short, and a stream that waited past the pool's timeout used to fail mid-answer.
Now a turn's transactions pass a gate as wide as the pool, where they wait as long as
they must: a stream that was admitted finishes and is stored. What bounds the wait is
admission: at most `max_open` streams at once, at most `max_waiting` of them still
waiting for their first transaction, and none while the event loop lags behind by more
than `lag_limit` seconds (a process that far behind cannot start more answers well).
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatkit_backend.errors import Unavailable
from chatkit_backend.ops.metrics import (
    EVENT_LOOP_LAG,
    STREAMS_REFUSED,
    STREAMS_WAITING,
    count_error,
)

logger = logging.getLogger(__name__)

LAG_SAMPLE_SECONDS = 0.25
OVERLOADED_MESSAGE = "The server is busy answering others; try again in a moment"


class Admission:
    """Counts this process's streams and the database gate they pass."""

    def __init__(
        self, max_open: int, max_waiting: int, lag_limit: float, database_slots: int
    ) -> None:
        self.max_open = max_open
        self.max_waiting = max_waiting
        self.lag_limit = lag_limit
        self.open = 0
        self.waiting = 0
        self.lag = 0.0
        self.gate = asyncio.Semaphore(database_slots)

    def admit(self) -> "Ticket":
        """A place for one more stream, or `Unavailable` (503) with a retry hint."""
        reason = None
        if self.open >= self.max_open:
            reason = "open"
        elif self.waiting >= self.max_waiting:
            reason = "waiting"
        elif self.lag_limit and self.lag > self.lag_limit:
            reason = "lag"
        if reason is not None:
            STREAMS_REFUSED.labels(reason=reason).inc()
            count_error("overloaded")
            raise Unavailable(OVERLOADED_MESSAGE, "overloaded", self._retry_after())
        self.open += 1
        self.waiting += 1
        STREAMS_WAITING.set(self.waiting)
        return Ticket(self)

    @asynccontextmanager
    async def database(self) -> AsyncIterator[None]:
        """Hold one of the gate's places for a turn's transaction."""
        async with self.gate:
            yield

    async def watch_lag(self) -> None:
        """Measure how late the event loop wakes up (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            self.lag = max(0.0, loop.time() - started - LAG_SAMPLE_SECONDS)
            EVENT_LOOP_LAG.set(self.lag)

    def _retry_after(self) -> int:
        # Long enough for the streams ahead to make room, short enough to feel live.
        return max(1, min(30, math.ceil(self.lag) + 1 + self.waiting // 200))


class Ticket:
    """One admitted stream: waiting for its first transaction, then open until closed."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._waiting = True
        self._open = True

    def started(self) -> None:
        """Its first transaction is done (or it was refused there)."""
        if self._waiting:
            self._waiting = False
            self.admission.waiting -= 1
            STREAMS_WAITING.set(self.admission.waiting)

    def close(self) -> None:
        """The stream ended, however. Harmless twice."""
        self.started()
        if self._open:
            self._open = False
            self.admission.open -= 1

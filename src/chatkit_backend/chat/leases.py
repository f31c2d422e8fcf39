"""One answer at a time per thread, across workers and replicas.

A streamed turn claims its thread's lease in its first transaction (store/turns.py), or
is refused with 409 before its stream starts; the lease is renewed while the answer
runs and released by the turn's last transaction. If that transaction fails, the
lease is released on its own, retried in the background while the database is away;
if the process dies, the lease runs out after `LEASE_SECONDS`.
"""

import asyncio
import logging
import secrets
from datetime import timedelta

import anyio

from chatkit_backend.store.turns import Lease, TurnStore

logger = logging.getLogger(__name__)

# How long a thread stays locked after its process died: long enough to ride out a
# renewal that fails once or twice, short enough that the user can soon write again.
LEASE_SECONDS = 30.0
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3
# Longest a release may wait for the database; the lease runs out by itself anyway.
RELEASE_TIMEOUT_SECONDS = 5.0
RELEASE_RETRY_SECONDS = 1.0
# Background work, referenced so it is not collected while running.
_TASKS: set[asyncio.Task[None]] = set()


def new_lease(seconds: float = LEASE_SECONDS) -> Lease:
    return Lease(token=secrets.token_hex(16), ttl=timedelta(seconds=seconds))


class LeaseKeeper:
    """Renews a held lease in the background until stopped."""

    def __init__(
        self,
        turns: TurnStore,
        thread_id: str,
        lease: Lease,
        renew_every: float = RENEW_EVERY_SECONDS,
    ) -> None:
        self.turns = turns
        self.thread_id = thread_id
        self.lease = lease
        self.renew_every = renew_every
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_until_stopped())

    def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()

    async def _renew_until_stopped(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                still_ours = await self.turns.renew(self.thread_id, self.lease)
            except Exception as exc:
                # The database may be back before the lease runs out; keep trying.
                logger.warning("could not renew the answer lease: %s", type(exc).__name__)
                continue
            if not still_ours:
                logger.warning("the answer lease of thread %s ran out", self.thread_id)
                return

    async def release(self) -> None:
        """Free the thread without the turn's last transaction. Safe while cancelled."""
        self.stop()
        with anyio.move_on_after(RELEASE_TIMEOUT_SECONDS, shield=True):
            try:
                await self.turns.release(self.thread_id, self.lease)
                return
            except Exception as exc:
                logger.warning("could not release the answer lease: %s", type(exc).__name__)
        # The database is away: keep trying in the background, so the thread is free
        # as soon as it is back rather than when the lease runs out.
        retry = asyncio.create_task(self._release_when_possible())
        _TASKS.add(retry)
        retry.add_done_callback(_TASKS.discard)

    async def _release_when_possible(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease.ttl.total_seconds()
        while loop.time() < deadline:
            await asyncio.sleep(RELEASE_RETRY_SECONDS)
            try:
                await self.turns.release(self.thread_id, self.lease)
            except Exception as exc:  # still away; the lease runs out by itself at the end
                logger.debug("answer lease release retry failed: %s", type(exc).__name__)
            else:
                return

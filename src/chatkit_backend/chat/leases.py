"""One answer at a time per thread, across workers and replicas.

A streamed turn claims its thread's lease in its first transaction (store/turns.py), or
is refused with 409 before its stream starts; the lease is released by the turn's last
transaction. If that transaction fails, the lease is released on its own, retried in
the background while the database is away.

The lease names its holder, this process, which beats its row in `holders` while it
runs (`holder_heartbeat`). If the process dies, its beats stop and its leases are free
`HOLDER_TIMEOUT_SECONDS` (5 s) later; if it stops cleanly, at once.

Leases are not renewed per stream: they used to be (every 10 s, to run out 30 s after a
crash), but the heartbeat says the same for every stream of the process in one statement,
and sooner. What remains of a lease's own end is a backstop, `LEASE_SECONDS`.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio

from chatkit_backend.store.turns import HOLDER_TIMEOUT_SECONDS, Lease, TurnStore

logger = logging.getLogger(__name__)

# A lease's end whatever its holder does: a thread stays locked no longer than this by
# a lease its live holder failed to release, and an answer running longer than this
# (none should: every model request times out) no longer keeps others off its thread.
LEASE_SECONDS = 15 * 60.0
# Several beats per holder timeout: a beat or two may be slow or fail without the
# process's leases being taken for free.
BEAT_EVERY_SECONDS = HOLDER_TIMEOUT_SECONDS / 5
# Longest a release may wait for the database; it is retried in the background after.
RELEASE_TIMEOUT_SECONDS = 5.0
RELEASE_RETRY_SECONDS = 1.0
# Longest a clean shutdown waits to remove this process's holder row (else its leases
# free when its beats are seen to have stopped).
FORGET_TIMEOUT_SECONDS = 5.0
# Releases retried in the background, each with its store: referenced so they are not
# collected while running, and ended when their store's process stops.
_RETRIES: dict[asyncio.Task[None], TurnStore] = {}


def new_lease(seconds: float = LEASE_SECONDS) -> Lease:
    return Lease(token=secrets.token_hex(16), ttl=timedelta(seconds=seconds))


def new_holder_id() -> str:
    """This process's name as a lease holder: random, new at every start."""
    return secrets.token_hex(16)


@asynccontextmanager
async def holder_heartbeat(
    turns: TurnStore, beat_every: float = BEAT_EVERY_SECONDS
) -> AsyncIterator[None]:
    """Beat this process's holder row while the block runs; remove it at the end."""
    try:
        # Before the first request: a lease naming a holder that has not beaten yet
        # is free to anyone else.
        await turns.beat()
        # Rows of processes that died: their leases are free either way.
        await turns.forget_silent_holders()
    except Exception as exc:
        # The database may be away at start; the beats below go on trying.
        logger.warning("could not register as a lease holder: %s", type(exc).__name__)
    beating = asyncio.create_task(_beat_until_cancelled(turns, beat_every))
    try:
        yield
    finally:
        # Leases still held are freed with the holder row below, or seconds after it.
        stopping = [beating, *(task for task, store in _RETRIES.items() if store is turns)]
        for task in stopping:
            task.cancel()
        for task in stopping:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with anyio.move_on_after(FORGET_TIMEOUT_SECONDS, shield=True):
            try:
                await turns.forget_holder()
            except Exception as exc:
                logger.warning("could not remove this lease holder: %s", type(exc).__name__)


async def _beat_until_cancelled(turns: TurnStore, beat_every: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(beat_every)
        try:
            await turns.beat()
        except Exception as exc:
            # Logged once per outage, not once a second.
            if not failing:
                logger.warning("could not beat as a lease holder: %s", type(exc).__name__)
            failing = True
            continue
        if failing:
            logger.info("beating as a lease holder again")
            failing = False


async def release(turns: TurnStore, thread_id: str, lease: Lease) -> None:
    """Free the thread without the turn's last transaction. Safe while cancelled."""
    with anyio.move_on_after(RELEASE_TIMEOUT_SECONDS, shield=True):
        try:
            await turns.release(thread_id, lease)
            return
        except Exception as exc:
            logger.warning("could not release the answer lease: %s", type(exc).__name__)
    # The database is away: keep trying in the background, so the thread is free as
    # soon as it is back rather than when the lease runs out.
    retry = asyncio.create_task(_release_when_possible(turns, thread_id, lease))
    _RETRIES[retry] = turns
    retry.add_done_callback(_forget_retry)


def _forget_retry(task: asyncio.Task[None]) -> None:
    _RETRIES.pop(task, None)


async def _release_when_possible(turns: TurnStore, thread_id: str, lease: Lease) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lease.ttl.total_seconds()
    while loop.time() < deadline:
        await asyncio.sleep(RELEASE_RETRY_SECONDS)
        try:
            await turns.release(thread_id, lease)
        except Exception as exc:  # still away; the lease runs out by itself at the end
            logger.debug("answer lease release retry failed: %s", type(exc).__name__)
        else:
            return

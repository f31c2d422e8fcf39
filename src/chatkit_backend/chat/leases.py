"""One answer at a time per thread, across workers and replicas.

A streaming request takes the thread's lease (store/leases.py) before its stream
starts, or is refused with 409; the lease is renewed while the answer runs and
released however the stream ends (done, error, client gone, shutdown). If the
process dies, the lease runs out after `LEASE_SECONDS`.
"""

import asyncio
import logging
import secrets
from datetime import timedelta

import anyio

from chatkit_backend.context import RequestContext
from chatkit_backend.errors import ThreadBusy
from chatkit_backend.store.leases import ThreadLeases

logger = logging.getLogger(__name__)

# How long a thread stays locked after its process died: long enough to ride out a
# renewal that fails once or twice, short enough that the user can soon write again.
LEASE_SECONDS = 30.0
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3
# Longest a release may wait for the database; the lease runs out by itself anyway.
RELEASE_TIMEOUT_SECONDS = 5.0
RELEASE_RETRY_SECONDS = 1.0
# Background release retries, referenced so they are not collected while running.
_RETRIES: set[asyncio.Task[None]] = set()


class AnswerLock:
    """A held lease: renewed in the background until `release()`."""

    def __init__(
        self, leases: ThreadLeases, thread_id: str, token: str, ttl: float, renew_every: float
    ) -> None:
        self.leases = leases
        self.thread_id = thread_id
        self.token = token
        self.ttl = timedelta(seconds=ttl)
        self.renew_every = renew_every
        self._released = False
        self._renewer = asyncio.create_task(self._renew_until_released())

    async def _renew_until_released(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                still_ours = await self.leases.renew(self.thread_id, self.token, self.ttl)
            except Exception as exc:
                # The database may be back before the lease runs out; keep trying.
                logger.warning("could not renew the answer lease: %s", type(exc).__name__)
                continue
            if not still_ours:
                logger.warning("the answer lease of thread %s ran out", self.thread_id)
                return

    async def release(self) -> None:
        """Stop renewing and free the thread. Safe to call twice, and while cancelled."""
        if self._released:
            return
        self._released = True
        self._renewer.cancel()
        with anyio.move_on_after(RELEASE_TIMEOUT_SECONDS, shield=True):
            try:
                await self.leases.release(self.thread_id, self.token)
                return
            except Exception as exc:
                logger.warning("could not release the answer lease: %s", type(exc).__name__)
        # The database is away: keep trying in the background, so the thread is free
        # as soon as it is back rather than when the lease runs out.
        retry = asyncio.create_task(self._release_when_possible())
        _RETRIES.add(retry)
        retry.add_done_callback(_RETRIES.discard)

    async def _release_when_possible(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.ttl.total_seconds()
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RELEASE_RETRY_SECONDS)
            try:
                await self.leases.release(self.thread_id, self.token)
            except Exception as exc:  # still away; the lease runs out by itself at the end
                logger.debug("answer lease release retry failed: %s", type(exc).__name__)
            else:
                return


class AnswerLocks:
    """Hands out `AnswerLock`s; refuses a thread that is answering already."""

    def __init__(
        self,
        leases: ThreadLeases,
        ttl: float = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY_SECONDS,
    ) -> None:
        self.leases = leases
        self.ttl = ttl
        self.renew_every = renew_every

    async def acquire(self, thread_id: str, context: RequestContext) -> AnswerLock:
        """The thread's lock, or `ThreadBusy` (409) while another answer runs there."""
        token = secrets.token_hex(16)
        if not await self.leases.take(thread_id, context, token, timedelta(seconds=self.ttl)):
            raise ThreadBusy(
                "This thread is still answering an earlier message; "
                "wait for that answer to finish, or stop it, then send again"
            )
        return AnswerLock(self.leases, thread_id, token, self.ttl, self.renew_every)

"""Answer leases on thread rows: at most one answer per thread, across every process.

Why a lease row and not PostgreSQL advisory locks: a session-level advisory lock lives
on one connection, so every open stream would pin a pooled connection for as long as
the model talks (and a dedicated lock pool would cap the number of open streams).
Here each step is one short UPDATE on a pooled connection: taking the lease, renewing
it while the answer runs, releasing it at the end. The same statements work on SQLite,
including several processes on one database file. A crashed process simply stops
renewing, and its lease runs out.

Times come from the application's clock (UTC); replicas' clocks only need to agree to
within a small part of the lease's length.
"""

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.context import RequestContext
from chatkit_backend.store.tables import THREADS, owned


class ThreadLeases:
    """Take, renew and release the answer lease of a thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def take(
        self, thread_id: str, context: RequestContext, token: str, ttl: timedelta
    ) -> bool:
        """Take the lease if it is free or has run out; False when someone holds it.

        One statement: on PostgreSQL a competing UPDATE waits for this row, then sees
        the new lease and matches nothing; SQLite runs one writer at a time.
        """
        now = datetime.now(UTC)
        query = (
            update(THREADS)
            .where(
                THREADS.c.id == thread_id,
                owned(THREADS, context.owner),
                or_(THREADS.c.answer_lease_until.is_(None), THREADS.c.answer_lease_until < now),
            )
            .values(answer_lease_token=token, answer_lease_until=now + ttl)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def renew(self, thread_id: str, token: str, ttl: timedelta) -> bool:
        """Push the lease's end out; False when it is no longer ours."""
        query = (
            update(THREADS)
            .where(THREADS.c.id == thread_id, THREADS.c.answer_lease_token == token)
            .values(answer_lease_until=datetime.now(UTC) + ttl)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def release(self, thread_id: str, token: str) -> None:
        """Free the lease, if it is still ours (an expired one may have been taken)."""
        query = (
            update(THREADS)
            .where(THREADS.c.id == thread_id, THREADS.c.answer_lease_token == token)
            .values(answer_lease_token=None, answer_lease_until=None)
        )
        async with self.engine.begin() as conn:
            await conn.execute(query)

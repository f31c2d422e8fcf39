"""Operator queries across owners: export one thread, purge old ones, totals by tenant.

These run from the `chatkit-backend` command, never from a request: they are the only
store code that reads without an owner, because the operator is not a ChatKit user.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatkit_backend.store.tables import ATTACHMENTS, FEEDBACK, ITEMS, THREADS, USAGE

PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    id: str
    tenant_id: str
    user_id: str
    created_at: datetime
    data: str


@dataclass(frozen=True, slots=True)
class PurgeResult:
    threads: int
    items: int
    attachment_ids: list[str]


@dataclass(frozen=True, slots=True)
class TenantTotals:
    tenant_id: str
    threads: int = 0
    items: int = 0
    attachments: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Maintenance:
    """The operator's view of the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def thread(self, thread_id: str) -> ThreadRecord | None:
        columns = ("id", "tenant_id", "user_id", "created_at", "data")
        query = select(*(THREADS.c[name] for name in columns)).where(THREADS.c.id == thread_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else ThreadRecord(*row)

    async def items(self, thread_id: str) -> AsyncIterator[str]:
        """The thread's items as stored (the SDK's JSON), oldest first, a page at a time."""
        last_seq = -1
        while True:
            query = (
                select(ITEMS.c.seq, ITEMS.c.data)
                .where(ITEMS.c.thread_id == thread_id, ITEMS.c.seq > last_seq)
                .order_by(ITEMS.c.seq)
                .limit(PAGE_SIZE)
            )
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield row.data
            if len(rows) < PAGE_SIZE:
                return
            last_seq = rows[-1].seq

    async def purge(
        self, cutoff: datetime, tenant_id: str | None = None, dry_run: bool = False
    ) -> PurgeResult:
        """Delete threads with no activity since `cutoff`, with everything in them.

        Activity is the thread's own update or any item added to it (adding an item
        does not touch the thread row). Deleted in batches, each its own transaction,
        so a large purge never holds locks for long.
        """
        recent_item = exists().where(
            ITEMS.c.thread_id == THREADS.c.id, ITEMS.c.created_at >= cutoff
        )
        idle = and_(
            THREADS.c.updated_at < cutoff,
            ~recent_item,
            # Never under an answer in progress.
            or_(
                THREADS.c.answer_lease_until.is_(None),
                THREADS.c.answer_lease_until < datetime.now(UTC),
            ),
        )
        if tenant_id is not None:
            idle = and_(idle, THREADS.c.tenant_id == tenant_id)
        threads = items = 0
        attachment_ids: list[str] = []
        after = -1
        while True:
            pick = select(THREADS.c.seq, THREADS.c.id).where(idle, THREADS.c.seq > after)
            async with self.engine.begin() as conn:
                batch = (await conn.execute(pick.order_by(THREADS.c.seq).limit(PAGE_SIZE))).all()
                ids = [row.id for row in batch]
                if ids:
                    items += await self._count(conn, ITEMS, ids)
                    attachment_ids += list(
                        (
                            await conn.execute(
                                select(ATTACHMENTS.c.id).where(ATTACHMENTS.c.thread_id.in_(ids))
                            )
                        ).scalars()
                    )
                    if not dry_run:
                        for table in (FEEDBACK, ITEMS, ATTACHMENTS):
                            await conn.execute(delete(table).where(table.c.thread_id.in_(ids)))
                        await conn.execute(delete(THREADS).where(THREADS.c.id.in_(ids)))
            threads += len(ids)
            if len(batch) < PAGE_SIZE:
                return PurgeResult(threads, items, attachment_ids)
            after = batch[-1].seq

    @staticmethod
    async def _count(conn: AsyncConnection, table: Table, thread_ids: list[str]) -> int:
        query = select(func.count()).select_from(table).where(table.c.thread_id.in_(thread_ids))
        return int((await conn.execute(query)).scalar_one())

    async def totals(self) -> list[TenantTotals]:
        """Threads, items, attachments and model tokens per tenant, by tenant id."""
        counts: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            tables = (("threads", THREADS), ("items", ITEMS), ("attachments", ATTACHMENTS))
            for name, table in tables:
                query = select(table.c.tenant_id, func.count()).group_by(table.c.tenant_id)
                for tenant, count in (await conn.execute(query)).all():
                    counts.setdefault(tenant, {})[name] = int(count)
            tokens = select(
                USAGE.c.tenant_id, func.sum(USAGE.c.input_tokens), func.sum(USAGE.c.output_tokens)
            ).group_by(USAGE.c.tenant_id)
            for tenant, input_tokens, output_tokens in (await conn.execute(tokens)).all():
                totals = counts.setdefault(tenant, {})
                totals["input_tokens"] = int(input_tokens or 0)
                totals["output_tokens"] = int(output_tokens or 0)
        return [TenantTotals(tenant, **values) for tenant, values in sorted(counts.items())]

"""Operator queries across owners: export one thread, purge old ones, totals by tenant.

These run from the `chatkit-backend` command, never from a request: they are the only
store code that reads without an owner, because the operator is not a ChatKit user.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatkit_backend.store.tables import UNPREFIXED, Tables

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

    def __init__(self, engine: AsyncEngine, tables: Tables = UNPREFIXED) -> None:
        self.engine = engine
        self.tables = tables

    async def thread(self, thread_id: str) -> ThreadRecord | None:
        columns = ("id", "tenant_id", "user_id", "created_at", "data")
        query = select(*(self.tables.threads.c[name] for name in columns)).where(
            self.tables.threads.c.id == thread_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else ThreadRecord(*row)

    async def items(self, thread_id: str) -> AsyncIterator[str]:
        """The thread's items as stored (the SDK's JSON), oldest first, a page at a time."""
        last_seq = -1
        while True:
            query = (
                select(self.tables.items.c.seq, self.tables.items.c.data)
                .where(
                    self.tables.items.c.thread_id == thread_id, self.tables.items.c.seq > last_seq
                )
                .order_by(self.tables.items.c.seq)
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
            self.tables.items.c.thread_id == self.tables.threads.c.id,
            self.tables.items.c.created_at >= cutoff,
        )
        idle = and_(
            self.tables.threads.c.updated_at < cutoff,
            ~recent_item,
            # Never under an answer in progress.
            or_(
                self.tables.threads.c.answer_lease_until.is_(None),
                self.tables.threads.c.answer_lease_until < datetime.now(UTC),
            ),
        )
        if tenant_id is not None:
            idle = and_(idle, self.tables.threads.c.tenant_id == tenant_id)
        threads = items = 0
        attachment_ids: list[str] = []
        after = -1
        while True:
            pick = select(self.tables.threads.c.seq, self.tables.threads.c.id).where(
                idle, self.tables.threads.c.seq > after
            )
            async with self.engine.begin() as conn:
                batch = (
                    await conn.execute(pick.order_by(self.tables.threads.c.seq).limit(PAGE_SIZE))
                ).all()
                ids = [row.id for row in batch]
                if ids:
                    items += await self._count(conn, self.tables.items, ids)
                    attachment_ids += list(
                        (
                            await conn.execute(
                                select(self.tables.attachments.c.id).where(
                                    self.tables.attachments.c.thread_id.in_(ids)
                                )
                            )
                        ).scalars()
                    )
                    if not dry_run:
                        for table in (
                            self.tables.feedback,
                            self.tables.items,
                            self.tables.attachments,
                        ):
                            await conn.execute(delete(table).where(table.c.thread_id.in_(ids)))
                        await conn.execute(
                            delete(self.tables.threads).where(self.tables.threads.c.id.in_(ids))
                        )
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
            tables = (
                ("threads", self.tables.threads),
                ("items", self.tables.items),
                ("attachments", self.tables.attachments),
            )
            for name, table in tables:
                query = select(table.c.tenant_id, func.count()).group_by(table.c.tenant_id)
                for tenant, count in (await conn.execute(query)).all():
                    counts.setdefault(tenant, {})[name] = int(count)
            tokens = select(
                self.tables.usage.c.tenant_id,
                func.sum(self.tables.usage.c.input_tokens),
                func.sum(self.tables.usage.c.output_tokens),
            ).group_by(self.tables.usage.c.tenant_id)
            for tenant, input_tokens, output_tokens in (await conn.execute(tokens)).all():
                totals = counts.setdefault(tenant, {})
                totals["input_tokens"] = int(input_tokens or 0)
                totals["output_tokens"] = int(output_tokens or 0)
        return [TenantTotals(tenant, **values) for tenant, values in sorted(counts.items())]

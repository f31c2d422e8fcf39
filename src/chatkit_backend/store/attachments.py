"""Attachment records beyond the SDK's `Store`: upload state, owners, quotas, cleanup."""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatkit.types import Attachment, ThreadItem, UserMessageItem
from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, Table, and_, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.store.tables import UNPREFIXED, Tables, owned

_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)
# The first key of PostgreSQL's two-key advisory locks taken for quotas (any constant:
# it keeps these apart from other uses of advisory locks).
_QUOTA_LOCKS = 0x41_54_43_51  # "ATCQ"

# How a loaded attachment is shown to its owner (with fresh signed links); the store
# keeps it as saved.
AttachmentView = Callable[[Attachment, RequestContext], Attachment]


def viewed(item: ThreadItem, view: AttachmentView | None, context: RequestContext) -> ThreadItem:
    """`item` with its attachments (a user message's) as `view` shows them."""
    if view is not None and isinstance(item, UserMessageItem) and item.attachments:
        item.attachments = [view(attachment, context) for attachment in item.attachments]
    return item


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """An attachment with its owner and upload state."""

    attachment: Attachment
    owner: Owner
    size_bytes: int | None
    uploaded: bool

    @property
    def thread_id(self) -> str | None:
        return self.attachment.thread_id


def _record_columns(table: Table) -> tuple[ColumnElement[Any], ...]:
    """What `_record` reads."""
    return (
        table.c.data,
        table.c.tenant_id,
        table.c.user_id,
        table.c.size_bytes,
        table.c.uploaded_at,
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """What one owner's attachments hold, as the quotas count it; also a quota's limits.

    Unsent: not in a sent message (as the cleanup decides: no thread), including two-phase
    uploads whose bytes are still to come, counted at their declared size. A pending
    upload whose link expired (`live_after`) holds nothing: its bytes can never arrive.
    """

    unsent_count: int
    unsent_bytes: int
    total_bytes: int


def _usage_columns(table: Table, live_after: datetime) -> tuple[ColumnElement[Any], ...]:
    live = or_(table.c.uploaded_at.is_not(None), table.c.created_at >= live_after)
    unsent = and_(live, table.c.thread_id.is_(None))
    size = func.coalesce(table.c.size_bytes, 0)
    return (
        func.coalesce(func.sum(case((unsent, 1), else_=0)), 0).label("unsent_count"),
        func.coalesce(func.sum(case((unsent, size), else_=0)), 0).label("unsent_bytes"),
        func.coalesce(func.sum(case((live, size), else_=0)), 0).label("total_bytes"),
    )


def _owner_lock_key(owner: Owner) -> int:
    """A 32-bit key per owner; two owners sharing one only wait for each other."""
    name = f"{owner.tenant_id}\0{owner.user_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=4).digest(), "big", signed=True)


def _record(row: Any) -> AttachmentRecord:
    return AttachmentRecord(
        attachment=_ATTACHMENT.validate_json(row.data),
        owner=Owner(tenant_id=row.tenant_id, user_id=row.user_id),
        size_bytes=row.size_bytes,
        uploaded=row.uploaded_at is not None,
    )


class AttachmentRecords:
    """The `attachments` table as the upload, serving and cleanup code needs it."""

    def __init__(self, engine: AsyncEngine, tables: Tables = UNPREFIXED) -> None:
        self.engine = engine
        self.table = tables.attachments
        self._columns = _record_columns(self.table)

    async def create(
        self,
        attachment: Attachment,
        owner: Owner,
        size_bytes: int,
        *,
        uploaded: bool,
        most: Usage,
        live_after: datetime,
    ) -> bool:
        """Insert a new record, uploaded (direct upload) or waiting for its bytes, unless
        the owner's usage with it would pass `most` (see `Usage`): then False.

        The sums and the insert are one statement, so the quota holds exactly, also
        across workers: SQLite lets one writer in at a time; on PostgreSQL, where two
        statements at once would each not see the other's row, the owner's inserts take
        turns on a transaction-scoped advisory lock first.
        """
        now = datetime.now(UTC)
        row = {
            "id": attachment.id,
            "tenant_id": owner.tenant_id,
            "user_id": owner.user_id,
            "thread_id": attachment.thread_id,
            "created_at": now,
            "data": attachment.model_dump_json(),
            "size_bytes": size_bytes,
            "uploaded_at": now if uploaded else None,
        }
        usage = (
            select(*_usage_columns(self.table, live_after))
            .where(owned(self.table, owner))
            .subquery("usage")
        )
        values = (
            select(*(literal(value, self.table.c[name].type) for name, value in row.items()))
            .select_from(usage)
            .where(
                usage.c.unsent_count + 1 <= most.unsent_count,
                usage.c.unsent_bytes + size_bytes <= most.unsent_bytes,
                usage.c.total_bytes + size_bytes <= most.total_bytes,
            )
        )
        insert = self.table.insert().from_select(list(row), values)
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                lock = func.pg_advisory_xact_lock(_QUOTA_LOCKS, _owner_lock_key(owner))
                await conn.execute(select(lock))
            result = await conn.execute(insert)
        return bool(result.rowcount)

    async def usage(self, owner: Owner, live_after: datetime) -> Usage:
        """What the owner's attachments hold now (see `Usage`): one indexed aggregate."""
        query = select(*_usage_columns(self.table, live_after)).where(owned(self.table, owner))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        # PostgreSQL sums BIGINT as NUMERIC.
        return Usage(int(row.unsent_count), int(row.unsent_bytes), int(row.total_bytes))

    async def load(self, attachment_id: str, owner: Owner) -> AttachmentRecord | None:
        """The owner's record, or None for an id that is not theirs or does not exist."""
        query = select(*self._columns).where(
            self.table.c.id == attachment_id, owned(self.table, owner)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return _record(row) if row is not None else None

    async def load_unscoped(self, attachment_id: str) -> AttachmentRecord | None:
        """Any owner's record: only for signed links, whose signature names the owner."""
        query = select(*self._columns).where(self.table.c.id == attachment_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return _record(row) if row is not None else None

    async def mark_uploaded(self, attachment: Attachment, owner: Owner, size_bytes: int) -> bool:
        """Record that the bytes arrived; False when it was deleted or uploaded meanwhile."""
        query = (
            update(self.table)
            .where(
                self.table.c.id == attachment.id,
                owned(self.table, owner),
                self.table.c.uploaded_at.is_(None),
            )
            .values(
                data=attachment.model_dump_json(),
                size_bytes=size_bytes,
                uploaded_at=datetime.now(UTC),
            )
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def delete(self, attachment_id: str, owner: Owner) -> bool:
        """Delete the owner's record; False when there was none."""
        query = delete(self.table).where(self.table.c.id == attachment_id, owned(self.table, owner))
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def ids_in_thread(self, thread_id: str, owner: Owner) -> list[str]:
        query = select(self.table.c.id).where(
            self.table.c.thread_id == thread_id, owned(self.table, owner)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def delete_unsent(self, created_before: datetime, limit: int) -> list[str]:
        """Delete up to `limit` records never sent in a message; return their ids."""
        stale = (
            select(self.table.c.id)
            .where(self.table.c.thread_id.is_(None), self.table.c.created_at < created_before)
            .limit(limit)
        )
        async with self.engine.begin() as conn:
            ids = list((await conn.execute(stale)).scalars().all())
            if not ids:
                return []
            # Checked again in the DELETE: a message may have sent one in between.
            gone = delete(self.table).where(
                self.table.c.id.in_(ids),
                self.table.c.thread_id.is_(None),
                self.table.c.created_at < created_before,
            )
            deleted = await conn.execute(gone.returning(self.table.c.id))
            return list(deleted.scalars().all())

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` have a record, of any owner (the orphan sweep's question)."""
        if not ids:
            return set()
        query = select(self.table.c.id).where(self.table.c.id.in_(list(ids)))
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars().all())

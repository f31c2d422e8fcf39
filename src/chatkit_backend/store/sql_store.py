"""The ChatKit `Store` on SQLAlchemy's asyncio engine, every query scoped to its owner."""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, FeedbackKind, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    delete,
    literal,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.context import RequestContext
from chatkit_backend.store.attachments import AttachmentRecords, AttachmentView, viewed
from chatkit_backend.store.employees import EmployeeDirectory
from chatkit_backend.store.tables import ATTACHMENTS, FEEDBACK, ITEMS, THREADS, insert_for, owned
from chatkit_backend.store.usage import UsageLedger

_ITEM: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)

Order = Literal["asc", "desc"]
T = TypeVar("T")


def _in_thread(dialect: str, thread_id: str, context: RequestContext) -> ColumnElement[bool]:
    """The owner's items of one thread, for queries that page by `seq`.

    Without statistics SQLite paged a thread after an anchor through `ix_items_owner`
    (tenant, user, then rowid = `seq` as a range), reading every later item of the
    user: 100 ms on a 100-item thread among a million items. The unary `+` keeps the
    owner columns out of index choice there, so `ix_items_thread_seq` serves the page.
    """
    if dialect != "sqlite":
        return and_(ITEMS.c.thread_id == thread_id, owned(ITEMS, context.owner))
    tenant = literal_column("+items.tenant_id", ITEMS.c.tenant_id.type)
    user = literal_column("+items.user_id", ITEMS.c.user_id.type)
    return and_(
        ITEMS.c.thread_id == thread_id,
        tenant == context.owner.tenant_id,
        user == context.owner.user_id,
    )


def _order(value: str) -> Order:
    if value not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {value!r}")
    return "asc" if value == "asc" else "desc"


def _keyset_page(
    query: Select[Any], table: Table, anchor: Select[Any] | None, limit: int, order: Order
) -> Select[Any]:
    """Cut one page after the row `anchor` selects the `seq` of, by the indexed `seq`."""
    if anchor is not None:
        anchor_seq = anchor.scalar_subquery()
        query = query.where(
            table.c.seq > anchor_seq if order == "asc" else table.c.seq < anchor_seq
        )
    ordering = table.c.seq.asc() if order == "asc" else table.c.seq.desc()
    # One extra row tells whether another page follows without a COUNT.
    return query.order_by(ordering).limit(limit + 1)


def _page_of(rows: Sequence[Any], limit: int, parse: Any) -> Page[T]:
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[parse(row.data) for row in rows],
        has_more=has_more,
        # A cursor only while another page follows, as the SDK's own stores do: a
        # client that pages on `after` alone then stops at the last page.
        after=rows[-1].id if has_more else None,
    )


class SQLStore(Store[RequestContext]):
    """Threads, items, attachments and feedback in SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine, attachment_view: AttachmentView | None = None) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self.employees = EmployeeDirectory(engine)
        self.usage = UsageLedger(engine)
        self.attachments = AttachmentRecords(engine)
        self.attachment_view = attachment_view
        # Reads need no transaction: on PostgreSQL that saves BEGIN and ROLLBACK trips.
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    def generate_thread_id(self, context: RequestContext) -> str:
        return new_id("thread")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: RequestContext
    ) -> str:
        return new_id(item_type)

    # Threads

    async def load_thread(self, thread_id: str, context: RequestContext) -> ThreadMetadata:
        query = select(THREADS.c.data).where(
            THREADS.c.id == thread_id, owned(THREADS, context.owner)
        )
        async with self.reader.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(data)

    async def save_thread(self, thread: ThreadMetadata, context: RequestContext) -> None:
        # The SDK sometimes hands over a full `Thread`; its items are stored separately.
        data = thread.model_dump_json(exclude={"items"})
        now = datetime.now(UTC)
        insert = insert_for(self._dialect, THREADS).values(
            id=thread.id,
            tenant_id=context.owner.tenant_id,
            user_id=context.owner.user_id,
            created_at=now,
            updated_at=now,
            data=data,
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[THREADS.c.id],
            set_={"data": insert.excluded.data, "updated_at": insert.excluded.updated_at},
            where=owned(THREADS, context.owner),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Thread {thread.id} not found")

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RequestContext
    ) -> Page[ThreadMetadata]:
        query = select(THREADS.c.id, THREADS.c.data).where(owned(THREADS, context.owner))
        anchor = None
        if after is not None:
            anchor = select(THREADS.c.seq).where(
                THREADS.c.id == after, owned(THREADS, context.owner)
            )
        query = _keyset_page(query, THREADS, anchor, limit, _order(order))
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _page_of(rows, limit, ThreadMetadata.model_validate_json)

    async def rename_thread(
        self, thread_id: str, title: str, context: RequestContext
    ) -> ThreadMetadata:
        """Give the owner's thread a new title; `NotFoundError` when there is none."""
        thread = await self.load_thread(thread_id, context)
        thread.title = title
        await self.save_thread(thread, context)
        return thread

    async def delete_thread(self, thread_id: str, context: RequestContext) -> None:
        async with self.engine.begin() as conn:
            for table in (FEEDBACK, ITEMS, ATTACHMENTS):
                await conn.execute(
                    delete(table).where(table.c.thread_id == thread_id, owned(table, context.owner))
                )
            await conn.execute(
                delete(THREADS).where(THREADS.c.id == thread_id, owned(THREADS, context.owner))
            )

    # Items

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: RequestContext,
    ) -> Page[ThreadItem]:
        in_thread = _in_thread(self._dialect, thread_id, context)
        query = select(ITEMS.c.id, ITEMS.c.data).where(in_thread)
        anchor = None
        if after is not None:
            anchor = select(ITEMS.c.seq).where(ITEMS.c.id == after, in_thread)
        query = _keyset_page(query, ITEMS, anchor, limit, _order(order))
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        page: Page[ThreadItem] = _page_of(rows, limit, _ITEM.validate_json)
        page.data = [viewed(item, self.attachment_view, context) for item in page.data]
        return page

    async def load_thread_page(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: RequestContext,
    ) -> tuple[ThreadMetadata, Page[ThreadItem]]:
        """The thread and one page of its items, in one call on one connection;
        `NotFoundError` when the thread is not the caller's (an empty thread is an empty
        page). Two statements, each on its index: joined into one, PostgreSQL sorted a
        whole 10,000-item thread to cut a page of 20."""
        owner = context.owner
        thread_query = select(THREADS.c.data).where(
            THREADS.c.id == thread_id, owned(THREADS, owner)
        )
        in_thread = _in_thread(self._dialect, thread_id, context)
        anchor = None
        if after is not None:
            anchor = select(ITEMS.c.seq).where(ITEMS.c.id == after, in_thread)
        items_query = _keyset_page(
            select(ITEMS.c.id, ITEMS.c.data).where(in_thread), ITEMS, anchor, limit, _order(order)
        )
        async with self.reader.connect() as conn:
            data = (await conn.execute(thread_query)).scalar_one_or_none()
            if data is None:
                raise NotFoundError(f"Thread {thread_id} not found")
            rows = (await conn.execute(items_query)).all()
        page: Page[ThreadItem] = _page_of(rows, limit, _ITEM.validate_json)
        page.data = [viewed(item, self.attachment_view, context) for item in page.data]
        return ThreadMetadata.model_validate_json(data), page

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: RequestContext
    ) -> None:
        # Workflows that continue across turns add the same id again: an upsert.
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        await self._upsert_item(thread_id, item, context)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        # INSERT ... SELECT from the owner's thread: an item can only land in a thread
        # its owner holds, and an update keeps the item's place (`seq`) in the thread.
        source = select(
            literal(item.id),
            THREADS.c.id,
            THREADS.c.tenant_id,
            THREADS.c.user_id,
            literal(item.type),
            literal(datetime.now(UTC), ITEMS.c.created_at.type),
            literal(item.model_dump_json()),
        ).where(THREADS.c.id == thread_id, owned(THREADS, context.owner))
        columns = ["id", "thread_id", "tenant_id", "user_id", "type", "created_at", "data"]
        insert = insert_for(self._dialect, ITEMS).from_select(columns, source)
        upsert = insert.on_conflict_do_update(
            index_elements=[ITEMS.c.id],
            set_={"data": insert.excluded.data, "type": insert.excluded.type},
            where=and_(ITEMS.c.thread_id == thread_id, owned(ITEMS, context.owner)),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def load_item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        query = select(ITEMS.c.data).where(
            ITEMS.c.id == item_id, ITEMS.c.thread_id == thread_id, owned(ITEMS, context.owner)
        )
        async with self.reader.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"Item {item_id} not found")
        return viewed(_ITEM.validate_json(data), self.attachment_view, context)

    async def existing_item_ids(
        self, thread_id: str, item_ids: Sequence[str], context: RequestContext
    ) -> set[str]:
        """Return which of `item_ids` exist in the owner's thread."""
        query = select(ITEMS.c.id).where(
            ITEMS.c.id.in_(list(item_ids)),
            ITEMS.c.thread_id == thread_id,
            owned(ITEMS, context.owner),
        )
        async with self.reader.connect() as conn:
            return set((await conn.execute(query)).scalars().all())

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: RequestContext
    ) -> None:
        query = delete(ITEMS).where(
            ITEMS.c.id == item_id, ITEMS.c.thread_id == thread_id, owned(ITEMS, context.owner)
        )
        async with self.engine.begin() as conn:
            await conn.execute(query)

    # Attachments

    async def save_attachment(self, attachment: Attachment, context: RequestContext) -> None:
        insert = insert_for(self._dialect, ATTACHMENTS).values(
            id=attachment.id,
            tenant_id=context.owner.tenant_id,
            user_id=context.owner.user_id,
            thread_id=attachment.thread_id,
            created_at=datetime.now(UTC),
            data=attachment.model_dump_json(),
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[ATTACHMENTS.c.id],
            set_={"data": insert.excluded.data, "thread_id": insert.excluded.thread_id},
            where=owned(ATTACHMENTS, context.owner),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Attachment {attachment.id} not found")

    async def load_attachment(self, attachment_id: str, context: RequestContext) -> Attachment:
        query = select(ATTACHMENTS.c.data).where(
            ATTACHMENTS.c.id == attachment_id, owned(ATTACHMENTS, context.owner)
        )
        async with self.reader.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        attachment = _ATTACHMENT.validate_json(data)
        return self.attachment_view(attachment, context) if self.attachment_view else attachment

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        query = delete(ATTACHMENTS).where(
            ATTACHMENTS.c.id == attachment_id, owned(ATTACHMENTS, context.owner)
        )
        async with self.engine.begin() as conn:
            await conn.execute(query)

    # Feedback

    async def save_feedback(
        self, thread_id: str, item_ids: Sequence[str], kind: FeedbackKind, context: RequestContext
    ) -> None:
        """Record the owner's rating of items in their thread; a new rating replaces the old."""
        if not item_ids:
            return
        # INSERT ... SELECT from the owner's items: ratings can only name what they own.
        source = select(
            ITEMS.c.tenant_id,
            ITEMS.c.user_id,
            ITEMS.c.thread_id,
            ITEMS.c.id,
            literal(kind),
            literal(datetime.now(UTC), FEEDBACK.c.created_at.type),
        ).where(
            ITEMS.c.id.in_(list(item_ids)),
            ITEMS.c.thread_id == thread_id,
            owned(ITEMS, context.owner),
        )
        columns = ["tenant_id", "user_id", "thread_id", "item_id", "kind", "created_at"]
        insert = insert_for(self._dialect, FEEDBACK).from_select(columns, source)
        upsert = insert.on_conflict_do_update(
            index_elements=[FEEDBACK.c.tenant_id, FEEDBACK.c.user_id, FEEDBACK.c.item_id],
            set_={"kind": insert.excluded.kind, "created_at": insert.excluded.created_at},
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)

    async def load_feedback(
        self, thread_id: str, context: RequestContext
    ) -> dict[str, FeedbackKind]:
        """Return the owner's ratings in a thread, by item id."""
        query = select(FEEDBACK.c.item_id, FEEDBACK.c.kind).where(
            FEEDBACK.c.thread_id == thread_id, owned(FEEDBACK, context.owner)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.item_id: row.kind for row in rows}


PREFIXES: dict[StoreItemType, str] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}

# 128 random bits; the SDK's default of 32 can be enumerated.
RANDOM_BYTES = 16


def new_id(item_type: StoreItemType) -> str:
    """Return `prefix_` followed by 32 random hex characters."""
    return f"{PREFIXES[item_type]}_{secrets.token_hex(RANDOM_BYTES)}"

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
from chatkit_backend.store.tables import UNPREFIXED, Tables, insert_for, owned
from chatkit_backend.store.usage import UsageLedger

_ITEM: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)

Order = Literal["asc", "desc"]
T = TypeVar("T")


def _in_thread(
    dialect: str, items: Table, thread_id: str, context: RequestContext
) -> ColumnElement[bool]:
    """The owner's items of one thread, for queries that page by `seq`.

    Without statistics SQLite paged a thread after an anchor through `ix_items_owner`
    (tenant, user, then rowid = `seq` as a range), reading every later item of the
    user: 100 ms on a 100-item thread among a million items. The unary `+` keeps the
    owner columns out of index choice there, so `ix_items_thread_seq` serves the page.
    """
    if dialect != "sqlite":
        return and_(items.c.thread_id == thread_id, owned(items, context.owner))
    tenant = literal_column(f"+{items.name}.tenant_id", items.c.tenant_id.type)
    user = literal_column(f"+{items.name}.user_id", items.c.user_id.type)
    return and_(
        items.c.thread_id == thread_id,
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

    def __init__(
        self,
        engine: AsyncEngine,
        attachment_view: AttachmentView | None = None,
        tables: Tables = UNPREFIXED,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self._dialect = engine.dialect.name
        self.employees = EmployeeDirectory(engine, tables)
        self.usage = UsageLedger(engine, tables)
        self.attachments = AttachmentRecords(engine, tables)
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
        query = select(self.tables.threads.c.data).where(
            self.tables.threads.c.id == thread_id, owned(self.tables.threads, context.owner)
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
        insert = insert_for(self._dialect, self.tables.threads).values(
            id=thread.id,
            tenant_id=context.owner.tenant_id,
            user_id=context.owner.user_id,
            created_at=now,
            updated_at=now,
            data=data,
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[self.tables.threads.c.id],
            set_={"data": insert.excluded.data, "updated_at": insert.excluded.updated_at},
            where=owned(self.tables.threads, context.owner),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Thread {thread.id} not found")

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RequestContext
    ) -> Page[ThreadMetadata]:
        query = select(self.tables.threads.c.id, self.tables.threads.c.data).where(
            owned(self.tables.threads, context.owner)
        )
        anchor = None
        if after is not None:
            anchor = select(self.tables.threads.c.seq).where(
                self.tables.threads.c.id == after, owned(self.tables.threads, context.owner)
            )
        query = _keyset_page(query, self.tables.threads, anchor, limit, _order(order))
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
            for table in (self.tables.feedback, self.tables.items, self.tables.attachments):
                await conn.execute(
                    delete(table).where(table.c.thread_id == thread_id, owned(table, context.owner))
                )
            await conn.execute(
                delete(self.tables.threads).where(
                    self.tables.threads.c.id == thread_id, owned(self.tables.threads, context.owner)
                )
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
        in_thread = _in_thread(self._dialect, self.tables.items, thread_id, context)
        query = select(self.tables.items.c.id, self.tables.items.c.data).where(in_thread)
        anchor = None
        if after is not None:
            anchor = select(self.tables.items.c.seq).where(
                self.tables.items.c.id == after, in_thread
            )
        query = _keyset_page(query, self.tables.items, anchor, limit, _order(order))
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
        thread_query = select(self.tables.threads.c.data).where(
            self.tables.threads.c.id == thread_id, owned(self.tables.threads, owner)
        )
        in_thread = _in_thread(self._dialect, self.tables.items, thread_id, context)
        anchor = None
        if after is not None:
            anchor = select(self.tables.items.c.seq).where(
                self.tables.items.c.id == after, in_thread
            )
        items_query = _keyset_page(
            select(self.tables.items.c.id, self.tables.items.c.data).where(in_thread),
            self.tables.items,
            anchor,
            limit,
            _order(order),
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
            self.tables.threads.c.id,
            self.tables.threads.c.tenant_id,
            self.tables.threads.c.user_id,
            literal(item.type),
            literal(datetime.now(UTC), self.tables.items.c.created_at.type),
            literal(item.model_dump_json()),
        ).where(self.tables.threads.c.id == thread_id, owned(self.tables.threads, context.owner))
        columns = ["id", "thread_id", "tenant_id", "user_id", "type", "created_at", "data"]
        insert = insert_for(self._dialect, self.tables.items).from_select(columns, source)
        upsert = insert.on_conflict_do_update(
            index_elements=[self.tables.items.c.id],
            set_={"data": insert.excluded.data, "type": insert.excluded.type},
            where=and_(
                self.tables.items.c.thread_id == thread_id, owned(self.tables.items, context.owner)
            ),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def load_item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        query = select(self.tables.items.c.data).where(
            self.tables.items.c.id == item_id,
            self.tables.items.c.thread_id == thread_id,
            owned(self.tables.items, context.owner),
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
        query = select(self.tables.items.c.id).where(
            self.tables.items.c.id.in_(list(item_ids)),
            self.tables.items.c.thread_id == thread_id,
            owned(self.tables.items, context.owner),
        )
        async with self.reader.connect() as conn:
            return set((await conn.execute(query)).scalars().all())

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: RequestContext
    ) -> None:
        query = delete(self.tables.items).where(
            self.tables.items.c.id == item_id,
            self.tables.items.c.thread_id == thread_id,
            owned(self.tables.items, context.owner),
        )
        async with self.engine.begin() as conn:
            await conn.execute(query)

    # Attachments

    async def save_attachment(self, attachment: Attachment, context: RequestContext) -> None:
        insert = insert_for(self._dialect, self.tables.attachments).values(
            id=attachment.id,
            tenant_id=context.owner.tenant_id,
            user_id=context.owner.user_id,
            thread_id=attachment.thread_id,
            created_at=datetime.now(UTC),
            data=attachment.model_dump_json(),
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[self.tables.attachments.c.id],
            set_={"data": insert.excluded.data, "thread_id": insert.excluded.thread_id},
            where=owned(self.tables.attachments, context.owner),
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(upsert)
        if result.rowcount == 0:
            raise NotFoundError(f"Attachment {attachment.id} not found")

    async def load_attachment(self, attachment_id: str, context: RequestContext) -> Attachment:
        query = select(self.tables.attachments.c.data).where(
            self.tables.attachments.c.id == attachment_id,
            owned(self.tables.attachments, context.owner),
        )
        async with self.reader.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        attachment = _ATTACHMENT.validate_json(data)
        return self.attachment_view(attachment, context) if self.attachment_view else attachment

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        query = delete(self.tables.attachments).where(
            self.tables.attachments.c.id == attachment_id,
            owned(self.tables.attachments, context.owner),
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
            self.tables.items.c.tenant_id,
            self.tables.items.c.user_id,
            self.tables.items.c.thread_id,
            self.tables.items.c.id,
            literal(kind),
            literal(datetime.now(UTC), self.tables.feedback.c.created_at.type),
        ).where(
            self.tables.items.c.id.in_(list(item_ids)),
            self.tables.items.c.thread_id == thread_id,
            owned(self.tables.items, context.owner),
        )
        columns = ["tenant_id", "user_id", "thread_id", "item_id", "kind", "created_at"]
        insert = insert_for(self._dialect, self.tables.feedback).from_select(columns, source)
        upsert = insert.on_conflict_do_update(
            index_elements=[
                self.tables.feedback.c.tenant_id,
                self.tables.feedback.c.user_id,
                self.tables.feedback.c.item_id,
            ],
            set_={"kind": insert.excluded.kind, "created_at": insert.excluded.created_at},
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)

    async def load_feedback(
        self, thread_id: str, context: RequestContext
    ) -> dict[str, FeedbackKind]:
        """Return the owner's ratings in a thread, by item id."""
        query = select(self.tables.feedback.c.item_id, self.tables.feedback.c.kind).where(
            self.tables.feedback.c.thread_id == thread_id,
            owned(self.tables.feedback, context.owner),
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

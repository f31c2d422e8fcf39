"""Attachment records beyond the SDK's `Store`: upload state, owners, cleanup queries."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatkit.types import Attachment, ThreadItem, UserMessageItem
from pydantic import TypeAdapter
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.store.tables import ATTACHMENTS, owned

_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)

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


_COLUMNS = (
    ATTACHMENTS.c.data,
    ATTACHMENTS.c.tenant_id,
    ATTACHMENTS.c.user_id,
    ATTACHMENTS.c.size_bytes,
    ATTACHMENTS.c.uploaded_at,
)


def _record(row: Any) -> AttachmentRecord:
    return AttachmentRecord(
        attachment=_ATTACHMENT.validate_json(row.data),
        owner=Owner(tenant_id=row.tenant_id, user_id=row.user_id),
        size_bytes=row.size_bytes,
        uploaded=row.uploaded_at is not None,
    )


class AttachmentRecords:
    """The `attachments` table as the upload, serving and cleanup code needs it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, attachment: Attachment, owner: Owner, size_bytes: int, *, uploaded: bool
    ) -> None:
        """Insert a new record: uploaded (direct upload) or waiting for its bytes."""
        now = datetime.now(UTC)
        insert = ATTACHMENTS.insert().values(
            id=attachment.id,
            tenant_id=owner.tenant_id,
            user_id=owner.user_id,
            thread_id=attachment.thread_id,
            created_at=now,
            data=attachment.model_dump_json(),
            size_bytes=size_bytes,
            uploaded_at=now if uploaded else None,
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert)

    async def load(self, attachment_id: str, owner: Owner) -> AttachmentRecord | None:
        """The owner's record, or None for an id that is not theirs or does not exist."""
        query = select(*_COLUMNS).where(
            ATTACHMENTS.c.id == attachment_id, owned(ATTACHMENTS, owner)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return _record(row) if row is not None else None

    async def load_unscoped(self, attachment_id: str) -> AttachmentRecord | None:
        """Any owner's record: only for signed links, whose signature names the owner."""
        query = select(*_COLUMNS).where(ATTACHMENTS.c.id == attachment_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return _record(row) if row is not None else None

    async def mark_uploaded(self, attachment: Attachment, owner: Owner, size_bytes: int) -> bool:
        """Record that the bytes arrived; False when it was deleted or uploaded meanwhile."""
        query = (
            update(ATTACHMENTS)
            .where(
                ATTACHMENTS.c.id == attachment.id,
                owned(ATTACHMENTS, owner),
                ATTACHMENTS.c.uploaded_at.is_(None),
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
        query = delete(ATTACHMENTS).where(
            ATTACHMENTS.c.id == attachment_id, owned(ATTACHMENTS, owner)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def ids_in_thread(self, thread_id: str, owner: Owner) -> list[str]:
        query = select(ATTACHMENTS.c.id).where(
            ATTACHMENTS.c.thread_id == thread_id, owned(ATTACHMENTS, owner)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def delete_unsent(self, created_before: datetime, limit: int) -> list[str]:
        """Delete up to `limit` records never sent in a message; return their ids."""
        stale = (
            select(ATTACHMENTS.c.id)
            .where(ATTACHMENTS.c.thread_id.is_(None), ATTACHMENTS.c.created_at < created_before)
            .limit(limit)
        )
        async with self.engine.begin() as conn:
            ids = list((await conn.execute(stale)).scalars().all())
            if not ids:
                return []
            # Checked again in the DELETE: a message may have sent one in between.
            gone = delete(ATTACHMENTS).where(
                ATTACHMENTS.c.id.in_(ids),
                ATTACHMENTS.c.thread_id.is_(None),
                ATTACHMENTS.c.created_at < created_before,
            )
            deleted = await conn.execute(gone.returning(ATTACHMENTS.c.id))
            return list(deleted.scalars().all())

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` have a record, of any owner (the orphan sweep's question)."""
        if not ids:
            return set()
        query = select(ATTACHMENTS.c.id).where(ATTACHMENTS.c.id.in_(list(ids)))
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars().all())

"""The writes of one streamed turn, in two transactions: one before the answer (claim the
thread, load its history, store the user's message) and one after it (the answer's
items, its token usage, the thread's new state, and the lease released).

The lease lives on the thread row: `answer_lease_token` names the answer in progress,
`answer_lease_holder` the server process answering, and `answer_lease_until` when it
runs out at the latest. Why a lease row and not PostgreSQL advisory locks: a
session-level advisory lock lives on one connection, so every open stream would pin a
pooled connection for as long as the model talks. Here taking and releasing are each
part of a short statement on a pooled connection, on SQLite as on PostgreSQL, across
processes.

A process dying mid-answer releases nothing. Each process keeps one row in `holders`
and beats it (`beat`, about every second, chat/leases.py: one statement per process, not
per stream); a lease whose holder has not beaten for `HOLDER_TIMEOUT_SECONDS` is free,
checked inside the claim's own statement. So a thread whose process died takes a new
answer within seconds, and a live holder's leases hold however long its answers run.
The price: a process that cannot beat for that long (the database away, its event loop
stalled) may see another take a thread it is still answering; both answers are stored.

Statements are built once with bound parameters: building SQLAlchemy expressions per
call was a measurable part of a turn's CPU. Lease ends come from the application's clock
(UTC); replicas' clocks need only agree to within a small part of the lease. Heartbeats
are seconds apart, too close for that on PostgreSQL, where replicas run on different
machines: there they are stamped and judged by the database's clock. SQLite's processes
share one machine, and its clock.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Delete,
    Insert,
    Interval,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatkit_backend.context import RequestContext
from chatkit_backend.store.attachments import AttachmentView
from chatkit_backend.store.tables import UNPREFIXED, Tables, insert_for

_ITEMS_ADAPTER: TypeAdapter[list[ThreadItem]] = TypeAdapter(list[ThreadItem])
_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)
_UTC = DateTime(timezone=True)
# Pool timeouts (10 s each) a turn's last transaction rides out before it gives up.
POOL_ATTEMPTS = 6
# A holder silent this long is taken for dead and its leases for free: several missed
# beats (chat/leases.py), so a slow database or a busy event loop is not taken for a
# crash, and short enough that a user can soon write to the thread again.
HOLDER_TIMEOUT_SECONDS = 5.0


class ThreadBusyError(Exception):
    """Another answer holds the thread's lease."""


class ThreadMissingError(Exception):
    """No such thread for this owner."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One answer's claim on its thread: a token, and how long it holds at most."""

    token: str
    ttl: timedelta


@dataclass(slots=True)
class Opened:
    """What the first transaction of a turn found: the thread and its newest items."""

    thread: ThreadMetadata
    # Oldest first, at most the history limit, including the message this turn added.
    history: list[ThreadItem]
    message: ThreadItem | None = None


# Held around each transaction of a turn; see `TurnStore`.
Gate = Callable[[], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _no_gate() -> AsyncIterator[None]:
    yield


# Makes the turn's message once its attachments are loaded (as their owner sees them).
NewMessage = Callable[[list[Attachment]], ThreadItem]


@dataclass(frozen=True, slots=True)
class Usage:
    """Model tokens an answer used."""

    model: str
    requests: int
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class Finished:
    """Everything the second transaction writes."""

    # Upserted in this order; an item's place (`seq`) is kept when it already exists.
    items: list[ThreadItem] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # The thread's metadata when the turn changed it (a new title), else None.
    thread: ThreadMetadata | None = None
    usage: Usage | None = None


def _owner_params(context: RequestContext) -> dict[str, Any]:
    return {"o_tenant": context.owner.tenant_id, "o_user": context.owner.user_id}


class TurnStatements:
    """The turn's statements for one dialect, built once."""

    def __init__(self, dialect: str, tables: Tables = UNPREFIXED) -> None:
        threads, holders, items = tables.threads, tables.holders, tables.items
        attachments, usage = tables.attachments, tables.usage
        thread_owned = and_(
            threads.c.id == bindparam("o_thread"),
            threads.c.tenant_id == bindparam("o_tenant"),
            threads.c.user_id == bindparam("o_user"),
        )
        # Heartbeat times: the database's clock on PostgreSQL, ours (bound) on SQLite.
        beat_now: ColumnElement[datetime] = bindparam("h_now", type_=_UTC)
        silent_since: ColumnElement[datetime] = bindparam("h_silent_since", type_=_UTC)
        if dialect == "postgresql":
            beat_now = func.now()
            silent_since = func.now() - bindparam("h_timeout", type_=Interval())
        holder_alive = exists().where(
            holders.c.id == threads.c.answer_lease_holder, holders.c.beat_at >= silent_since
        )
        self.claim: Update = (
            update(threads)
            .where(
                thread_owned,
                or_(
                    threads.c.answer_lease_until.is_(None),
                    threads.c.answer_lease_until < bindparam("l_now", type_=_UTC),
                    # Its holder stopped beating. Never our own (we are alive, whatever
                    # our last beat says); a lease with no holder (taken before holders
                    # existed) or a store with none only ever frees by running out: the
                    # comparison with NULL is not true.
                    and_(
                        threads.c.answer_lease_holder != bindparam("l_holder"),
                        ~holder_alive,
                    ),
                ),
            )
            .values(
                answer_lease_token=bindparam("l_token"),
                answer_lease_until=bindparam("l_until", type_=_UTC),
                answer_lease_holder=bindparam("l_holder"),
            )
            .returning(threads.c.data)
        )
        beat = insert_for(dialect, holders).values(id=bindparam("h_id"), beat_at=beat_now)
        self.beat: Insert = beat.on_conflict_do_update(
            index_elements=[holders.c.id], set_={"beat_at": beat.excluded.beat_at}
        )
        self.forget_holder: Delete = delete(holders).where(holders.c.id == bindparam("h_id"))
        self.forget_silent_holders: Delete = delete(holders).where(holders.c.beat_at < silent_since)
        self.exists: Select[Any] = select(threads.c.id).where(thread_owned)
        self.create_thread: Insert = threads.insert().values(
            id=bindparam("o_thread"),
            tenant_id=bindparam("o_tenant"),
            user_id=bindparam("o_user"),
            created_at=bindparam("t_now", type_=_UTC),
            updated_at=bindparam("t_now", type_=_UTC),
            data=bindparam("t_data"),
            answer_lease_token=bindparam("l_token"),
            answer_lease_until=bindparam("l_until", type_=_UTC),
            answer_lease_holder=bindparam("l_holder"),
        )
        # The thread's own index serves this on SQLite only if the owner columns stay out
        # of index choice (the unary `+`); see store/sql_store.py.
        tenant: ColumnElement[str] = items.c.tenant_id
        user: ColumnElement[str] = items.c.user_id
        if dialect == "sqlite":
            tenant = literal_column(f"+{items.name}.tenant_id", items.c.tenant_id.type)
            user = literal_column(f"+{items.name}.user_id", items.c.user_id.type)
        in_thread = and_(
            items.c.thread_id == bindparam("o_thread"),
            tenant == bindparam("o_tenant"),
            user == bindparam("o_user"),
        )
        self.history: Select[Any] = (
            select(items.c.data)
            .where(in_thread)
            .order_by(items.c.seq.desc())
            .limit(bindparam("h_limit"))
        )
        self.truncate: Delete = delete(items).where(
            in_thread,
            items.c.seq
            > select(items.c.seq)
            .where(items.c.id == bindparam("h_after"), in_thread)
            .scalar_subquery(),
        )
        self.delete_items: Delete = delete(items).where(
            in_thread, items.c.id.in_(bindparam("d_ids", expanding=True))
        )
        # INSERT ... SELECT from the owner's thread: an item can only land in a thread
        # its owner holds, and an update keeps the item's place (`seq`) in the thread.
        source = select(
            bindparam("i_id"),
            threads.c.id,
            threads.c.tenant_id,
            threads.c.user_id,
            bindparam("i_type"),
            bindparam("t_now", type_=_UTC),
            bindparam("i_data"),
        ).where(thread_owned)
        columns = ["id", "thread_id", "tenant_id", "user_id", "type", "created_at", "data"]
        insert = insert_for(dialect, items).from_select(columns, source)
        self.upsert_item: Insert = insert.on_conflict_do_update(
            index_elements=[items.c.id],
            set_={"data": insert.excluded.data, "type": insert.excluded.type},
            where=and_(
                items.c.thread_id == bindparam("o_thread"),
                items.c.tenant_id == bindparam("o_tenant"),
                items.c.user_id == bindparam("o_user"),
            ),
        )
        self.load_attachments: Select[Any] = select(attachments.c.data).where(
            attachments.c.id.in_(bindparam("a_ids", expanding=True)),
            attachments.c.tenant_id == bindparam("o_tenant"),
            attachments.c.user_id == bindparam("o_user"),
        )
        self.send_attachment: Update = (
            update(attachments)
            .where(
                attachments.c.id == bindparam("a_id"),
                attachments.c.tenant_id == bindparam("o_tenant"),
                attachments.c.user_id == bindparam("o_user"),
            )
            .values(thread_id=bindparam("o_thread"), data=bindparam("a_data"))
        )
        self.record_usage: Insert = usage.insert().values(
            tenant_id=bindparam("o_tenant"),
            user_id=bindparam("o_user"),
            thread_id=bindparam("o_thread"),
            model=bindparam("u_model"),
            requests=bindparam("u_requests"),
            input_tokens=bindparam("u_input"),
            output_tokens=bindparam("u_output"),
            created_at=bindparam("t_now", type_=_UTC),
        )
        ours = threads.c.answer_lease_token == bindparam("l_token")
        self.close: Update = (
            update(threads)
            .where(thread_owned)
            .values(
                updated_at=bindparam("t_now", type_=_UTC),
                data=func.coalesce(bindparam("t_data"), threads.c.data),
                answer_lease_token=case((ours, None), else_=threads.c.answer_lease_token),
                answer_lease_until=case((ours, None), else_=threads.c.answer_lease_until),
                answer_lease_holder=case((ours, None), else_=threads.c.answer_lease_holder),
            )
        )
        self.release: Update = (
            update(threads)
            .where(threads.c.id == bindparam("o_thread"), ours)
            .values(answer_lease_token=None, answer_lease_until=None, answer_lease_holder=None)
        )


class TurnStore:
    """The database side of streamed turns.

    `gate`, when given, is held around each transaction (see chat/admission.py): turns
    then wait for a connection there, without the pool's timeout.

    `holder`: this process's id in `holders`, named by the leases it takes; it must keep
    beating (`beat`) for them to hold. Without one, leases free only by running out.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        attachment_view: AttachmentView | None = None,
        gate: Gate | None = None,
        holder: str | None = None,
        holder_timeout: float = HOLDER_TIMEOUT_SECONDS,
        tables: Tables = UNPREFIXED,
    ) -> None:
        self.engine = engine
        self.attachment_view = attachment_view
        self.gate = gate or _no_gate
        self.holder = holder
        self.holder_timeout = timedelta(seconds=holder_timeout)
        self.sql = TurnStatements(engine.dialect.name, tables)

    def _lease_params(self, lease: Lease, now: datetime) -> dict[str, Any]:
        return {
            "l_now": now,
            "l_token": lease.token,
            "l_until": now + lease.ttl,
            "l_holder": self.holder,
            "h_silent_since": now - self.holder_timeout,
            "h_timeout": self.holder_timeout,
        }

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.gate(), self.engine.begin() as conn:
            yield conn

    async def create(
        self,
        thread: ThreadMetadata,
        context: RequestContext,
        lease: Lease,
        new_message: NewMessage,
        attachment_ids: Sequence[str] = (),
    ) -> Opened:
        """Store a new thread, already leased to this turn, with its first message."""
        now = datetime.now(UTC)
        params = {
            **_owner_params(context),
            "o_thread": thread.id,
            "t_now": now,
            "t_data": thread.model_dump_json(exclude={"items"}),
            **self._lease_params(lease, now),
        }
        async with self._transaction() as conn:
            await conn.execute(self.sql.create_thread, params)
            attachments = await self._send_attachments(conn, params, attachment_ids, context)
            message = new_message(attachments)
            await self._upsert(conn, params, [message])
        return Opened(thread, [message], message)

    async def open(
        self,
        thread_id: str,
        context: RequestContext,
        lease: Lease,
        history_limit: int,
        *,
        truncate_after: str | None = None,
        new_message: NewMessage | None = None,
        attachment_ids: Sequence[str] = (),
    ) -> Opened:
        """Claim the thread, load its newest items, and add the turn's message.

        Raises `ThreadMissingError` or `ThreadBusyError` (nothing written either way).
        `truncate_after`: first delete every item after this one (a retry).
        """
        now = datetime.now(UTC)
        params = {
            **_owner_params(context),
            "o_thread": thread_id,
            "t_now": now,
            **self._lease_params(lease, now),
            "h_limit": history_limit,
        }
        async with self._transaction() as conn:
            data = (await conn.execute(self.sql.claim, params)).scalar_one_or_none()
            if data is None:
                found = (await conn.execute(self.sql.exists, params)).first()
                raise ThreadBusyError() if found else ThreadMissingError()
            if truncate_after is not None:
                await conn.execute(self.sql.truncate, {**params, "h_after": truncate_after})
            rows = (await conn.execute(self.sql.history, params)).scalars().all()
            message = None
            if new_message is not None:
                attachments = await self._send_attachments(conn, params, attachment_ids, context)
                message = new_message(attachments)
                await self._upsert(conn, params, [message])
        # One validation for the whole history: a list adapter over the stored JSON.
        history = _ITEMS_ADAPTER.validate_json("[" + ",".join(reversed(rows)) + "]")
        if message is not None:
            history = [*history[len(history) - history_limit + 1 :], message]
        return Opened(ThreadMetadata.model_validate_json(data), history, message)

    async def finish(
        self, thread_id: str, context: RequestContext, lease: Lease, finished: Finished
    ) -> None:
        """Write the answer and free the thread, in one transaction.

        An answer that was streamed must be stored: when the pool has no connection for
        it in time (other requests hold them all), it asks again rather than fail.
        """
        for attempt in range(POOL_ATTEMPTS):
            try:
                await self._finish(thread_id, context, lease, finished)
                return
            except PoolTimeoutError:
                if attempt == POOL_ATTEMPTS - 1:
                    raise

    async def _finish(
        self, thread_id: str, context: RequestContext, lease: Lease, finished: Finished
    ) -> None:
        params = {
            **_owner_params(context),
            "o_thread": thread_id,
            "t_now": datetime.now(UTC),
            "l_token": lease.token,
            "t_data": finished.thread.model_dump_json(exclude={"items"})
            if finished.thread is not None
            else None,
        }
        async with self._transaction() as conn:
            if finished.deleted:
                await conn.execute(self.sql.delete_items, {**params, "d_ids": finished.deleted})
            if finished.items:
                await self._upsert(conn, params, finished.items)
            if (usage := finished.usage) is not None:
                await conn.execute(
                    self.sql.record_usage,
                    {
                        **params,
                        "u_model": usage.model,
                        "u_requests": usage.requests,
                        "u_input": usage.input_tokens,
                        "u_output": usage.output_tokens,
                    },
                )
            await conn.execute(self.sql.close, params)

    async def save_items(
        self, thread_id: str, context: RequestContext, items: Sequence[ThreadItem]
    ) -> None:
        """Store items the stream is about to show as done, before the turn's end."""
        params = {**_owner_params(context), "o_thread": thread_id, "t_now": datetime.now(UTC)}
        async with self._transaction() as conn:
            await self._upsert(conn, params, items)

    async def release(self, thread_id: str, lease: Lease) -> None:
        """Free the thread if the lease is still ours (an expired one may have been taken)."""
        async with self._transaction() as conn:
            await conn.execute(self.sql.release, {"o_thread": thread_id, "l_token": lease.token})

    # This process as a lease holder. Not through the gate: a beat must not wait behind
    # streams, or a busy process would look dead.

    def _holder_params(self) -> dict[str, Any]:
        if self.holder is None:
            raise RuntimeError("this TurnStore has no holder id")
        now = datetime.now(UTC)
        return {
            "h_id": self.holder,
            "h_now": now,
            "h_silent_since": now - self.holder_timeout,
            "h_timeout": self.holder_timeout,
        }

    async def beat(self) -> None:
        """Say this process is alive, and so are the leases it holds."""
        async with self.engine.begin() as conn:
            await conn.execute(self.sql.beat, self._holder_params())

    async def forget_silent_holders(self) -> None:
        """Remove the rows of holders silent past the timeout: dead, their leases free."""
        async with self.engine.begin() as conn:
            await conn.execute(self.sql.forget_silent_holders, self._holder_params())

    async def forget_holder(self) -> None:
        """This process is stopping: its leases are free at once."""
        async with self.engine.begin() as conn:
            await conn.execute(self.sql.forget_holder, self._holder_params())

    async def _upsert(
        self, conn: AsyncConnection, params: dict[str, Any], items: Sequence[ThreadItem]
    ) -> None:
        rows = [
            {**params, "i_id": item.id, "i_type": item.type, "i_data": item.model_dump_json()}
            for item in items
        ]
        await conn.execute(self.sql.upsert_item, rows)

    async def _send_attachments(
        self,
        conn: AsyncConnection,
        params: dict[str, Any],
        attachment_ids: Sequence[str],
        context: RequestContext,
    ) -> list[Attachment]:
        """The caller's attachments, now part of this thread, in the order given."""
        if not attachment_ids:
            return []
        query = {**params, "a_ids": list(attachment_ids)}
        found = {}
        for data in (await conn.execute(self.sql.load_attachments, query)).scalars():
            attachment = _ATTACHMENT.validate_json(data)
            found[attachment.id] = attachment.model_copy(update={"thread_id": params["o_thread"]})
        sent = [found[attachment_id] for attachment_id in attachment_ids if attachment_id in found]
        if not sent:
            return []
        await conn.execute(
            self.sql.send_attachment,
            [{**params, "a_id": a.id, "a_data": a.model_dump_json()} for a in sent],
        )
        view = self.attachment_view
        return [view(a, context) for a in sent] if view is not None else sent

"""Answer leases name their holder, a server process that beats its row in `holders`:
a lease whose holder stopped beating is free after `HOLDER_TIMEOUT_SECONDS`, a live
holder's holds however long, on SQLite and PostgreSQL, between separate engines as
between separate processes."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from chatkit.types import Attachment, ThreadItem, ThreadMetadata, UserMessageItem
from chatkit.types import UserMessageTextContent as Text
from sqlalchemy import select

from chatkit_backend.chat.leases import holder_heartbeat, new_holder_id, new_lease
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.tables import UNPREFIXED
from chatkit_backend.store.turns import (
    HOLDER_TIMEOUT_SECONDS,
    NewMessage,
    ThreadBusyError,
    TurnStore,
)

# Polling for the thread to free: how often, and how late it may be (a loaded machine).
POLL_SECONDS = 0.1
LATE_SECONDS = 2.0


@asynccontextmanager
async def holder(url: str, holder_id: str | None = None) -> AsyncIterator[TurnStore]:
    """A TurnStore on an engine of its own, as another process would have."""
    engine = create_engine(url)
    try:
        yield TurnStore(engine, holder=holder_id or new_holder_id())
    finally:
        await engine.dispose()


def _message(thread_id: str) -> NewMessage:
    def make(attachments: list[Attachment]) -> ThreadItem:
        return UserMessageItem(
            id=f"msg_{secrets.token_hex(8)}",
            thread_id=thread_id,
            created_at=datetime.now(),
            content=[Text(text="hi")],
            attachments=attachments,
            inference_options={},
        )

    return make


async def new_answering_thread(turns: TurnStore) -> tuple[str, RequestContext]:
    """A new thread, leased to `turns`'s holder, as a `threads.create` turn leaves it."""
    context = RequestContext(Owner(tenant_id="acme", user_id=f"u_{secrets.token_hex(6)}"))
    thread = ThreadMetadata(id=f"thr_{secrets.token_hex(8)}", created_at=datetime.now())
    await turns.create(thread, context, new_lease(), _message(thread.id))
    return thread.id, context


async def claim(turns: TurnStore, thread_id: str, context: RequestContext) -> bool:
    """Whether `turns` takes the thread now (and then keeps it)."""
    try:
        await turns.open(thread_id, context, new_lease(), history_limit=5)
    except ThreadBusyError:
        return False
    return True


async def test_a_lease_whose_holder_stopped_beating_frees_after_the_timeout(
    database_url: str,
) -> None:
    async with holder(database_url) as dead, holder(database_url) as other:
        await other.beat()
        await dead.beat()
        silent_from = time.monotonic()  # `dead` beats no more, as after a SIGKILL
        thread_id, context = await new_answering_thread(dead)
        assert not await claim(other, thread_id, context)
        while not await claim(other, thread_id, context):
            assert time.monotonic() - silent_from < HOLDER_TIMEOUT_SECONDS + LATE_SECONDS
            await asyncio.sleep(POLL_SECONDS)
        freed_after = time.monotonic() - silent_from
    # Not before the timeout (less the time the beat itself took to commit).
    assert freed_after >= HOLDER_TIMEOUT_SECONDS - 1, freed_after


async def test_a_live_holders_lease_holds_past_the_timeout(database_url: str) -> None:
    async with holder(database_url) as live, holder(database_url) as other:
        async with holder_heartbeat(live, beat_every=0.5):
            thread_id, context = await new_answering_thread(live)
            started = time.monotonic()
            while time.monotonic() - started < HOLDER_TIMEOUT_SECONDS + 1.5:
                assert not await claim(other, thread_id, context)
                await asyncio.sleep(0.5)
        # It stopped cleanly: its row is gone, and its leases are free at once.
        assert await claim(other, thread_id, context)


async def test_a_holder_never_takes_its_own_lease_for_a_dead_ones(
    database_url: str,
) -> None:
    # A process that could not beat for a while (the database away) is still alive:
    # another stream of its own must not take the thread from its answer.
    async with holder(database_url) as silent:
        await silent.beat()
        thread_id, context = await new_answering_thread(silent)
        await asyncio.sleep(HOLDER_TIMEOUT_SECONDS + 0.5)
        assert not await claim(silent, thread_id, context)


async def test_a_lease_with_no_holder_frees_only_when_it_runs_out(database_url: str) -> None:
    # Leases taken before holders existed (a rolling upgrade) name none: they hold
    # until they run out, as they did.
    engine = create_engine(database_url)
    try:
        old = TurnStore(engine)
        thread_id, context = await new_answering_thread(old)
        async with holder(database_url) as other:
            await other.beat()
            assert not await claim(other, thread_id, context)
    finally:
        await engine.dispose()


async def test_a_starting_holder_forgets_holders_long_silent(database_url: str) -> None:
    async with holder(database_url) as dead:
        await dead.beat()
        await asyncio.sleep(HOLDER_TIMEOUT_SECONDS + 0.5)
        async with holder(database_url) as starting, holder_heartbeat(starting):
            rows = await _holder_ids(starting)
            assert starting.holder in rows
            assert dead.holder not in rows
        assert starting.holder not in await _holder_ids(dead)


async def _holder_ids(turns: TurnStore) -> set[str]:
    async with turns.engine.connect() as conn:
        return set((await conn.execute(select(UNPREFIXED.holders.c.id))).scalars())

"""One answer at a time per thread: a second stream is 409 while an answer runs, and the
answer lease is released, and runs out at its end. (Its holder's heartbeat, which frees
it soon after a crash: tests/store/test_lease_holders.py and test_crash_recovery.py.)"""

import asyncio
from typing import Any

import pytest

from chatkit_backend.chat.leases import new_lease
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.tables import UNPREFIXED
from chatkit_backend.store.turns import Lease, ThreadBusyError, TurnStore
from tests.support.chat_client import assert_envelope, local_app
from tests.support.ops import body, lease_of, message, wait_for_lease
from tests.support.sse import answer_text, parse_events, user_input


async def test_a_second_stream_on_an_answering_thread_is_409(database_url: str) -> None:
    async with local_app(database_url, offline_token_delay_ms=20) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
        assert await lease_of(database_url, thread_id) is None  # released at the end

        first = asyncio.create_task(http.post("/chatkit", json=message(thread_id, "first")))
        await wait_for_lease(database_url, thread_id, held=True)
        busy = await http.post("/chatkit", json=message(thread_id, "second"))
        assert_envelope(busy, 409, "thread_busy")
        assert busy.headers["retry-after"] == "1"
        retried = await http.post(
            "/chatkit", json=body("threads.retry_after_item", thread_id=thread_id, item_id="x")
        )
        assert retried.status_code == 404  # checks come first: a bad item is still 404
        # Reading is never blocked.
        assert (
            await http.post("/chatkit", json=body("items.list", thread_id=thread_id))
        ).is_success
        answered = await first
        assert '"first"' in answer_text(parse_events(answered.text))
        await wait_for_lease(database_url, thread_id, held=False)
        again = await http.post("/chatkit", json=message(thread_id, "second"))
        assert '"second"' in answer_text(parse_events(again.text))
        items = (
            await http.post("/chatkit", json=body("items.list", thread_id=thread_id, order="asc"))
        ).json()
        # The refused message was never stored.
        users = [i for i in items["data"] if i["type"] == "user_message"]
        assert [u["content"][0]["text"] for u in users] == ["hi", "first", "second"]


async def test_a_new_thread_is_locked_while_its_first_answer_runs(sqlite_database_url: str) -> None:
    async with local_app(sqlite_database_url, offline_token_delay_ms=20) as (_app, http):
        creating = asyncio.create_task(
            http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        )
        thread_id = None
        for _ in range(500):
            page = (await http.post("/chatkit", json=body("threads.list"))).json()
            if page["data"]:
                thread_id = page["data"][0]["id"]
                break
            await asyncio.sleep(0.01)
        assert thread_id is not None
        await wait_for_lease(sqlite_database_url, thread_id, held=True)
        assert_envelope(await http.post("/chatkit", json=message(thread_id)), 409, "thread_busy")
        await creating
        await wait_for_lease(sqlite_database_url, thread_id, held=False)


async def test_a_lease_runs_out_at_its_end(sqlite_database_url: str) -> None:
    async with local_app(sqlite_database_url) as (_, http):
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("x")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
    engine = create_engine(sqlite_database_url)
    try:
        owner = await _owner(engine, thread_id)
        turns = TurnStore(engine)

        async def claim(lease: Lease) -> None:
            await turns.open(thread_id, owner, lease, history_limit=5)

        unreleased = new_lease(0.3)
        await claim(unreleased)  # never released
        with pytest.raises(ThreadBusyError):
            await claim(new_lease(0.3))
        await asyncio.sleep(0.4)
        taken = new_lease(0.3)
        await claim(taken)  # ran out: free for the next one
        await turns.release(thread_id, unreleased)  # a late release by the old holder frees nothing
        with pytest.raises(ThreadBusyError):
            await claim(new_lease(0.3))
        await turns.release(thread_id, taken)
        last = new_lease(0.3)
        await claim(last)
        await turns.release(thread_id, last)
    finally:
        await engine.dispose()


async def _owner(engine: Any, thread_id: str) -> RequestContext:
    from sqlalchemy import select

    async with engine.connect() as conn:
        query = select(UNPREFIXED.threads.c.tenant_id, UNPREFIXED.threads.c.user_id).where(
            UNPREFIXED.threads.c.id == thread_id
        )
        tenant_id, user_id = (await conn.execute(query)).one()
    return RequestContext(Owner(tenant_id=tenant_id, user_id=user_id))

"""Many users at once, several turns each, some hit by model faults: the books balance.

Every user (a JWT of their own) runs two threads at the same time, turn after turn,
against one real server on PostgreSQL. Some turns are cut mid-answer or refused by the
model. Each client keeps the items the server acknowledged (`thread.item.done`), in
order. Afterwards each thread holds exactly those items, in that order (read back page
by page), each user lists exactly their own threads, every full answer is the answer to
that thread's own question, and the database pool never grew past its size. The long
run's crowd can overload the pool: a turn may then be refused (a clean `error`, counted
as such), and the books must balance all the same.
"""

import asyncio
import re
import secrets

import httpx
import pytest

from tests.reliability.kit import (
    LONG,
    POOL,
    all_items,
    all_threads,
    client_for,
    count,
    create_body,
    message_body,
    scale,
    stream,
    summary,
    text_of,
)
from tests.reliability.servers import gauges_at_rest
from tests.support.fake_openai import FakeOpenAI, Recorded, Reply
from tests.support.postgres import postgres_backends
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

USERS = scale(8, 60)
THREADS_PER_USER = 2
TURNS = scale(3, 8)
# Every seventh turn is cut after two tokens, every eleventh refused (429): see `reply`.
CUT, REFUSED = 7, 11


def reply(request: Recorded) -> Reply:
    """The answer to the last user message names it, so crossed wires would show."""
    question = request.messages()[-1][1]
    number = int(re.findall(r"turn (\d+)", question)[0])
    text = f"Answer to: {question}"
    if number % REFUSED == 0:
        return Reply(status=429)
    if number % CUT == 0:
        return Reply(text=text, cut_after=2)
    return Reply(text=text, delta_delay=0.002)


def tenant_of(user: str) -> str:
    return f"tenant-{user[-1]}"  # some users share a tenant, some do not


async def test_concurrent_users_find_exactly_what_was_acknowledged(
    served: ServerProcess, fake: FakeOpenAI
) -> None:
    fake.respond_with(reply)
    ledger: dict[str, list[tuple[str, str, str]]] = {}  # thread -> acknowledged items
    owners: dict[str, set[str]] = {}  # user -> their threads
    turns = iter(range(1, 10**9))
    faults = overloaded = 0
    most_connections = 0

    async def converse(http: httpx.AsyncClient, user: str) -> None:
        nonlocal faults, overloaded
        thread_id: str | None = None
        for _ in range(TURNS):
            number = next(turns)
            text = f"turn {number} of {user}"
            body = create_body(text) if thread_id is None else message_body(thread_id, text)
            turn = await stream(http, body)
            assert turn.status == 200 and turn.ended_cleanly, turn.body
            answers = [i for i in turn.acknowledged if i["type"] == "assistant_message"]
            if number % REFUSED == 0 or number % CUT == 0:
                faults += 1
                assert turn.errors and turn.events[-1] == turn.errors[0], turn.events
            elif turn.errors:
                # Overload: no pooled connection free within POOL_TIMEOUT_SECONDS. A clean
                # refusal, not a loss (the books below must balance all the same); the
                # fast run is far from it and must see none.
                assert LONG and turn.events[-1] == turn.errors[0], turn.events
                overloaded += 1
            else:
                assert [text_of(a) for a in answers] == [f"Answer to: {text}"]
            thread_id = thread_id or turn.thread_id
            if thread_id is None:  # refused before the thread was created: none to count
                continue
            owners[user].add(thread_id)
            ledger.setdefault(thread_id, []).extend(summary(i) for i in turn.acknowledged)

    async def user_session(user: str) -> None:
        owners[user] = set()
        async with client_for(served, user, tenant_of(user)) as h:
            await asyncio.gather(*(converse(h, user) for _ in range(THREADS_PER_USER)))

    async def watch_connections() -> None:
        nonlocal most_connections
        while True:
            found = await postgres_backends(served.env["DATABASE_URL"])
            most_connections = max(most_connections, found)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_connections())
    users = [f"user-{n:03d}-{secrets.token_hex(2)}" for n in range(USERS)]
    await asyncio.gather(*(user_session(user) for user in users))
    watcher.cancel()
    assert most_connections <= POOL, f"{most_connections} connections, pool is {POOL}"
    await gauges_at_rest(served)

    checked = 0
    for user in users:
        async with client_for(served, user, tenant_of(user)) as h:
            assert set(await all_threads(h)) == owners[user]
            for thread_id in owners[user]:
                stored = [summary(item) for item in await all_items(h, thread_id, page=3)]
                assert stored == ledger[thread_id], thread_id
                checked += len(stored)
    assert checked == sum(len(items) for items in ledger.values())
    count(streams=USERS * THREADS_PER_USER * TURNS, faults_injected=faults, items_checked=checked)
    count(refused_under_overload=overloaded)

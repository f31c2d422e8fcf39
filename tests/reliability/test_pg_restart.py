"""PostgreSQL restarts while answers stream; requests fail cleanly, nothing accepted is
lost, and the server recovers by itself.

A PostgreSQL cluster of the test's own (`postgres_cluster`, tests/conftest.py) under a
real server: several answers are streaming (messages acknowledged, answers half shown)
when the cluster stops. Every open stream ends with an `error` event after a complete
frame; requests during the outage are 503 `database_unavailable` JSON (or, for a new
thread, a stream ending in an error); after the cluster is back the server answers
again without a restart, every thread loads, every acknowledged item is there in order,
nothing is there that nobody sent, every thread takes a new message, and the server's
gauges show no stream open and no connection checked out.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.kit import (
    Ledger,
    Turn,
    count,
    create_body,
    eventually,
    message_body,
    scale,
    stream,
    text_of,
)
from tests.reliability.servers import gauges_at_rest, served_on
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.postgres import ThrowawayPostgres
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ANSWER = " ".join(f"piece{n}" for n in range(40)) + "."
ROUNDS = scale(1, 3)
IN_FLIGHT = scale(4, 8)


@pytest.fixture
def served(
    postgres_cluster: ThrowawayPostgres, fake_server: FakeOpenAI, tmp_path: Path
) -> Iterator[ServerProcess]:
    env = {"MAX_STREAMS_PER_USER": str(IN_FLIGHT + 1), "RATE_LIMIT_PER_MINUTE": "100000"}
    with served_on(postgres_cluster.url, tmp_path, fake_server.base_url, **env) as served:
        yield served


async def test_a_postgres_restart_mid_stream_loses_no_accepted_message(
    served: ServerProcess, postgres_cluster: ThrowawayPostgres, fake: FakeOpenAI
) -> None:
    cluster = postgres_cluster
    ledger = Ledger()
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
        fake.always(Reply(text=ANSWER))
        for n in range(2):
            turn = await stream(http, create_body(f"settled {n}"))
            assert turn.thread_id is not None
            ledger.record(turn.thread_id, f"settled {n}", turn)
        for round in range(ROUNDS):
            fake.always(Reply(text=ANSWER, delta_delay=0.05))
            earlier = list(ledger.sent)[: IN_FLIGHT // 2]
            bodies = [message_body(thread, f"round {round} to {thread}") for thread in earlier]
            bodies += [
                create_body(f"round {round} new {n}") for n in range(IN_FLIGHT - len(earlier))
            ]
            turns = [Turn(0) for _ in bodies]
            tasks = [
                asyncio.create_task(stream(http, body, turn=turn))
                for body, turn in zip(bodies, turns, strict=True)
            ]
            await eventually(
                lambda: all(t.user_message and t.shown_text for t in turns),  # noqa: B023
                "every stream acknowledged its message and showed part of its answer",
            )
            await asyncio.to_thread(cluster.stop)
            await asyncio.gather(*tasks)
            for body, turn in zip(bodies, turns, strict=True):
                assert turn.status == 200 and turn.ended_cleanly, turn.body
                assert turn.events[-1]["type"] == "error", turn.events[-3:]
                thread_id = body["params"].get("thread_id") or turn.thread_id
                assert turn.user_message is not None and thread_id is not None
                ledger.record(thread_id, text_of(turn.user_message), turn)

            await _outage_is_refused_cleanly(http, next(iter(ledger.sent)))
            await asyncio.to_thread(cluster.start)
            await eventually(lambda: _ready(http), "the server answers again", seconds=15)

            checked = await ledger.check_stored(http, ANSWER)
            await _every_thread_takes_a_message(http, fake, ledger)
            count(faults_injected=1, streams=IN_FLIGHT + len(ledger.sent), items_checked=checked)
        await gauges_at_rest(served)


async def _outage_is_refused_cleanly(http: httpx.AsyncClient, thread_id: str) -> None:
    listed = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
    assert listed.status_code == 503 and listed.headers["retry-after"], listed.text
    assert listed.json()["error"]["code"] == "database_unavailable"
    refused = await stream(http, message_body(thread_id, "during the outage"))
    assert refused.status == 503 and '"database_unavailable"' in refused.body, refused.body
    created = await stream(http, create_body("a new thread during the outage"))
    # Its stream starts before its first write: it ends with an error, cleanly.
    assert created.status == 503 or (created.ended_cleanly and created.errors), created


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _every_thread_takes_a_message(
    http: httpx.AsyncClient, fake: FakeOpenAI, ledger: Ledger
) -> None:
    fake.always(Reply(text=ANSWER))
    for thread_id in list(ledger.sent):
        text = f"after the outage {len(ledger.sent[thread_id])}"
        for _ in range(100):  # a lock the outage kept from being freed is freed shortly
            turn = await stream(http, message_body(thread_id, text))
            if turn.status != 409:
                break
            await asyncio.sleep(0.1)
        assert turn.status == 200 and turn.ended_cleanly and not turn.errors, turn.body
        assert text_of(turn.acknowledged[-1]) == ANSWER
        ledger.record(thread_id, text, turn)

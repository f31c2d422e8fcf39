"""The server is killed with SIGKILL in the middle of answers; nothing accepted is lost.

A real server on PostgreSQL answers several streams at once (new threads and messages
to earlier ones) slowly; once every stream has its message acknowledged and part of
its answer shown, the process gets SIGKILL: no shutdown code runs. After a restart,
every thread loads, every item the server acknowledged is there, in order, nothing is
there that was never sent, and every thread takes a new message (the ones that were
answering once the dead process's lease holder is seen silent: test_crash_recovery.py).
"""

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatkit_backend.store.turns import HOLDER_TIMEOUT_SECONDS
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
from tests.reliability.servers import served_on_postgres
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

ANSWER = " ".join(f"part{n}" for n in range(40)) + "."
ROUNDS = scale(1, 4)
IN_FLIGHT = scale(4, 8)  # streams open when the process is killed
# A thread whose answer was running when its process died answers 409 `thread_busy`
# until the dead process's heartbeat has been silent for HOLDER_TIMEOUT_SECONDS (see
# chat/leases.py); both runs wait that out and write to every thread.
PATIENCE_SECONDS = HOLDER_TIMEOUT_SECONDS + 10


@pytest.fixture
def served(fake_server: FakeOpenAI, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, with no auth: it is killed."""
    env = {"MAX_STREAMS_PER_USER": str(IN_FLIGHT + 1), "RATE_LIMIT_PER_MINUTE": "100000"}
    with served_on_postgres(tmp_path, fake_server.base_url, **env) as served:
        yield served


async def test_sigkill_mid_stream_loses_no_accepted_message(
    served: ServerProcess, fake: FakeOpenAI
) -> None:
    ledger = Ledger()
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
        fake.always(Reply(text=ANSWER))
        for n in range(3):  # conversations that finished before any trouble
            turn = await stream(http, create_body(f"settled {n}"))
            assert turn.thread_id is not None
            ledger.record(turn.thread_id, f"settled {n}", turn)
        for round in range(ROUNDS):
            await _kill_mid_answers(served, http, fake, ledger, round)
            checked = await ledger.check_stored(http, ANSWER)
            count(faults_injected=1, items_checked=checked, streams=IN_FLIGHT)
            await _every_thread_takes_a_message(http, fake, ledger)


async def _kill_mid_answers(
    served: ServerProcess, http: httpx.AsyncClient, fake: FakeOpenAI, ledger: Ledger, round: int
) -> None:
    fake.always(Reply(text=ANSWER, delta_delay=0.05))  # two seconds an answer
    earlier = list(ledger.sent)[1 : 1 + IN_FLIGHT // 2]  # the first thread stays idle
    bodies = [message_body(thread, f"round {round} to {thread}") for thread in earlier]
    bodies += [create_body(f"round {round} new {n}") for n in range(IN_FLIGHT - len(bodies))]
    turns = [Turn(0) for _ in bodies]
    tasks = [
        asyncio.create_task(_cut_off(stream(http, body, turn=turn)))
        for body, turn in zip(bodies, turns, strict=True)
    ]

    def all_mid_answer() -> bool:
        refused = [(turn.status, turn.body) for turn in turns if turn.status not in (0, 200)]
        assert not refused, refused
        return all(turn.user_message and turn.shown_text for turn in turns)

    await eventually(
        all_mid_answer, "every stream acknowledged its message and showed part of its answer"
    )
    served.kill()
    await asyncio.gather(*tasks)
    for body, turn in zip(bodies, turns, strict=True):
        thread_id = body["params"].get("thread_id") or turn.thread_id
        assert turn.user_message is not None and thread_id is not None
        ledger.record(thread_id, text_of(turn.user_message), turn)
    served.start()


async def _cut_off(reading: Coroutine[Any, Any, Turn]) -> None:
    """Read a stream that the server's death will cut."""
    with pytest.raises(httpx.TransportError):
        await reading


async def _every_thread_takes_a_message(
    http: httpx.AsyncClient, fake: FakeOpenAI, ledger: Ledger
) -> None:
    fake.always(Reply(text=ANSWER))

    async def write(thread_id: str) -> None:
        text = f"after the crash {len(ledger.sent[thread_id])}"
        waited = 0
        while True:
            turn = await stream(http, message_body(thread_id, text))
            if turn.status == 409:  # still locked by the answer that died with the process
                assert '"thread_busy"' in turn.body, turn.body
            if turn.status not in (409, 429) or waited >= PATIENCE_SECONDS:
                break
            await asyncio.sleep(1)
            waited += 1
        assert turn.status == 200 and turn.ended_cleanly and not turn.errors, turn.body
        assert text_of(turn.acknowledged[-1]) == ANSWER
        ledger.record(thread_id, text, turn)

    await asyncio.gather(*(write(thread_id) for thread_id in ledger.sent))

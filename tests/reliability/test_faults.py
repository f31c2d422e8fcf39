"""The model upstream fails in every way we know; the user loses nothing.

A real `chatkit-backend serve` process on a fresh PostgreSQL database talks to the fake
OpenAI server over HTTP. For each fault: the stream ends with one `error` event (after a
complete frame), the user's message is stored, the partial answer the model had given
is stored (all of it, also what the Agents SDK dropped unshown), the stored items are
exactly the ones the stream acknowledged, the next message works and the model sees the
partial answer as history, and no upstream stream is left open.
"""

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.reliability.kit import (
    LONG,
    SECRET,
    all_items,
    client_for,
    count,
    create_body,
    message_body,
    stream,
    summary,
    text_of,
)
from tests.reliability.servers import served_on_postgres
from tests.support.fake_openai import FakeOpenAI, Reply, tokens
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

ANSWER = "The answer is forty-two, as everyone who has read the book knows by now."
RECOVERED = "Back again: the answer is forty-two."


@dataclass(frozen=True)
class Fault:
    name: str
    reply: Reply
    kept: int  # how many of the answer's tokens the thread keeps
    allow_retry: bool = True


FAULTS = [
    Fault("401 refused key", Reply(status=401), 0, allow_retry=False),
    Fault("429 rate limited", Reply(status=429), 0),
    Fault("500 server error", Reply(status=500), 0),
    Fault("502 bad gateway", Reply(status=502), 0),
    Fault("timeout before the first byte", Reply(stall=5), 0),
    Fault("timeout before the first token", Reply(text=ANSWER, delta_delay=5), 0),
    Fault("cut mid-answer", Reply(text=ANSWER, cut_after=4), 4),
    Fault("cut mid-answer, slowly", Reply(text=ANSWER, cut_after=4, delta_delay=0.05), 4),
    Fault("stall mid-answer", Reply(text=ANSWER, stall=5, stall_after=4), 4),
    Fault("garbage bytes", Reply(text=ANSWER, cut_after=3, garbage=b"\x00\xff\xfe\x9c\x80\n\n"), 3),
    Fault(
        "malformed JSON event",
        Reply(text=ANSWER, cut_after=3, garbage=b'data: {"type": "response.output_text\n\n'),
        3,
    ),
    Fault(
        "clean end without completing",
        Reply(text=ANSWER, cut_after=3, garbage=b"event: ping\n\n"),
        3,
    ),
    Fault("garbage from the start", Reply(text=ANSWER, garbage=bytes(range(256))), 0),
]
# The long run also speaks Chat Completions (Gemini, Ollama, vLLM ...).
APIS = ["responses", "chat_completions"] if LONG else ["responses"]


@pytest.fixture(scope="module", params=APIS)
def api_server(
    request: pytest.FixtureRequest,
    fake_server: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """The shared server (Responses API), or one speaking Chat Completions."""
    if request.param == "responses":
        yield request.getfixturevalue("served")
        return
    env = {"LLM_API": request.param, "AUTH_MODE": "jwt", "JWT_SECRET": SECRET}
    path = tmp_path_factory.mktemp("chat")
    with served_on_postgres(path, fake_server.base_url, **env) as served:
        yield served


async def no_upstream_streams_left(fake: FakeOpenAI) -> None:
    """Every model call the server started has ended: none outlives its turn."""
    for _ in range(250):
        if fake.streaming == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{fake.streaming} upstream streams are still open")


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
async def test_a_model_fault_loses_nothing(
    api_server: ServerProcess, fake: FakeOpenAI, fault: Fault
) -> None:
    served = api_server
    fake.always(fault.reply)
    question = f"Question {secrets.token_hex(4)}?"
    partial = "".join(tokens(ANSWER)[: fault.kept])
    async with client_for(served) as http:
        turn = await stream(http, create_body(question))
        assert turn.status == 200 and turn.ended_cleanly, turn.body
        [error] = turn.errors
        assert turn.events[-1] == error, "the error must end the stream"
        assert error["allow_retry"] is fault.allow_retry and error["message"]
        assert served.env["OPENAI_API_KEY"] not in json.dumps(turn.events)
        thread_id = turn.thread_id
        assert thread_id is not None

        stored = await all_items(http, thread_id)
        expected = [("user_message", question)]
        expected += [("assistant_message", partial)] if partial else []
        assert [(item["type"], text_of(item)) for item in stored] == expected
        # Stored is what was acknowledged: the partial answer came with `thread.item.done`.
        assert [summary(item) for item in stored] == [summary(i) for i in turn.acknowledged]

        fake.always(Reply(text=RECOVERED))
        again = await stream(http, message_body(thread_id, "And now?"))
        assert again.status == 200 and again.ended_cleanly and not again.errors, again.events
        history = [("user", question), *([("assistant", partial)] if partial else [])]
        said = [m for m in fake.requests[-1].messages() if m[0] != "system"]  # Chat: instructions
        assert said == [*history, ("user", "And now?")]
        stored = await all_items(http, thread_id)
        acknowledged = turn.acknowledged + again.acknowledged
        assert [summary(item) for item in stored] == [summary(i) for i in acknowledged]
        assert text_of(stored[-1]) == RECOVERED
    await no_upstream_streams_left(fake)
    count(faults_injected=1, streams=2, items_checked=len(stored))

"""The reliability suite's tools: its size, its figures, and a client that keeps account
of what the server acknowledged (servers.py starts the servers).

Fast by default (it runs in `make test`); `RELIABILITY_LONG=1` (`make test-long`) runs
the same tests with many more users, turns, disconnects, kills and generated cases.
"""

import asyncio
import inspect
import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from hypothesis import HealthCheck, settings

from chatkit_backend.auth.mint import mint_token
from chatkit_backend.settings import Settings
from tests.support.processes import ServerProcess
from tests.support.sse import user_input

LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
# The shared server's settings (see conftest.py).
SECRET = secrets.token_hex(32)  # JWT_SECRET
POOL = 5  # DATABASE_POOL_SIZE
SLOTS = 4  # MAX_STREAMS_PER_USER
MAX_BODY = 64 * 1024  # MAX_BODY_BYTES: small, so bodies over it are cheap to make

Event = dict[str, Any]
T = TypeVar("T")

# What the suite measured, printed at the end of the run (see conftest) and quoted in
# docs/reliability.md: generated requests, streams, faults injected, stored items checked. Items
# found missing are not counted: any such finding fails its test.
FIGURES: Counter[str] = Counter()

# Generated cases: the same ones on every CI run (derandomized); new ones in the long run.
FUZZ = settings(
    max_examples=3000 if LONG else 250,
    deadline=None,
    derandomize=not LONG,  # the same cases on every CI run; new ones in the long run
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def scale(fast: int, long: int) -> int:
    return long if LONG else fast


def count(**amounts: int) -> None:
    FIGURES.update(amounts)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, seconds: float = 10
) -> None:
    """Wait until `check()` holds; fail naming `what` if it never does."""
    for _ in range(int(seconds / 0.05)):
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened within {seconds} s: {what}")


# ---- a client that keeps account ----


def token(user: str, tenant: str = "acme") -> str:
    """A bearer token for the shared server (see conftest.py)."""
    settings = Settings(_env_file=None, auth_mode="jwt", jwt_secret=SECRET)  # type: ignore[call-arg]
    return mint_token(settings, user=user, tenant=tenant, role=None)


def client_for(
    served: ServerProcess, user: str | None = None, tenant: str = "acme"
) -> httpx.AsyncClient:
    """An HTTP client acting as `user` (a new one by default) on the shared server."""
    user = user or f"user-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {token(user, tenant)}"}
    return httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=60)


def create_body(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text)}}


def message_body(thread_id: str, text: str) -> dict[str, Any]:
    params = {"thread_id": thread_id, "input": user_input(text)}
    return {"type": "threads.add_user_message", "params": params}


@dataclass
class Turn:
    """One streamed request as its client saw it."""

    status: int
    events: list[Event] = field(default_factory=list)
    body: str = ""  # the response body of a refused (non-stream) request
    retry_after: str | None = None  # the Retry-After of a refused request
    ended_cleanly: bool = False  # the server closed the stream after a complete frame

    @property
    def thread_id(self) -> str | None:
        for event in self.events:
            if event["type"] == "thread.created":
                thread_id: str = event["thread"]["id"]
                return thread_id
        return None

    @property
    def acknowledged(self) -> list[Event]:
        """The items the server said it finished (and so stored), in order."""
        return [event["item"] for event in self.events if event["type"] == "thread.item.done"]

    @property
    def user_message(self) -> Event | None:
        found = [item for item in self.acknowledged if item["type"] == "user_message"]
        return found[0] if found else None

    @property
    def answer_id(self) -> str | None:
        """The id of the first answer the stream started (`thread.item.added`)."""
        for event in self.events:
            if event["type"] == "thread.item.added":
                item: Event = event["item"]
                if item["type"] == "assistant_message":
                    return str(item["id"])
        return None

    @property
    def errors(self) -> list[Event]:
        return [event for event in self.events if event["type"] == "error"]

    @property
    def shown_text(self) -> str:
        """The answer text the client was shown, delta by delta."""
        return "".join(
            event["update"]["delta"]
            for event in self.events
            if event["type"] == "thread.item.updated"
            and event["update"]["type"] == "assistant_message.content_part.text_delta"
        )


async def stream(
    http: httpx.AsyncClient,
    body: dict[str, Any],
    stop_after: int | None = None,
    turn: Turn | None = None,
) -> Turn:
    """Post a streaming request and read its events into `turn` (a new one by default, or
    one another task watches fill up); with `stop_after`, hang up after that many events
    (0: as soon as the response starts), as a closed browser tab does."""
    turn = turn if turn is not None else Turn(0)
    async with http.stream("POST", "/chatkit", json=body) as response:
        turn.status = response.status_code
        if response.status_code != 200:
            turn.body = (await response.aread()).decode()
            turn.retry_after = response.headers.get("retry-after")
            return turn
        assert response.headers["content-type"].startswith("text/event-stream")
        if stop_after == 0:
            return turn
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))
            elif line == "" and data:
                turn.events.append(json.loads("\n".join(data)))
                data = []
                if stop_after is not None and len(turn.events) >= stop_after:
                    return turn
        turn.ended_cleanly = not data
    return turn


async def all_items(http: httpx.AsyncClient, thread_id: str, page: int = 7) -> list[Event]:
    """Every visible item of a thread, oldest first, read page by page."""
    items: list[Event] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"thread_id": thread_id, "order": "asc", "limit": page}
        if after is not None:
            params["after"] = after
        response = await http.post("/chatkit", json={"type": "items.list", "params": params})
        assert response.status_code == 200, response.text
        data = response.json()
        items += data["data"]
        if not data["has_more"]:
            return items
        after = data["after"]


async def all_threads(http: httpx.AsyncClient) -> list[str]:
    ids: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"order": "asc", "limit": 50}
        if after is not None:
            params["after"] = after
        response = await http.post("/chatkit", json={"type": "threads.list", "params": params})
        assert response.status_code == 200, response.text
        data = response.json()
        ids += [thread["id"] for thread in data["data"]]
        if not data["has_more"]:
            return ids
        after = data["after"]


def text_of(item: Event) -> str:
    return "".join(part.get("text", "") for part in item.get("content", []))


def summary(item: Event) -> tuple[str, str, str]:
    """What must match between an acknowledged item and the stored one."""
    return (item["id"], item["type"], text_of(item))


class Ledger:
    """What clients sent to each thread, and what the server acknowledged, for tests
    where acknowledgements can be lost in transit (a killed server, a database outage)."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.acknowledged: dict[str, list[tuple[str, str, str]]] = {}

    def record(self, thread_id: str, text: str, turn: Turn) -> None:
        self.sent.setdefault(thread_id, []).append(text)
        acknowledged = self.acknowledged.setdefault(thread_id, [])
        acknowledged += [summary(item) for item in turn.acknowledged]

    async def check_stored(self, http: httpx.AsyncClient, answer: str) -> int:
        """Every thread loads and holds every acknowledged item, in order, and nothing
        that nobody sent or the model never said; returns how many items were read."""
        checked = 0
        for thread_id, acknowledged in self.acknowledged.items():
            body = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
            loaded = await http.post("/chatkit", json=body)
            assert loaded.status_code == 200, loaded.text
            stored = await all_items(http, thread_id)
            remaining = iter(summary(item) for item in stored)
            missing = [item for item in acknowledged if not any(item == s for s in remaining)]
            assert not missing, (thread_id, missing)
            for item in stored:
                if item["type"] == "user_message":
                    assert text_of(item) in self.sent[thread_id], item
                else:
                    assert item["type"] == "assistant_message", item
                    assert text_of(item) and answer.startswith(text_of(item)), item
            checked += len(stored)
        return checked


class LoopThread:
    """An event loop of its own in a thread: hypothesis drives sync tests, the app is async."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=120)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

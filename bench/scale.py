"""Scale mode: does anything slow down as threads grow?

    python -m bench.scale '<json config>'   # prints one JSON result on stdout

On a migrated database it first writes a small world (the local user with a few
threads, one of them `small_items` items long) and times the calls a client makes;
then fills the store, by bulk SQL through the project's own tables, to the big world
(`threads` threads for the same user, one thread of `big_items` items, `total_items`
items in all) and times the same calls again, on the big thread and on the small one.

Each call is timed directly on the store (`SQLStore`, as the server uses it) and over
HTTP, against `chatkit-backend serve` on the same database:
- list: `load_threads` / `threads.list`, the first page and one deep in the list;
- get: `load_thread` + the first page of items / `threads.get_by_id`;
- history: the newest 30 items (`load_thread_items(..., "desc")`) / `items.list` desc;
- page: 20 items after one in the middle of the thread / `items.list` with `after`.
"""

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from sqlalchemy import Table, insert, text

from bench.wire import Connection
from chatkit_backend.context import RequestContext
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.sql_store import ITEMS, THREADS, SQLStore

USER = RequestContext(user_id="local", tenant_id="local", role="member")
BATCH = 5000
ROUNDS = 100  # items are written in rounds, so threads' items interleave as in real use
HISTORY = 30
PAGE = 20


def _thread_id(n: int) -> str:
    return f"thr_{n:032x}"


def _item_id(n: int) -> str:
    return f"msg_{n:032x}"


class Templates:
    """JSON of real SDK models, with placeholders for the ids: valid rows, made fast."""

    def __init__(self) -> None:
        now = datetime(2026, 1, 1, 12, 0, 0)
        self.thread = ThreadMetadata(id="THREAD", title="A thread", created_at=now).model_dump_json(
            exclude={"items"}
        )
        self.user = UserMessageItem(
            id="ITEM",
            thread_id="THREAD",
            created_at=now,
            content=[UserMessageTextContent(text="A question about the benchmark?")],
            attachments=[],
            inference_options=InferenceOptions(),
        ).model_dump_json()
        answer = "An answer of a realistic length, " * 8
        self.assistant = AssistantMessageItem(
            id="ITEM",
            thread_id="THREAD",
            created_at=now,
            content=[AssistantMessageContent(text=answer.strip())],
        ).model_dump_json()


def _thread_rows(first: int, count: int, t: Templates) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": _thread_id(n),
            "tenant_id": USER.tenant_id,
            "user_id": USER.user_id,
            "created_at": now,
            "updated_at": now,
            "data": t.thread.replace("THREAD", _thread_id(n)),
        }
        for n in range(first, first + count)
    ]


def _item_rows(
    targets: dict[int, int], done: dict[int, int], first_item: int, t: Templates
) -> Iterator[dict[str, Any]]:
    """Items for each thread up to its target, round by round, user and answer in turn."""
    now = datetime.now(UTC)
    n = first_item
    for r in range(ROUNDS):
        for thread, target in targets.items():
            want = target * (r + 1) // ROUNDS - done[thread]
            for _ in range(want):
                kind = "user_message" if done[thread] % 2 == 0 else "assistant_message"
                template = t.user if kind == "user_message" else t.assistant
                thread_id = _thread_id(thread)
                yield {
                    "id": _item_id(n),
                    "thread_id": thread_id,
                    "tenant_id": USER.tenant_id,
                    "user_id": USER.user_id,
                    "type": kind,
                    "created_at": now,
                    "data": template.replace("ITEM", _item_id(n)).replace("THREAD", thread_id),
                }
                done[thread] += 1
                n += 1


async def _insert(store: SQLStore, table: Table, rows: Iterator[dict[str, Any]] | list[Any]) -> int:
    """Bulk insert: COPY on PostgreSQL, executemany batches on SQLite."""
    count = 0
    batch: list[dict[str, Any]] = []

    async def flush() -> None:
        if not batch:
            return
        async with store.engine.begin() as conn:
            if store.engine.dialect.name == "postgresql":
                raw = await conn.get_raw_connection()
                columns = list(batch[0])
                await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                    table.name,
                    records=[tuple(r[c] for c in columns) for r in batch],
                    columns=columns,
                )
            else:
                await conn.execute(insert(table), batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= BATCH:
            await flush()
    await flush()
    return count


async def _time(call: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    for _ in range(max(3, repeat // 10)):
        await call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1000, 3),
    }


async def _direct(
    store: SQLStore, thread_id: str, deep_thread: str | None, deep_item: str | None, repeat: int
) -> dict[str, dict[str, float]]:
    async def list_first() -> None:
        await store.load_threads(PAGE, None, "desc", USER)

    async def list_deep() -> None:
        await store.load_threads(PAGE, deep_thread, "desc", USER)

    async def get() -> None:
        # What threads.get_by_id does: the thread and the first page of its items.
        await store.load_thread(thread_id, USER)
        await store.load_thread_items(thread_id, None, PAGE, "asc", USER)

    async def history() -> None:
        page = await store.load_thread_items(thread_id, None, HISTORY, "desc", USER)
        assert len(page.data) == HISTORY

    async def page_deep() -> None:
        page = await store.load_thread_items(thread_id, deep_item, PAGE, "asc", USER)
        assert len(page.data) == PAGE

    return {
        "list": await _time(list_first, repeat),
        "list_deep": await _time(list_deep, repeat),
        "get": await _time(get, repeat),
        "history": await _time(history, repeat),
        "page_deep": await _time(page_deep, repeat),
    }


async def _http(
    port: int, thread_id: str, deep_thread: str | None, deep_item: str | None, repeat: int
) -> dict[str, dict[str, float]]:
    conn = Connection("127.0.0.1", port)

    def call(kind: str, **params: Any) -> Callable[[], Awaitable[None]]:
        body = json.dumps({"type": kind, "params": params}).encode()

        async def send() -> None:
            status, answer = await conn.post("/chatkit", body)
            if status != 200:
                raise RuntimeError(f"{kind}: HTTP {status}: {answer[:200]!r}")

        return send

    try:
        return {
            "list": await _time(call("threads.list", limit=PAGE, order="desc"), repeat),
            "list_deep": await _time(
                call("threads.list", limit=PAGE, order="desc", after=deep_thread), repeat
            ),
            "get": await _time(call("threads.get_by_id", thread_id=thread_id), repeat),
            "history": await _time(
                call("items.list", thread_id=thread_id, limit=HISTORY, order="desc"), repeat
            ),
            "page_deep": await _time(
                call("items.list", thread_id=thread_id, limit=PAGE, order="asc", after=deep_item),
                repeat,
            ),
        }
    finally:
        conn.close()


async def _middle_item(store: SQLStore, thread_id: str) -> str:
    async with store.engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT count(*) FROM items WHERE thread_id = :t"), {"t": thread_id}
            )
        ).scalar_one()
        row = (
            await conn.execute(
                text("SELECT id FROM items WHERE thread_id = :t ORDER BY seq LIMIT 1 OFFSET :o"),
                {"t": thread_id, "o": (count - PAGE) // 2},
            )
        ).scalar_one()
    return str(row)


async def fill_small(url: str, config: dict[str, Any]) -> dict[str, Any]:
    """The small world: `small_threads` threads, thread 0 with `small_items` items."""
    engine = create_engine(url)
    store = SQLStore(engine)
    t = Templates()
    try:
        n_threads = int(config["small_threads"])
        await _insert(store, THREADS, _thread_rows(0, n_threads, t))
        targets = {0: int(config["small_items"])} | {i: 10 for i in range(1, n_threads)}
        done = dict.fromkeys(targets, 0)
        items = await _insert(store, ITEMS, _item_rows(targets, done, 0, t))
        return {"threads": n_threads, "items": items, "next_item": items}
    finally:
        await engine.dispose()


async def fill_big(url: str, config: dict[str, Any], small: dict[str, Any]) -> dict[str, Any]:
    """Up to the big world: `threads` threads, one of `big_items`, `total_items` in all."""
    engine = create_engine(url)
    store = SQLStore(engine)
    t = Templates()
    started = time.perf_counter()
    try:
        first, total_threads = int(small["threads"]), int(config["threads"])
        await _insert(store, THREADS, _thread_rows(first, total_threads - first, t))
        big = first  # the first new thread is the big one
        rest = int(config["total_items"]) - int(small["items"]) - int(config["big_items"])
        others = list(range(first + 1, total_threads))
        targets = {big: int(config["big_items"])}
        for k, thread in enumerate(others):
            targets[thread] = rest // len(others) + (1 if k < rest % len(others) else 0)
        done = dict.fromkeys(targets, 0)
        items = await _insert(store, ITEMS, _item_rows(targets, done, int(small["next_item"]), t))
        if engine.dialect.name == "postgresql":
            # What autovacuum does shortly after a bulk load.
            async with engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                await conn.commit()
        return {
            "threads": total_threads,
            "big_thread": _thread_id(big),
            "items_added": items,
            "fill_s": round(time.perf_counter() - started, 1),
        }
    finally:
        await engine.dispose()


async def measure(url: str, thread_id: str, repeat: int, port: int | None) -> dict[str, Any]:
    engine = create_engine(url)
    store = SQLStore(engine)
    try:
        deep_item = await _middle_item(store, thread_id)
        page = await store.load_threads(10_000_000, None, "desc", USER)
        deep_thread = page.data[len(page.data) // 2].id
        result: dict[str, Any] = {
            "direct": await _direct(store, thread_id, deep_thread, deep_item, repeat)
        }
    finally:
        await engine.dispose()
    if port is not None:
        result["http"] = await _http(port, thread_id, deep_thread, deep_item, repeat)
    return result


def main() -> None:
    config = json.loads(sys.argv[1])
    step = config["step"]
    url = config["url"]
    if step == "fill_small":
        result = asyncio.run(fill_small(url, config))
    elif step == "fill_big":
        result = asyncio.run(fill_big(url, config, config["small"]))
    else:
        result = asyncio.run(
            measure(url, config["thread_id"], int(config["repeat"]), config.get("port"))
        )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

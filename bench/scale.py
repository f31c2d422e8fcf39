"""Scale mode: does anything slow down as threads grow?

    python -m bench.scale '<json config>'   # prints one JSON result on stdout

`fill` writes, by bulk SQL through the project's own tables, two users into one
migrated database:
- `small`: `small_threads` threads, one of them `small_items` items long;
- `local`: `threads` threads, one of `big_items` items and one of `small_items`,
  the rest sharing what is left of `total_items` (the items of all threads).

`measure` then times the calls a client makes, for the small user on its small thread
("small world") and for the big user on its big thread and on its small one; the
calls of the three are interleaved, so a busy machine slows them alike and the ratios
hold. Each call is timed directly on the store (`SQLStore`, as the server uses it) and
over HTTP, against two `chatkit-backend serve` processes on the database, one per user:
- list: `load_threads` / `threads.list`, the first page of 20;
- list_deep: the same, 20 threads after one in the middle of the user's list;
- get: `load_thread` + the first page of items / `threads.get_by_id`;
- history: the newest 30 items (`load_thread_items(..., "desc")`) / `items.list` desc;
- page_deep: 20 items after one in the middle of the thread / `items.list` with `after`.
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
from chatkit_backend.context import Owner, RequestContext
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.sql_store import SQLStore
from chatkit_backend.store.tables import UNPREFIXED

TENANT = "local"
SMALL_USER = "small"
BIG_USER = "local"  # the server's local user under AUTH_MODE=none
BATCH = 5000
ROUNDS = 100  # items are written in rounds, so threads' items interleave as in real use
HISTORY = 30
PAGE = 20
CALLS = ("list", "list_deep", "get", "history", "page_deep")
# (name in the results, user, which of the user's threads)
WORLDS = (
    ("small_world", SMALL_USER, "small"),
    ("big_world_big_thread", BIG_USER, "big"),
    ("big_world_small_thread", BIG_USER, "small"),
)


def context(user: str) -> RequestContext:
    return RequestContext(Owner(tenant_id=TENANT, user_id=user), role="member")


def thread_id(user: str, n: int) -> str:
    return f"thr_{user[:5]:_<5}{n:027x}"


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


def _thread_rows(user: str, count: int, t: Templates) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    for n in range(count):
        yield {
            "id": thread_id(user, n),
            "tenant_id": TENANT,
            "user_id": user,
            "created_at": now,
            "updated_at": now,
            "data": t.thread.replace("THREAD", thread_id(user, n)),
        }


def _item_rows(targets: dict[tuple[str, int], int], t: Templates) -> Iterator[dict[str, Any]]:
    """Items for each (user, thread) up to its target, round by round, question and
    answer in turn."""
    now = datetime.now(UTC)
    done = dict.fromkeys(targets, 0)
    n = 0
    for r in range(ROUNDS):
        for (user, thread), target in targets.items():
            for _ in range(target * (r + 1) // ROUNDS - done[(user, thread)]):
                kind = "user_message" if done[(user, thread)] % 2 == 0 else "assistant_message"
                template = t.user if kind == "user_message" else t.assistant
                tid = thread_id(user, thread)
                yield {
                    "id": _item_id(n),
                    "thread_id": tid,
                    "tenant_id": TENANT,
                    "user_id": user,
                    "type": kind,
                    "created_at": now,
                    "data": template.replace("ITEM", _item_id(n)).replace("THREAD", tid),
                }
                done[(user, thread)] += 1
                n += 1


async def _insert(store: SQLStore, table: Table, rows: Iterator[dict[str, Any]]) -> int:
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
                    records=[tuple(row[c] for c in columns) for row in batch],
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


async def fill(url: str, config: dict[str, Any]) -> dict[str, Any]:
    engine = create_engine(url)
    store = SQLStore(engine)
    t = Templates()
    started = time.perf_counter()
    try:
        small_threads, threads = int(config["small_threads"]), int(config["threads"])
        small_items, big_items = int(config["small_items"]), int(config["big_items"])
        await _insert(store, UNPREFIXED.threads, _thread_rows(SMALL_USER, small_threads, t))
        await _insert(store, UNPREFIXED.threads, _thread_rows(BIG_USER, threads, t))
        # Thread 0 of each user is its long one, thread 1 of the big user its short one.
        targets = {(SMALL_USER, 0): small_items}
        targets |= {(SMALL_USER, n): 10 for n in range(1, small_threads)}
        targets |= {(BIG_USER, 0): big_items, (BIG_USER, 1): small_items}
        rest = int(config["total_items"]) - sum(targets.values())
        others = range(2, threads)
        for k, n in enumerate(others):
            targets[(BIG_USER, n)] = rest // len(others) + (1 if k < rest % len(others) else 0)
        items = await _insert(store, UNPREFIXED.items, _item_rows(targets, t))
        if engine.dialect.name == "postgresql":
            # What autovacuum does shortly after a bulk load.
            async with engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                await conn.commit()
        return {
            "threads": small_threads + threads,
            "items": items,
            "fill_s": round(time.perf_counter() - started, 1),
        }
    finally:
        await engine.dispose()


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3),
    }


async def _interleaved(
    calls: dict[tuple[str, str], Callable[[], Awaitable[Any]]], repeat: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Time every call `repeat` times, taking them in turn; p50/p99 by world and call."""
    for call in calls.values():
        for _ in range(3):
            await call()
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(repeat):
        for key, call in calls.items():
            started = time.perf_counter()
            await call()
            samples[key].append(time.perf_counter() - started)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for (world, call_name), values in samples.items():
        result.setdefault(world, {})[call_name] = _summary(values)
    return result


async def _targets(store: SQLStore) -> dict[str, dict[str, str]]:
    """Per world: its thread, a thread in the middle of its user's list, and an item in
    the middle of its thread."""
    found = {}
    async with store.engine.connect() as conn:
        for world, user, which in WORLDS:
            tid = thread_id(user, 0 if which == "big" or user == SMALL_USER else 1)
            count = (
                await conn.execute(
                    text("SELECT count(*) FROM threads WHERE tenant_id = :t AND user_id = :u"),
                    {"t": TENANT, "u": user},
                )
            ).scalar_one()
            deep_thread = thread_id(user, count // 2)
            items = (
                await conn.execute(
                    text("SELECT count(*) FROM items WHERE thread_id = :t"), {"t": tid}
                )
            ).scalar_one()
            deep_item = (
                await conn.execute(
                    text(
                        "SELECT id FROM items WHERE thread_id = :t ORDER BY seq LIMIT 1 OFFSET :o"
                    ),
                    {"t": tid, "o": (items - PAGE) // 2},
                )
            ).scalar_one()
            found[world] = {
                "user": user,
                "thread": tid,
                "deep_thread": deep_thread,
                "deep_item": str(deep_item),
            }
    return found


def _direct_calls(
    store: SQLStore, targets: dict[str, dict[str, str]]
) -> dict[tuple[str, str], Callable[[], Awaitable[Any]]]:
    calls: dict[tuple[str, str], Callable[[], Awaitable[Any]]] = {}
    for world, target in targets.items():
        ctx = context(target["user"])
        tid, deep_thread, deep_item = target["thread"], target["deep_thread"], target["deep_item"]

        async def list_first(ctx: RequestContext = ctx) -> None:
            await store.load_threads(PAGE, None, "desc", ctx)

        async def list_deep(ctx: RequestContext = ctx, after: str = deep_thread) -> None:
            page = await store.load_threads(PAGE, after, "desc", ctx)
            assert page.data

        async def get(ctx: RequestContext = ctx, tid: str = tid) -> None:
            # What threads.get_by_id does: the thread and the first page of its items.
            await store.load_thread(tid, ctx)
            await store.load_thread_items(tid, None, PAGE, "asc", ctx)

        async def history(ctx: RequestContext = ctx, tid: str = tid) -> None:
            page = await store.load_thread_items(tid, None, HISTORY, "desc", ctx)
            assert len(page.data) == HISTORY

        async def page_deep(
            ctx: RequestContext = ctx, tid: str = tid, after: str = deep_item
        ) -> None:
            page = await store.load_thread_items(tid, after, PAGE, "asc", ctx)
            assert len(page.data) == PAGE

        for name, call in zip(CALLS, (list_first, list_deep, get, history, page_deep), strict=True):
            calls[(world, name)] = call
    return calls


def _http_calls(
    connections: dict[str, Connection], targets: dict[str, dict[str, str]]
) -> dict[tuple[str, str], Callable[[], Awaitable[Any]]]:
    calls: dict[tuple[str, str], Callable[[], Awaitable[Any]]] = {}

    def call(conn: Connection, kind: str, **params: Any) -> Callable[[], Awaitable[None]]:
        body = json.dumps({"type": kind, "params": params}).encode()

        async def send() -> None:
            status, answer = await conn.post("/chatkit", body)
            if status != 200:
                raise RuntimeError(f"{kind}: HTTP {status}: {answer[:200]!r}")

        return send

    for world, target in targets.items():
        conn = connections[target["user"]]
        tid = target["thread"]
        calls[(world, "list")] = call(conn, "threads.list", limit=PAGE, order="desc")
        calls[(world, "list_deep")] = call(
            conn, "threads.list", limit=PAGE, order="desc", after=target["deep_thread"]
        )
        calls[(world, "get")] = call(conn, "threads.get_by_id", thread_id=tid)
        calls[(world, "history")] = call(
            conn, "items.list", thread_id=tid, limit=HISTORY, order="desc"
        )
        calls[(world, "page_deep")] = call(
            conn, "items.list", thread_id=tid, limit=PAGE, order="asc", after=target["deep_item"]
        )
    return calls


async def measure(url: str, repeat: int, ports: dict[str, int] | None) -> dict[str, Any]:
    engine = create_engine(url)
    store = SQLStore(engine)
    try:
        targets = await _targets(store)
        direct = await _interleaved(_direct_calls(store, targets), repeat)
    finally:
        await engine.dispose()
    result: dict[str, Any] = {world: {"direct": direct[world]} for world, _, _ in WORLDS}
    if ports:
        connections = {user: Connection("127.0.0.1", port) for user, port in ports.items()}
        try:
            http = await _interleaved(_http_calls(connections, targets), repeat)
        finally:
            for conn in connections.values():
                conn.close()
        for world, _, _ in WORLDS:
            result[world]["http"] = http[world]
    return result


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["step"] == "fill":
        result = asyncio.run(fill(config["url"], config))
    else:
        result = asyncio.run(measure(config["url"], int(config["repeat"]), config.get("ports")))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""The load generator: ChatKit over HTTP, in its own process.

    python -m bench.loadgen '<json config>'   # prints one JSON result on stdout

Modes:
- `stream`: `users` concurrent users; each creates `threads` threads and adds
  messages until each has `turns` turns, reading every SSE frame. Reports turns/s,
  latency (request to end of stream) and time to the first text delta.
- `reads`: first fills `prefill_threads` threads (`prefill_turns` turns each), then
  `users` concurrent users send `requests` requests each, in turn `threads.list`,
  `threads.get_by_id` and `items.list`.

Server CPU is read from /proc for `cpu_pids` (and their children) just before the
measured phase and just after it, so CPU per turn has no partial turns at its edges.
With `verify`, every thread it made is read back afterwards with `items.list`: each
turn must have left its user message and the whole answer.
"""

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import procs
from bench.upstream import answer_text
from bench.wire import Connection, ConnectionLost, frames

PATH = "/chatkit"
MAX_ERRORS_KEPT = 10


def _input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def _create(text: str) -> bytes:
    return json.dumps({"type": "threads.create", "params": {"input": _input(text)}}).encode()


def _add(thread_id: str, text: str) -> bytes:
    params = {"thread_id": thread_id, "input": _input(text)}
    return json.dumps({"type": "threads.add_user_message", "params": params}).encode()


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    first_deltas: list[float] = field(default_factory=list)
    frames: int = 0
    turns: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    streaming_now: int = 0
    streaming_peak: int = 0
    # thread id -> turns sent to it
    threads: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERRORS_KEPT:
            self.error_samples.append(message[:300])


async def turn(
    conn: Connection, body: bytes, stats: Stats, limit: float, count: bool = True
) -> str | None:
    """One streamed turn; returns the thread id it named (from `thread.created`)."""
    started = time.perf_counter()
    first_delta: float | None = None
    thread_id = None
    buffer = bytearray()
    failed = None
    seen = 0
    stats.streaming_now += 1
    stats.streaming_peak = max(stats.streaming_peak, stats.streaming_now)
    try:
        async with asyncio.timeout(limit):
            head, chunks = await conn.stream(PATH, body)
            if head.status != 200:
                text = b"".join([chunk async for chunk in chunks])
                failed = f"HTTP {head.status}: {text[:200]!r}"
            else:
                async for chunk in chunks:
                    for frame in frames(buffer, chunk):
                        seen += 1
                        if first_delta is None and b"text_delta" in frame:
                            first_delta = time.perf_counter() - started
                        elif thread_id is None and b'"thread.created"' in frame:
                            thread_id = json.loads(frame[6:])["thread"]["id"]
                        elif b'"type":"error"' in frame[:40]:
                            failed = f"error event: {frame[:200]!r}"
    except TimeoutError:
        conn.close()
        failed = f"timed out after {limit} s"
    except (ConnectionLost, OSError) as exc:
        conn.close()
        failed = f"connection: {exc}"
    finally:
        stats.streaming_now -= 1
    if failed is None and first_delta is None:
        failed = "stream ended without a text delta"
    if not count:
        return thread_id
    if failed is not None:
        stats.error(failed)
        return thread_id
    stats.turns += 1
    stats.frames += seen
    stats.latencies.append(time.perf_counter() - started)
    assert first_delta is not None
    stats.first_deltas.append(first_delta)
    return thread_id


async def user(
    host: str, port: int, config: dict[str, Any], stats: Stats, delay: float, name: str
) -> None:
    await asyncio.sleep(delay)
    conn = Connection(host, port)
    timeout = float(config.get("timeout", 120))
    try:
        for t in range(int(config["threads"])):
            thread_id = await turn(conn, _create(f"{name} thread {t} says hello"), stats, timeout)
            if thread_id is None:
                if not config.get("floor"):
                    continue
                thread_id = "floor"  # the floor makes no threads; the turns still count
            else:
                stats.threads[thread_id] = 1
            for k in range(1, int(config["turns"])):
                await turn(conn, _add(thread_id, f"{name} message {k}"), stats, timeout)
                if thread_id in stats.threads:
                    stats.threads[thread_id] += 1
    finally:
        conn.close()


async def verify(
    host: str, port: int, threads: dict[str, int], tokens: int, concurrency: int = 20
) -> dict[str, Any]:
    """Read every thread back: a user message and the full answer for each turn."""
    expected_answer = answer_text(tokens)
    problems: list[str] = []
    queue = list(threads.items())

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while queue:
                thread_id, turns = queue.pop()
                body = {
                    "type": "items.list",
                    "params": {"thread_id": thread_id, "limit": 100, "order": "asc"},
                }
                status, page = await conn.post_json(PATH, body)
                if status != 200:
                    problems.append(f"{thread_id}: HTTP {status}")
                    continue
                items = page["data"]
                users = [i for i in items if i["type"] == "user_message"]
                answers = [
                    "".join(part["text"] for part in i["content"])
                    for i in items
                    if i["type"] == "assistant_message"
                ]
                if len(users) != turns or len(answers) != turns:
                    problems.append(
                        f"{thread_id}: {turns} turns, {len(users)} user messages, "
                        f"{len(answers)} answers stored"
                    )
                elif any(answer != expected_answer for answer in answers):
                    problems.append(f"{thread_id}: an answer was stored incomplete")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "threads_checked": len(threads),
        "turns_checked": sum(threads.values()),
        "problems": len(problems),
        "problem_samples": problems[:MAX_ERRORS_KEPT],
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2)}


class CpuMeter:
    def __init__(self, config: dict[str, Any]) -> None:
        self.pids = [int(pid) for pid in config.get("cpu_pids", [])]
        self.database = config.get("pg_database")

    def read(self) -> tuple[float, float]:
        server = procs.tree_cpu_seconds(self.pids) if self.pids else 0.0
        db = procs.postgres_backend_cpu_seconds(self.database) if self.database else 0.0
        return server, db


async def run_stream(config: dict[str, Any]) -> dict[str, Any]:
    host, port = config.get("host", "127.0.0.1"), int(config["port"])
    users = int(config["users"])
    ramp = float(config.get("ramp", 0))
    meter = CpuMeter(config)
    warm = Stats()
    warmup_users = min(users, int(config.get("warmup_users", 10)))
    warm_config = {**config, "threads": 1, "turns": 1}
    await asyncio.gather(
        *(user(host, port, warm_config, warm, 0, f"warm{i}") for i in range(warmup_users))
    )
    stats = Stats()
    cpu_before, db_before = meter.read()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            user(host, port, config, stats, ramp * i / max(1, users), f"user{i}")
            for i in range(users)
        )
    )
    wall = time.perf_counter() - started
    cpu_after, db_after = meter.read()
    result: dict[str, Any] = {
        "mode": "stream",
        "users": users,
        "turns": stats.turns,
        "errors": stats.errors + warm.errors,
        "error_samples": warm.error_samples + stats.error_samples,
        "wall_s": round(wall, 3),
        "turns_per_s": round(stats.turns / wall, 2) if wall else None,
        "server_cpu_s": round(cpu_after - cpu_before, 3),
        "cpu_ms_per_turn": round((cpu_after - cpu_before) * 1000 / stats.turns, 2)
        if stats.turns
        else None,
        "db_cpu_ms_per_turn": round((db_after - db_before) * 1000 / stats.turns, 2)
        if stats.turns and meter.database
        else None,
        "frames_per_turn": round(stats.frames / stats.turns, 1) if stats.turns else None,
        "latency_ms": percentiles(stats.latencies),
        "first_delta_ms": percentiles(stats.first_deltas),
        "peak_streams": stats.streaming_peak,
    }
    if config.get("verify"):
        threads = {**warm.threads, **stats.threads}
        result["verify"] = await verify(host, port, threads, int(config["tokens"]))
    return result


READ_KINDS = ("threads.list", "threads.get_by_id", "items.list")


def _read_body(kind: str, thread_id: str) -> bytes:
    params: dict[str, Any]
    if kind == "threads.list":
        params = {"limit": 20, "order": "desc"}
    elif kind == "threads.get_by_id":
        params = {"thread_id": thread_id}
    else:
        params = {"thread_id": thread_id, "limit": 20, "order": "asc"}
    return json.dumps({"type": kind, "params": params}).encode()


async def reader(
    host: str, port: int, thread_ids: list[str], requests: int, stats: Stats, seed: int
) -> None:
    rng = random.Random(seed)
    conn = Connection(host, port)
    try:
        for i in range(requests):
            kind = READ_KINDS[(i + seed) % len(READ_KINDS)]
            body = _read_body(kind, rng.choice(thread_ids))
            started = time.perf_counter()
            try:
                status, answer = await conn.post(PATH, body)
            except (ConnectionLost, OSError) as exc:
                stats.error(f"{kind}: connection: {exc}")
                conn.close()
                continue
            elapsed = time.perf_counter() - started
            if status != 200 or not answer.startswith(b"{"):
                stats.error(f"{kind}: HTTP {status}: {answer[:200]!r}")
                continue
            stats.turns += 1
            stats.latencies.append(elapsed)
            stats.by_kind.setdefault(kind, []).append(elapsed)
    finally:
        conn.close()


async def run_reads(config: dict[str, Any]) -> dict[str, Any]:
    host, port = config.get("host", "127.0.0.1"), int(config["port"])
    meter = CpuMeter(config)
    fill = Stats()
    fill_config = {**config, "threads": 1, "turns": int(config["prefill_turns"])}
    fillers = int(config["prefill_threads"])
    await asyncio.gather(
        *(user(host, port, fill_config, fill, 0, f"fill{i}") for i in range(fillers))
    )
    thread_ids = list(fill.threads)
    if fill.errors or not thread_ids:
        return {"mode": "reads", "errors": fill.errors, "error_samples": fill.error_samples}
    users, requests = int(config["users"]), int(config["requests"])
    # A short warm-up, not counted.
    await asyncio.gather(*(reader(host, port, thread_ids, 6, Stats(), i) for i in range(users)))
    stats = Stats()
    cpu_before, db_before = meter.read()
    started = time.perf_counter()
    await asyncio.gather(
        *(reader(host, port, thread_ids, requests, stats, i) for i in range(users))
    )
    wall = time.perf_counter() - started
    cpu_after, db_after = meter.read()
    n = stats.turns
    return {
        "mode": "reads",
        "users": users,
        "requests": n,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "wall_s": round(wall, 3),
        "requests_per_s": round(n / wall, 1) if wall else None,
        "server_cpu_s": round(cpu_after - cpu_before, 3),
        "cpu_ms_per_request": round((cpu_after - cpu_before) * 1000 / n, 3) if n else None,
        "db_cpu_ms_per_request": round((db_after - db_before) * 1000 / n, 3)
        if n and meter.database
        else None,
        "latency_ms": percentiles(stats.latencies),
        "latency_p50_ms_by_kind": {
            kind: percentiles(values)["p50"] for kind, values in stats.by_kind.items()
        },
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    runner = run_stream if config["mode"] == "stream" else run_reads
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    result = run(runner(config))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

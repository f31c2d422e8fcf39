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
turn that was admitted must have left its user message and the whole answer.

A stream the server refuses before it starts (503, `{"error": {"code": "overloaded"}}`,
`Retry-After`) is counted as refused, not as an error, and checked: a refusal without
`Retry-After`, with another body or with any stream in it is counted as a bad refusal.
A refused user does not retry; a refused `threads.create` leaves that user no thread.
Errors are counted by kind: `error` events inside a stream, lost connections, timeouts,
other HTTP statuses, streams with no text delta.

With `jwt_secret`, every user (`user{i}`, `warm{i}`) sends its own HS256 token (the
server runs with `AUTH_MODE=jwt` and that secret), so per-user limits do not bind and
thousands of users can stream at once; threads are read back with their owner's token.
It raises its own open-files limit to the hard limit, to hold thousands of streams.
"""

import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bench import proc_stats
from bench.upstream import answer_text
from bench.wire import Connection, ConnectionLost, Head, frames

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


def token(secret: str, user: str) -> str:
    """A token `AUTH_MODE=jwt` with JWT_SECRET=`secret` accepts, for `user`."""
    import jwt  # only here: most loads need no tokens, and it takes a while to import

    now = datetime.now(UTC)
    claims = {"sub": user, "tenant_id": "local", "iat": now, "exp": now + timedelta(days=1)}
    return jwt.encode(claims, secret, algorithm="HS256")


def auth_header(config: dict[str, Any], user: str) -> bytes:
    secret = config.get("jwt_secret")
    if not secret:
        return b""
    return b"authorization: Bearer %s\r\n" % token(str(secret), user).encode()


Outcome = Literal["done", "refused", "failed"]


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    first_deltas: list[float] = field(default_factory=list)
    frames: int = 0
    turns: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    bad_refusals: int = 0
    refusal_samples: list[str] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)
    streaming_now: int = 0
    streaming_peak: int = 0
    # thread id -> turns admitted on it (that must be stored), and its owner's header
    threads: dict[str, int] = field(default_factory=dict)
    owners: dict[str, bytes] = field(default_factory=dict)
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def error(self, message: str, kind: str = "other") -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if len(self.error_samples) < MAX_ERRORS_KEPT:
            self.error_samples.append(message[:300])

    def refusal(self, problem: str | None) -> None:
        self.refused += 1
        if problem is not None:
            self.bad_refusals += 1
            if len(self.refusal_samples) < MAX_ERRORS_KEPT:
                self.refusal_samples.append(problem[:300])


def refusal_problem(head: Head, body: bytes) -> str | None:
    """What is wrong with a 503 as a refusal before the stream: None if nothing."""
    retry_after = head.headers.get("retry-after", "")
    if not retry_after.isdigit() or int(retry_after) < 1:
        return f"503 without a usable Retry-After ({retry_after!r})"
    if "text/event-stream" in head.headers.get("content-type", "") or b"data:" in body:
        return f"503 with a stream in it: {body[:200]!r}"
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"503 whose body is not a JSON error: {body[:200]!r}"
    if code != "overloaded":
        return f"503 with error code {code!r}, not 'overloaded'"
    return None


async def turn(
    conn: Connection,
    body: bytes,
    stats: Stats,
    limit: float,
    count: bool = True,
    headers: bytes = b"",
) -> tuple[str | None, Outcome]:
    """One streamed turn: the thread id it named (from `thread.created`), and whether
    it was done, refused before its stream (503) or failed."""
    started = time.perf_counter()
    first_delta: float | None = None
    thread_id = None
    buffer = bytearray()
    failed: tuple[str, str] | None = None  # (kind, message)
    refused, refusal = False, None  # refusal: what was wrong with a refusal, if any
    seen = 0
    stats.streaming_now += 1
    stats.streaming_peak = max(stats.streaming_peak, stats.streaming_now)
    try:
        async with asyncio.timeout(limit):
            head, chunks = await conn.stream(PATH, body, headers)
            if head.status != 200:
                text = b"".join([chunk async for chunk in chunks])
                if head.status == 503:
                    refused, refusal = True, refusal_problem(head, text)
                    if (retry := head.headers.get("retry-after", "")).isdigit():
                        stats.retry_after.append(float(retry))
                else:
                    failed = ("http", f"HTTP {head.status}: {text[:200]!r}")
            else:
                async for chunk in chunks:
                    for frame in frames(buffer, chunk):
                        seen += 1
                        if first_delta is None and b"text_delta" in frame:
                            first_delta = time.perf_counter() - started
                        elif thread_id is None and b'"thread.created"' in frame:
                            thread_id = json.loads(frame[6:])["thread"]["id"]
                        elif b'"type":"error"' in frame[:40]:
                            failed = ("error_event", f"error event: {frame[:200]!r}")
    except TimeoutError:
        conn.close()
        failed = ("timeout", f"timed out after {limit} s")
    except (ConnectionLost, OSError) as exc:
        conn.close()
        failed = ("connection", f"connection: {exc}")
    finally:
        stats.streaming_now -= 1
    if refused and failed is None:
        if count:
            stats.refusal(refusal)
        return None, "refused"
    if failed is None and first_delta is None:
        failed = ("no_delta", "stream ended without a text delta")
    if not count:
        return thread_id, "failed" if failed else "done"
    if failed is not None:
        stats.error(failed[1], failed[0])
        return thread_id, "failed"
    stats.turns += 1
    stats.frames += seen
    stats.latencies.append(time.perf_counter() - started)
    assert first_delta is not None
    stats.first_deltas.append(first_delta)
    return thread_id, "done"


async def user(
    host: str, port: int, config: dict[str, Any], stats: Stats, delay: float, name: str
) -> None:
    await asyncio.sleep(delay)
    conn = Connection(host, port)
    timeout = float(config.get("timeout", 120))
    headers = auth_header(config, name)
    try:
        for t in range(int(config["threads"])):
            body = _create(f"{name} thread {t} says hello")
            thread_id, _ = await turn(conn, body, stats, timeout, headers=headers)
            if thread_id is None:
                if not config.get("floor"):
                    continue
                thread_id = "floor"  # the floor makes no threads; the turns still count
            else:
                stats.threads[thread_id] = 1
                stats.owners[thread_id] = headers
            for k in range(1, int(config["turns"])):
                body = _add(thread_id, f"{name} message {k}")
                _, outcome = await turn(conn, body, stats, timeout, headers=headers)
                # A refused turn left nothing behind; the others must be stored.
                if thread_id in stats.threads and outcome != "refused":
                    stats.threads[thread_id] += 1
    finally:
        conn.close()


async def verify(
    host: str,
    port: int,
    threads: dict[str, int],
    tokens: int,
    owners: dict[str, bytes] | None = None,
    concurrency: int = 20,
) -> dict[str, Any]:
    """Read every thread back: a user message and the full answer for each admitted
    turn (and no more user messages than that: a refused turn must leave nothing)."""
    expected_answer = answer_text(tokens)
    problems: list[str] = []
    stored = 0
    queue = list(threads.items())

    async def worker() -> None:
        nonlocal stored
        conn = Connection(host, port)
        try:
            while queue:
                thread_id, turns = queue.pop()
                body = {
                    "type": "items.list",
                    "params": {"thread_id": thread_id, "limit": 100, "order": "asc"},
                }
                headers = (owners or {}).get(thread_id, b"")
                try:
                    status, page = await conn.post_json(PATH, body, headers)
                except (ConnectionLost, OSError) as exc:
                    conn.close()
                    problems.append(f"{thread_id}: connection: {exc}")
                    continue
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
                complete = sum(answer == expected_answer for answer in answers)
                stored += min(turns, len(users), complete)
                if len(users) != turns or len(answers) != turns:
                    problems.append(
                        f"{thread_id}: {turns} turns, {len(users)} user messages, "
                        f"{len(answers)} answers stored"
                    )
                elif complete != turns:
                    problems.append(f"{thread_id}: an answer was stored incomplete")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "threads_checked": len(threads),
        "turns_checked": sum(threads.values()),
        "turns_stored": stored,
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
        server = proc_stats.tree_cpu_seconds(self.pids) if self.pids else 0.0
        db = proc_stats.postgres_backend_cpu_seconds(self.database) if self.database else 0.0
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
        "error_kinds": _merged(warm.error_kinds, stats.error_kinds),
        "error_samples": warm.error_samples + stats.error_samples,
        "refused": stats.refused,
        "bad_refusals": stats.bad_refusals + warm.bad_refusals,
        "refusal_samples": warm.refusal_samples + stats.refusal_samples,
        "retry_after_s": [min(stats.retry_after), max(stats.retry_after)]
        if stats.retry_after
        else None,
        "warmup_refused": warm.refused,
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
        owners = {**warm.owners, **stats.owners}
        result["verify"] = await verify(host, port, threads, int(config["tokens"]), owners)
    return result


def _merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in {*a, *b}}


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


def raise_open_files_limit() -> None:
    """As many open files as allowed: a connection is one, and bursts hold thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    raise_open_files_limit()
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

"""A deployment with replicas: two real `chatkit-backend serve` processes sharing one
PostgreSQL database and one Redis (REDIS_URL), as `compose.replicas.yaml` runs them.

- The per-user limits are one count for both: 429 at the rate, not at twice it; as
  many streams in all as MAX_STREAMS_PER_USER.
- A replica killed mid-answer (SIGKILL): the other takes its threads (the lease frees
  in ~5 s) and its users' stream slots come back within the slots' TTL.
- Redis stopped mid-run and started again: REDIS_FAILURE=open answers, =closed refuses
  with 503, and both count again without a restart.
- Debian's nginx with the project's config in front of both: requests reach both, and
  an answer streams through.

Locally these skip without PostgreSQL, Redis, redis-server or nginx; under CI they fail.
"""

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatkit_backend.chat.redis_limits import RETRY_AFTER_FAILURE_SECONDS, SLOT_TTL_SECONDS
from chatkit_backend.store.turns import HOLDER_TIMEOUT_SECONDS
from tests.support.needs import (
    require_nginx,
    require_postgres,
    require_redis,
    require_redis_server,
)
from tests.support.nginx import NGINX_DIR, nginx_command, render_nginx
from tests.support.ops import metric
from tests.support.postgres import fresh_postgres_database
from tests.support.processes import ServerProcess, free_port, run_cli, serving
from tests.support.redis import REDIS_URL, own_redis, shared_prefix
from tests.support.sse import parse_events, user_input

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "replica-test-" + "k3y" * 10
RATE = 10
STREAMS = 2
# About 40 words a quarter of a second apart: an answer takes ~10 s, time to act mid-way.
TOKEN_DELAY_MS = 250


@dataclass
class Replicas:
    servers: list[ServerProcess]
    env: dict[str, str]

    def token(self, user: str) -> str:
        minted = run_cli("token", "--user", user, "--tenant", "t1", env=self.env)
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()

    def user(self) -> dict[str, str]:
        """Headers for a fresh user."""
        return {"Authorization": f"Bearer {self.token(f'user_{secrets.token_hex(6)}')}"}


def replica_env(database_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": "5",
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_PER_MINUTE": str(RATE),
        "MAX_STREAMS_PER_USER": str(STREAMS),
    }


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    require_postgres()
    require_redis()
    with fresh_postgres_database(prefix="chatkit_replicas") as url:
        migrated = run_cli("migrate", env={"DATABASE_URL": url})
        assert migrated.returncode == 0, migrated.stderr
        yield url


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    logs = tmp_path_factory.mktemp("replicas")
    with shared_prefix() as prefix, ExitStack() as stack:
        env = replica_env(database, REDIS_URL, prefix)
        servers = [stack.enter_context(serving(env, log_dir=logs)) for _ in range(2)]
        yield Replicas(servers, env)


def chatkit(server: ServerProcess | int) -> str:
    port = server if isinstance(server, int) else server.port
    return f"http://127.0.0.1:{port}/chatkit"


def create(text: str = "tell me a story") -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text)}}


def add_message(thread_id: str, text: str = "and then?") -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text)},
    }


LIST = {"type": "threads.list", "params": {}}


def _is_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert int(response.headers["retry-after"]) >= 1


@asynccontextmanager
async def answering(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> AsyncIterator[str]:
    """A stream started and read up to its first text; yields its thread's id. Leaving
    the block hangs up (the server sees the client go)."""
    async with http.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        text = ""
        # Read by hand: leaving an `async for` closes the iterator, which hangs up.
        chunks = response.aiter_text()
        while "text_delta" not in text:
            text += await anext(chunks)
        events = parse_events(text.rpartition("\n\n")[0])
        thread_id: str = events[0]["thread"]["id"] if events[0]["type"] == "thread.created" else ""
        yield thread_id


async def whole_answer(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> list[dict[str, Any]]:
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return parse_events(response.text)


# ---- one count for both ----


def test_the_request_rate_is_counted_once_across_replicas(replicas: Replicas) -> None:
    headers = replicas.user()
    statuses: list[tuple[int, int]] = []
    started = time.monotonic()
    with httpx.Client(timeout=30) as http:
        for n in range(2 * RATE):
            server = replicas.servers[n % 2]
            response = http.post(chatkit(server), json=LIST, headers=headers)
            statuses.append((n % 2, response.status_code))
            if response.status_code == 429:
                _is_error(response, 429, "rate_limited")
    elapsed = time.monotonic() - started
    answered = [replica for replica, status in statuses if status == 200]
    # One bucket of RATE for both (plus what refilled meanwhile: one every 60/RATE s),
    # not one per replica; and both answered and refused.
    assert RATE <= len(answered) <= RATE + int(elapsed / (60 / RATE)), statuses
    assert set(answered) == {0, 1}
    assert {replica for replica, status in statuses if status == 429} == {0, 1}


async def test_streams_per_user_are_counted_across_replicas(replicas: Replicas) -> None:
    headers = replicas.user()
    one, two = (chatkit(server) for server in replicas.servers)
    async with httpx.AsyncClient(timeout=60) as http:
        async with answering(http, one, headers, create()), answering(http, two, headers, create()):
            for url in (one, two):
                refused = await http.post(url, json=create("a third"), headers=headers)
                _is_error(refused, 429, "rate_limited")
                assert "answers in progress" in refused.json()["message"]
        # Both hung up: their slots are free again, on either replica.
        deadline = time.monotonic() + 10
        while True:
            response = await http.post(two, json=create("after"), headers=headers)
            if response.status_code == 200:
                break
            assert response.status_code == 429, response.text
            assert time.monotonic() < deadline, "the slots were not freed on hang-up"
            await asyncio.sleep(0.2)
        listed = await http.post(one, json=LIST, headers=headers)
        assert len(listed.json()["data"]) == 3  # the refused ones made nothing


async def test_a_killed_replicas_threads_and_slots_come_back(replicas: Replicas) -> None:
    headers = replicas.user()
    dying, other = replicas.servers
    async with httpx.AsyncClient(timeout=60) as http:
        streams = AsyncExitStack()
        thread_id = await streams.enter_async_context(
            answering(http, chatkit(dying), headers, create())
        )
        await streams.enter_async_context(answering(http, chatkit(dying), headers, create("2")))
        dying.kill()
        killed = time.monotonic()
        with contextlib.suppress(httpx.TransportError):
            await streams.aclose()  # hanging up connections the kill closed
        # Its two slots are still counted: the user's next stream is refused.
        refused = await http.post(chatkit(other), json=create("now"), headers=headers)
        _is_error(refused, 429, "rate_limited")
        refusals: list[tuple[float, str]] = []
        while True:
            async with http.stream(
                "POST", chatkit(other), json=add_message(thread_id), headers=headers
            ) as response:
                # Taken when its stream starts, not when the answer ends.
                waited = time.monotonic() - killed
                body = (await response.aread()).decode()
            if response.status_code == 200:
                break
            code = json.loads(body)["error"]["code"]
            assert code in ("rate_limited", "thread_busy"), body
            refusals.append((round(waited, 1), code))
            await asyncio.sleep(0.25)
        events = parse_events(body)
        assert any(e["type"] == "thread.item.done" for e in events)
        assert not any(e["type"] == "error" for e in events)
        # Slots lapse within their TTL (pushed forward every 2 s while alive); the
        # thread's lease within the holder timeout, which is shorter.
        assert waited < SLOT_TTL_SECONDS + 3, (waited, refusals)
        assert HOLDER_TIMEOUT_SECONDS < SLOT_TTL_SECONDS
        items = await http.post(
            chatkit(other),
            json={"type": "items.list", "params": {"thread_id": thread_id}},
            headers=headers,
        )
        assert items.status_code == 200
    dying.start()  # for the tests after this one


# ---- Redis away, then back ----


async def test_redis_stopped_then_started_open_and_closed(database: str, tmp_path: Path) -> None:
    binary = require_redis_server()
    with own_redis(binary) as redis, ExitStack() as stack:
        env = replica_env(database, redis.url, "outage:")
        # Two deployments on one Redis (prefixes of their own), each with its setting.
        servers = {
            failure: stack.enter_context(
                serving(
                    {**env, "REDIS_FAILURE": failure, "REDIS_KEY_PREFIX": f"{failure}:"},
                    log_dir=tmp_path,
                )
            )
            for failure in ("open", "closed")
        }
        token = {"Authorization": f"Bearer {Replicas([], env).token('outage-user')}"}
        async with httpx.AsyncClient(timeout=30) as http:

            async def statuses(failure: str, count: int) -> list[int]:
                url = chatkit(servers[failure])
                return [
                    (await http.post(url, json=LIST, headers=token)).status_code
                    for _ in range(count)
                ]

            assert await statuses("closed", 1) == [200]
            redis.stop()
            # Open: past the rate, unlimited while Redis is away; closed: 503.
            assert await statuses("open", RATE + 2) == [200] * (RATE + 2)
            stream = await whole_answer(http, chatkit(servers["open"]), token, create("hi"))
            assert any(e["type"] == "thread.item.done" for e in stream)
            for body in (LIST, create("refused")):
                refused = await http.post(chatkit(servers["closed"]), json=body, headers=token)
                _is_error(refused, 503, "limits_unavailable")
            scrape = (await http.get(f"{servers['open'].base_url}/metrics")).text
            assert metric(scrape, "chatkit_limits_backend_errors_total", operation="request") > 0

            redis.start()  # on the same port, empty
            await asyncio.sleep(RETRY_AFTER_FAILURE_SECONDS + 0.5)
            # Counted again, without a restart: RATE answers (Redis lost the old
            # counts), then 429.
            assert await statuses("open", RATE + 1) == [200] * RATE + [429]
            assert await statuses("closed", 1) == [200]
    for failure, server in servers.items():
        log = server.output or server.log()
        assert log.count("Redis cannot be reached") == 1, (failure, log[-3000:])
        assert log.count("Redis answers again") == 1, (failure, log[-3000:])
        assert redis.url not in log


# ---- nginx in front of both ----


@pytest.fixture(scope="module")
def proxy(replicas: Replicas, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    nginx = require_nginx()
    folder = tmp_path_factory.mktemp("replica-proxy")
    port = free_port()
    # Short stall timeouts, as in test_proxy: a stuck client cannot hold the module 30 s.
    config = render_nginx(folder, [s.port for s in replicas.servers], port, client_timeout=2)
    command = nginx_command(nginx, config)
    server = ServerProcess(command, {}, folder / "nginx.log", port, name="nginx", cwd=folder)
    server.start()
    try:
        yield port
    finally:
        server.stop()
    errors = (folder / "nginx.log").read_text(errors="replace")
    assert "[emerg]" not in errors and "[alert]" not in errors, errors[-2000:]


def test_the_shipped_upstream_spreads_over_replicas() -> None:
    site = (NGINX_DIR / "chatkit.conf").read_text()
    upstream = re.search(r"upstream chatkit_app \{(.*?)\}", site, re.S)
    assert upstream is not None
    lines = [line.split("#")[0].strip() for line in upstream.group(1).splitlines()]
    # Answers hold a connection for seconds: the replica with the fewest open gets the next.
    assert "least_conn;" in lines
    assert "server app:8000;" in lines


async def test_nginx_reaches_both_replicas_and_streams(replicas: Replicas, proxy: int) -> None:
    def served() -> list[int]:
        return [server.log().count("POST /chatkit ") for server in replicas.servers]

    before = served()
    headers = replicas.user()
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(RATE - 2):
            response = await http.post(chatkit(proxy), json=LIST, headers=headers)
            assert response.status_code == 200, response.text
        started = time.monotonic()
        first_delta: float | None = None
        text = ""
        async with http.stream("POST", chatkit(proxy), json=create(), headers=headers) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_text():
                text += chunk
                if first_delta is None and "text_delta" in text:
                    first_delta = time.monotonic() - started
        ended = time.monotonic() - started
    events = parse_events(text)
    assert any(e["type"] == "thread.item.done" for e in events)
    # Unbuffered: the first text came while most of the answer was still to come.
    assert first_delta is not None and ended - first_delta > 2.0, (first_delta, ended)
    # Access lines are written when a request ends: the stream's may lag a moment.
    for _ in range(50):
        after = served()
        if sum(after) - sum(before) == RATE - 1:
            break
        await asyncio.sleep(0.1)
    spread = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(spread) == RATE - 1, spread
    assert all(count > 0 for count in spread), spread

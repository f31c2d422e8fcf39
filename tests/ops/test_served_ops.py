"""Real `chatkit-backend serve` processes: SIGTERM mid-stream, one answer per thread
across two processes on PostgreSQL, and a PostgreSQL restart under a running server."""

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatkit_backend.store.migrations import upgrade_to_head
from tests.support.chat_client import assert_envelope, post
from tests.support.needs import require_postgres
from tests.support.ops import metric
from tests.support.postgres import ThrowawayPostgres, fresh_postgres_database
from tests.support.processes import CLI, run_cli, serving
from tests.support.sse import answer_text, parse_events, read_events, rest_of, user_input

pytestmark = pytest.mark.slow


def _env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
        **extra,
    }


def _sqlite(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = _env(f"sqlite+aiosqlite:///{tmp_path / 'served.db'}", **extra)
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    return env


def _create(base_url: str, text: str = "a long story") -> str:
    created = post(base_url, "threads.create", input=user_input(text))
    thread_id: str = parse_events(created.text)[0]["thread"]["id"]
    return thread_id


def _stream_body(thread_id: str | None, text: str) -> dict[str, Any]:
    if thread_id is None:
        return {"type": "threads.create", "params": {"input": user_input(text)}}
    params = {"thread_id": thread_id, "input": user_input(text)}
    return {"type": "threads.add_user_message", "params": params}


# ---- SIGTERM ----


def test_sigterm_mid_stream_ends_it_like_a_cancel_and_exits_0(tmp_path: Path) -> None:
    env = _sqlite(tmp_path, OFFLINE_TOKEN_DELAY_MS="100", SHUTDOWN_GRACE_SECONDS="1")
    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        body = _stream_body(None, "a long story")
        with http.stream("POST", "/chatkit", json=body) as response:
            lines = response.iter_lines()
            seen = read_events(lines, until=5)
            outcome: dict[str, Any] = {}
            stopper = threading.Thread(target=lambda: outcome.update(r=server.terminate()))
            stopper.start()
            seen += rest_of(lines)  # the stream ends by itself, cleanly
        stopper.join(timeout=60)
        status, seconds = outcome["r"]
    assert status == 0, server.output
    assert 0.8 <= seconds <= 6, seconds  # the grace (1 s), then a prompt exit
    last = seen[-1]
    assert last["type"] == "error" and last["allow_retry"] is True
    assert "restarting" in last["message"]
    thread_id = seen[0]["thread"]["id"]
    streamed = "".join(
        e["update"].get("delta", "") for e in seen if e["type"] == "thread.item.updated"
    )

    with serving(env) as server:
        items = post(server.base_url, "items.list", thread_id=thread_id, order="asc").json()["data"]
        assert [i["type"] for i in items] == ["user_message", "assistant_message"]
        partial = items[1]["content"][0]["text"]
        assert partial.startswith(streamed) and partial
        assert "Set LLM_PROVIDER" not in partial  # really cut short
        # Nothing is left locked: the thread takes a new message at once.
        again = post(
            server.base_url,
            "threads.add_user_message",
            thread_id=thread_id,
            input=user_input("more"),
        )
        assert '"more"' in answer_text(parse_events(again.text))


def test_sigterm_lets_a_stream_finish_within_the_grace(tmp_path: Path) -> None:
    env = _sqlite(tmp_path, OFFLINE_TOKEN_DELAY_MS="20", SHUTDOWN_GRACE_SECONDS="20")
    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        with http.stream("POST", "/chatkit", json=_stream_body(None, "hello")) as response:
            lines = response.iter_lines()
            seen = read_events(lines, until=2)
            outcome: dict[str, Any] = {}
            stopper = threading.Thread(target=lambda: outcome.update(r=server.terminate()))
            stopper.start()
            seen += rest_of(lines)
        stopper.join(timeout=60)
        status, seconds = outcome["r"]
    assert status == 0, server.output
    assert seconds < 10, seconds  # it left as soon as the stream was done, not at 20 s
    assert seen[-1]["type"] != "error"
    assert "Set LLM_PROVIDER" in answer_text(seen)  # the whole answer


# ---- one answer per thread, across processes ----


def test_a_busy_thread_is_409_from_another_process_on_postgres() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        upgrade_to_head(url)
        env = _env(url, OFFLINE_TOKEN_DELAY_MS="30")
        with serving(env) as first, serving(env) as second:
            thread_id = _create(first.base_url, "hi")
            with httpx.Client(base_url=first.base_url, timeout=30) as http:
                # Ends normally: the lease is released at the end.
                with http.stream("POST", "/chatkit", json=_stream_body(thread_id, "one")) as r:
                    # Keep the iterator: dropping it would close the connection.
                    lines = r.iter_lines()
                    read_events(lines, until=1)
                    busy = post(
                        second.base_url,
                        "threads.add_user_message",
                        thread_id=thread_id,
                        input=user_input("x"),
                    )
                    assert_envelope(busy, 409, "thread_busy")
                    rest_of(lines)
                done = post(
                    second.base_url,
                    "threads.add_user_message",
                    thread_id=thread_id,
                    input=user_input("two"),
                )
                assert '"two"' in answer_text(parse_events(done.text))

                # Ends by the client leaving: released too, within moments.
                with http.stream("POST", "/chatkit", json=_stream_body(thread_id, "three")) as r:
                    lines = r.iter_lines()
                    read_events(lines, until=2)
                    busy = post(
                        second.base_url,
                        "threads.add_user_message",
                        thread_id=thread_id,
                        input=user_input("x"),
                    )
                    assert_envelope(busy, 409, "thread_busy")
                released_at = time.monotonic()
                while True:
                    again = post(
                        second.base_url,
                        "threads.add_user_message",
                        thread_id=thread_id,
                        input=user_input("four"),
                    )
                    if again.status_code != 409:
                        break
                    assert time.monotonic() - released_at < 5, "the lease was not released"
                    time.sleep(0.05)
                assert '"four"' in answer_text(parse_events(again.text))


# ---- the database goes away and comes back ----


def test_a_postgres_restart_fails_requests_cleanly_and_the_server_recovers(
    postgres_cluster: ThrowawayPostgres,
) -> None:
    pg = postgres_cluster
    upgrade_to_head(pg.url)
    env = _env(pg.url, OFFLINE_TOKEN_DELAY_MS="50")
    with serving(env) as server:
        thread_id = _create(server.base_url, "before")
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200

        # A stream open while the database stops ends with an error event.
        body = _stream_body(thread_id, "during")
        with (
            httpx.Client(base_url=server.base_url, timeout=30) as http,
            http.stream("POST", "/chatkit", json=body) as r,
        ):
            lines = r.iter_lines()
            read_events(lines, until=2)
            pg.stop()
            tail = rest_of(lines)
        assert tail and tail[-1]["type"] == "error"

        assert_envelope(httpx.get(f"{server.base_url}/readyz"), 503, "database_unavailable")
        assert_envelope(post(server.base_url, "threads.list"), 503, "database_unavailable")
        refused = post(
            server.base_url,
            "threads.add_user_message",
            thread_id=thread_id,
            input=user_input("x"),
        )
        assert_envelope(refused, 503, "database_unavailable")
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200

        pg.start()
        back = time.monotonic()
        while httpx.get(f"{server.base_url}/readyz").status_code != 200:
            assert time.monotonic() - back < 10, "the server did not recover"
            time.sleep(0.05)
        recovered_in = time.monotonic() - back
        assert post(server.base_url, "threads.list").status_code == 200
        # The stream cut by the outage could not free its thread while the database
        # was away; the release is retried each second once it is back.
        while True:
            after = post(
                server.base_url,
                "threads.add_user_message",
                thread_id=thread_id,
                input=user_input("after"),
            )
            if after.status_code != 409:
                break
            assert time.monotonic() - back < 5, "the thread stayed locked"
            time.sleep(0.1)
        assert '"after"' in answer_text(parse_events(after.text))
        # Connections lost in the restart were handed back, not leaked (the gauge is
        # sampled each second).
        time.sleep(1.2)
        scrape = httpx.get(f"{server.base_url}/metrics").text
        assert metric(scrape, "chatkit_db_pool_connections_in_use") == 0
        assert metric(scrape, "chatkit_db_pool_size") == 10
        assert metric(scrape, "chatkit_errors_total", kind="database_unavailable") >= 3
    assert recovered_in < 2, recovered_in


# ---- metrics with several workers ----


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    # A temporary folder of its own: other servers on the machine make such folders too.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = _sqlite(tmp_path, METRICS_TOKEN="scrape-token-0123456789", TMPDIR=str(scratch))
    auth = {"Authorization": "Bearer scrape-token-0123456789"}

    def shared_dirs() -> set[Path]:
        return set(scratch.glob("chatkit-metrics-*"))

    before = shared_dirs()
    with serving(env, CLI, "serve", "--workers", "2") as server:
        for _ in range(8):  # a new connection each: the kernel spreads them over workers
            assert post(server.base_url, "threads.list").status_code == 200
        scrapes = [httpx.get(f"{server.base_url}/metrics", headers=auth).text for _ in range(4)]
        assert httpx.get(f"{server.base_url}/metrics").status_code == 401
        created = shared_dirs() - before
        status, _ = server.terminate()
    assert status == 0
    for scrape in scrapes:  # whichever worker answers, it reports them all
        assert metric(scrape, "chatkit_requests_total", type="threads.list", status="200") == 8
    assert len(created) == 1
    assert not created & shared_dirs()  # removed when the server stopped

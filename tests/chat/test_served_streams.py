"""A real uvicorn process over a socket: restarts and cancelled streams."""

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.chat_client import post
from tests.support.processes import run_cli, serving
from tests.support.sse import answer_text, parse_events, user_input

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'served.db'}",
        "OFFLINE_TOKEN_DELAY_MS": "0",
        "LLM_PROVIDER": "offline",
        **extra,
    }


def test_threads_survive_a_restart(tmp_path: Path) -> None:
    env = _env(tmp_path)
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr

    with serving(env) as server:
        created = post(server.base_url, "threads.create", input=user_input("remember me"))
        assert created.headers["content-type"].startswith("text/event-stream")
        events = parse_events(created.text)
        thread_id = events[0]["thread"]["id"]
        first_answer = answer_text(events)

    with serving(env) as server:
        thread = post(server.base_url, "threads.get_by_id", thread_id=thread_id).json()
        items = thread["items"]["data"]
        assert [i["type"] for i in items] == ["user_message", "assistant_message"]
        assert items[0]["content"][0]["text"] == "remember me"
        assert items[1]["content"][0]["text"] == first_answer
        more = post(
            server.base_url,
            "threads.add_user_message",
            thread_id=thread_id,
            input=user_input("again"),
        )
        assert '"again"' in answer_text(parse_events(more.text))


def test_a_cancelled_stream_keeps_the_partial_answer(tmp_path: Path) -> None:
    env = _env(tmp_path, OFFLINE_TOKEN_DELAY_MS="100")
    assert run_cli("migrate", env=env).returncode == 0

    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        body = {"type": "threads.create", "params": {"input": user_input("a long story")}}
        seen: list[dict[str, Any]] = []
        with http.stream("POST", "/chatkit", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.extend(parse_events(line + "\n\n"))
                if sum(e["type"] == "thread.item.updated" for e in seen) >= 5:
                    break  # leaving the block closes the connection mid-answer
        thread_id = seen[0]["thread"]["id"]
        streamed = "".join(
            e["update"].get("delta", "") for e in seen if e["type"] == "thread.item.updated"
        )

        items: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = http.post(
                "/chatkit",
                json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}},
            ).json()
            items = page["data"]
            if len(items) == 2:
                break
            time.sleep(0.1)
        assert [i["type"] for i in items] == ["user_message", "assistant_message"]
        partial = items[1]["content"][0]["text"]
        assert partial.startswith(streamed) and partial
        assert "Set LLM_PROVIDER" not in partial  # the answer really was cut short

        after = http.post(
            "/chatkit",
            json={
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input("still there?")},
            },
        )
        assert '"still there?"' in answer_text(parse_events(after.text))


def test_an_answer_outlasting_a_locked_database_is_stored(tmp_path: Path) -> None:
    # Another writer holds SQLite's write lock past the busy timeout (5 s) just as the
    # answer ends: the turn's last transaction fails once, then is stored on a retry.
    env = _env(tmp_path, OFFLINE_TOKEN_DELAY_MS="20")
    assert run_cli("migrate", env=env).returncode == 0
    locked = threading.Event()

    def hold_the_write_lock(seconds: float) -> None:
        blocker = sqlite3.connect(tmp_path / "served.db", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(seconds)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()

    with serving(env) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        body = {"type": "threads.create", "params": {"input": user_input("a long story")}}
        seen: list[dict[str, Any]] = []
        blocker: threading.Thread | None = None
        with http.stream("POST", "/chatkit", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                seen.extend(parse_events(line + "\n\n"))
                if blocker is None and seen[-1]["type"] == "thread.item.updated":
                    blocker = threading.Thread(target=hold_the_write_lock, args=(7.0,))
                    blocker.start()
                    assert locked.wait(5)
        assert blocker is not None
        blocker.join()
        assert not [e for e in seen if e["type"] == "error"], seen[-3:]
        thread_id = seen[0]["thread"]["id"]
        items = http.post(
            "/chatkit",
            json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}},
        ).json()["data"]
        assert [i["type"] for i in items] == ["user_message", "assistant_message"]
        assert items[1]["content"][0]["text"] == answer_text(seen)

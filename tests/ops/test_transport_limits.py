"""`serve`'s limits on connections (ops/transport.py), against a real `chatkit-backend
serve` over sockets: header size and count, heads and bodies that stall or trickle,
the connection cap, and an event stream that outlasts every timeout untouched."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, run_cli, serving
from tests.support.raw_http import (
    connect,
    head,
    parse_response,
    read_response,
    rss_bytes,
    until_closed,
)
from tests.support.sse import parse_events, user_input

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 20
# A loaded machine answers late; what matters is "closed", not the exact moment.
LATE = 15.0


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'served.db'}",
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
        **extra,
    }
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = _env(
        tmp_path_factory.mktemp("limited"),
        HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        MAX_HEADERS=str(MAX_HEADERS),
        # Words slow enough that one answer outlasts both timeouts.
        OFFLINE_TOKEN_DELAY_MS="150",
    )
    with serving(env) as server:
        yield server


def _refusal(raw: bytes, status: int, code: str) -> None:
    """`raw` is our JSON error with `status` and `code`, closing the connection."""
    assert raw, "the connection closed without an answer"
    response = parse_response(raw)
    assert response.status == status, raw[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == code


def _healthy(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/healthz", timeout=30).status_code == 200


# ---- header size and count ----


def test_headers_over_the_size_limit_are_431(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        big = [(f"X-Pad-{i}", "p" * 1500) for i in range(12)]  # 18 KB in short lines
        sock.sendall(head("GET", "/healthz", *big) + b"\r\n")
        raw, closed = until_closed(sock, LATE)
    assert closed is not None
    _refusal(raw, 431, "headers_too_large")
    _healthy(limited)


def test_a_jwt_sized_header_is_fine(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        sock.sendall(head("GET", "/healthz", ("Authorization", "Bearer " + "j" * 8192)) + b"\r\n")
        assert read_response(sock).status == 200


def test_more_headers_than_the_limit_are_431(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        many = [(f"X-Many-{i}", "1") for i in range(MAX_HEADERS + 5)]
        sock.sendall(head("GET", "/healthz", *many) + b"\r\n")
        raw, closed = until_closed(sock, LATE)
    assert closed is not None
    _refusal(raw, 431, "headers_too_large")


def test_malformed_http_is_400_json(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        raw, closed = until_closed(sock, LATE)
    assert closed is not None
    _refusal(raw, 400, "invalid_request")


def test_endless_header_lines_are_cut_off_and_memory_is_not_held(
    limited: ServerProcess,
) -> None:
    # The review's attack: three sockets each sending a 30 MB header line. Before, the
    # server kept every byte (175 -> 263 MB) and the connections open.
    pid = limited.pid
    baseline = peak = rss_bytes(pid)
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)

    outcomes: list[float | None] = []

    def flood() -> None:
        with connect(limited.port) as sock:
            chunk = b"a" * 65536
            try:
                sock.sendall(head("GET", "/healthz") + b"X-Flood: ")
                for _ in range(30 * 1024 * 1024 // len(chunk)):
                    sock.sendall(chunk)
            except OSError:
                pass  # cut off while sending: what should happen
            outcomes.append(until_closed(sock, 60)[1])

    watcher = threading.Thread(target=watch)
    watcher.start()
    floods = [threading.Thread(target=flood) for _ in range(3)]
    for thread in floods:
        thread.start()
    for thread in floods:
        thread.join(timeout=120)
    done.set()
    watcher.join()
    assert len(outcomes) == 3 and all(closed is not None for closed in outcomes), outcomes
    megabytes = 1024 * 1024
    assert peak - baseline < 16 * megabytes, (baseline // megabytes, peak // megabytes)
    assert rss_bytes(pid) - baseline < 16 * megabytes
    _healthy(limited)


# ---- heads that stall ----


def test_heads_that_stall_are_closed_after_the_header_timeout(limited: ServerProcess) -> None:
    silent = [connect(limited.port) for _ in range(10)]
    partial = [connect(limited.port) for _ in range(10)]
    for sock in partial:
        sock.sendall(head("GET", "/healthz"))  # the blank line never comes
    # A second request on a kept-alive connection, stalled the same way.
    kept = connect(limited.port)
    kept.sendall(head("GET", "/healthz") + b"\r\n")
    assert read_response(kept).status == 200
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.")
    try:
        for sock in silent:
            raw, closed = until_closed(sock, LATE)
            assert closed is not None and raw == b""
        for sock in [*partial, kept]:
            raw, closed = until_closed(sock, LATE)
            assert closed is not None
            _refusal(raw, 408, "request_timeout")
    finally:
        for sock in [*silent, *partial, kept]:
            sock.close()
    _healthy(limited)


def test_a_head_is_not_cut_before_the_timeout(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        sock.sendall(head("GET", "/healthz"))
        time.sleep(HEADER_TIMEOUT / 2)
        sock.sendall(b"\r\n")
        assert read_response(sock).status == 200


# ---- bodies that stall or trickle ----


def _chatkit_head(length: int) -> bytes:
    return (
        head(
            "POST",
            "/chatkit",
            ("Content-Type", "application/json"),
            ("Content-Length", str(length)),
        )
        + b"\r\n"
    )


def test_a_body_sent_a_byte_a_second_is_cut_off_with_408(limited: ServerProcess) -> None:
    body = json.dumps({"type": "threads.list", "params": {}}).encode().ljust(200)
    with connect(limited.port) as sock:
        sock.sendall(_chatkit_head(len(body)))
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            for byte in body:
                if stop.wait(1.0):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            raw, closed = until_closed(sock, 60)
        finally:
            stop.set()
            sender.join()
    assert closed is not None
    assert time.monotonic() - started < BODY_TIMEOUT + LATE
    _refusal(raw, 408, "request_timeout")
    _healthy(limited)


def test_a_body_that_stops_is_cut_off_with_408(limited: ServerProcess) -> None:
    with connect(limited.port) as sock:
        sock.sendall(_chatkit_head(100) + b'{"type": ')
        raw, closed = until_closed(sock, BODY_TIMEOUT + LATE)
    assert closed is not None
    _refusal(raw, 408, "request_timeout")


def test_a_slow_but_steady_body_outlasting_the_timeout_is_read(limited: ServerProcess) -> None:
    body = json.dumps({"type": "threads.list", "params": {}}).encode().ljust(6 * 1024)
    with connect(limited.port) as sock:
        sock.sendall(_chatkit_head(len(body)))
        started = time.monotonic()
        for offset in range(0, len(body), 1024):
            sock.sendall(body[offset : offset + 1024])
            time.sleep(0.6)
        response = read_response(sock)
    assert time.monotonic() - started > BODY_TIMEOUT
    assert response.status == 200, response.body
    assert "data" in response.json()


# ---- what must not be touched ----


def test_an_event_stream_longer_than_the_timeouts_is_not_cut(limited: ServerProcess) -> None:
    request = {"type": "threads.create", "params": {"input": user_input("tell me a long story")}}
    with httpx.Client(base_url=limited.base_url, timeout=60) as http:
        started = time.monotonic()
        with http.stream("POST", "/chatkit", json=request) as response:
            assert response.status_code == 200
            text = "".join(response.iter_text())
        seconds = time.monotonic() - started
        # The same connection, kept alive, serves the next request.
        assert http.get("/healthz").status_code == 200
    assert seconds > 2 * max(HEADER_TIMEOUT, BODY_TIMEOUT), seconds
    events = parse_events(text)
    assert any(e["type"] == "thread.item.done" for e in events)
    assert not any(e["type"] == "error" for e in events)


# ---- the connection cap ----


def test_past_max_connections_requests_get_503(tmp_path: Path) -> None:
    env = _env(tmp_path, MAX_CONNECTIONS="4", MAX_OPEN_STREAMS="1")
    with serving(env) as server:
        held = [connect(server.port) for _ in range(4)]
        try:
            for sock in held:  # kept alive after their answer: each still holds its place
                sock.sendall(head("GET", "/healthz") + b"\r\n")
                assert read_response(sock).status == 200
            with connect(server.port) as extra:
                extra.sendall(head("GET", "/healthz") + b"\r\n")
                raw, closed = until_closed(extra, LATE)
            assert closed is not None
            _refusal(raw, 503, "overloaded")
            assert parse_response(raw).headers["retry-after"] == "1"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + LATE
        while httpx.get(f"{server.base_url}/healthz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the places were not given back"
            time.sleep(0.1)

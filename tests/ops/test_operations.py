"""Health, readiness, metrics, request ids and logs, over the app in process."""

import json
import logging
import re
from pathlib import Path

import pytest

from chatkit_backend.context import Owner
from chatkit_backend.ops.logs import (
    JsonFormatter,
    NoTracebacks,
    RequestInfo,
    TextFormatter,
    current_request,
    request_id_from,
)
from tests.support.chat_client import assert_envelope, local_app
from tests.support.ops import body, metric
from tests.support.processes import free_port
from tests.support.sse import parse_events, user_input

# A PostgreSQL URL where nothing listens: the database is "down".
DOWN_URL = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"


# ---- health and readiness ----


async def test_healthz_and_readyz_with_the_database_up(database_url: str) -> None:
    async with local_app(database_url) as (_, http):
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}


async def test_with_the_database_down_requests_fail_cleanly() -> None:
    async with local_app(DOWN_URL) as (_, http):
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        assert_envelope(await http.get("/readyz"), 503, "database_unavailable")
        listed = await http.post("/chatkit", json=body("threads.list"))
        assert_envelope(listed, 503, "database_unavailable")
        assert listed.headers["retry-after"]
        thread = body("threads.add_user_message", thread_id="thr_x", input=user_input("hi"))
        assert_envelope(await http.post("/chatkit", json=thread), 503, "database_unavailable")
        # A new thread too: its first transaction comes before its stream, so it is
        # refused with a retry hint rather than failed half-way.
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("x")))
        assert_envelope(created, 503, "database_unavailable")
        assert created.headers["retry-after"]


async def test_draining_refuses_new_streams_and_turns_readyz_off(sqlite_database_url: str) -> None:
    async with local_app(sqlite_database_url) as (app, http):
        app.state.services.drain.begin()
        assert_envelope(await http.get("/readyz"), 503, "shutting_down")
        refused = await http.post("/chatkit", json=body("threads.create", input=user_input("x")))
        assert_envelope(refused, 503, "shutting_down")
        assert refused.headers["retry-after"]
        assert (await http.post("/chatkit", json=body("threads.list"))).status_code == 200


# ---- request ids ----


async def test_request_ids_are_taken_or_made_and_returned(sqlite_database_url: str) -> None:
    async with local_app(sqlite_database_url) as (_, http):
        given = await http.get("/healthz", headers={"X-Request-ID": "edge-42.a:b_c"})
        assert given.headers["x-request-id"] == "edge-42.a:b_c"
        made = (await http.get("/healthz")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert (await http.get("/healthz")).headers["x-request-id"] != made
        for unsafe in ("has spaces", "x" * 129, 'quote"d', "new\tline"):
            replaced = await http.get("/healthz", headers={"X-Request-ID": unsafe})
            assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
        refused = await http.post(
            "/chatkit",
            content=b"{",
            headers={"X-Request-ID": "r-1", "Content-Type": "application/json"},
        )
        assert refused.status_code == 400
        assert refused.headers["x-request-id"] == "r-1"


def test_request_id_from_header() -> None:
    assert request_id_from("abc") == "abc"
    assert request_id_from(None) != request_id_from(None)
    assert len(request_id_from("")) == 32


# ---- logs ----


class Lines(logging.Handler):
    """Formats each record as it is emitted, while the request's context is current."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(NoTracebacks())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
async def test_log_lines_carry_ids_and_no_content(
    sqlite_database_url: str, formatter: logging.Formatter
) -> None:
    secret = "SECRET-WORDS-4242"
    lines = Lines(formatter)
    root = logging.getLogger()
    root.addHandler(lines)
    level = root.level
    root.setLevel(logging.INFO)  # the default LOG_LEVEL
    try:
        async with local_app(sqlite_database_url, local_tenant_id="acme") as (_, http):
            created = await http.post(
                "/chatkit",
                json=body("threads.create", input=user_input(secret)),
                headers={"X-Request-ID": "req-1"},
            )
            thread_id = parse_events(created.text)[0]["thread"]["id"]
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    assert lines.lines
    assert not any(secret in line for line in lines.lines)
    access = [
        line
        for line in lines.lines
        if '"logger": "chatkit_backend.access"' in line or " chatkit_backend.access: " in line
    ]
    assert len(access) == 1, "\n".join(access)
    if isinstance(formatter, JsonFormatter):
        document = json.loads(access[0])
        assert document["logger"] == "chatkit_backend.access"
        assert document["request_id"] == "req-1"
        assert document["chatkit_type"] == "threads.create"
        assert document["thread_id"] == thread_id
        assert document["tenant_id"] == "acme"
        assert document["user_id"].startswith("user_")
        assert document["status"] == 200
        assert document["duration_ms"] > 0
        assert document["outcome"] == "completed"
    else:
        assert f"request_id=req-1 chatkit_type=threads.create thread_id={thread_id}" in access[0]
        assert "tenant_id=acme" in access[0] and "status=200" in access[0]


def test_formats_put_the_request_on_every_line() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "a thing %s", ("happened",), None)
    record.status = 409  # an allowed extra
    record.text = "user words"  # not an allowed extra: left out
    info = RequestInfo("rid", "threads.create", "thr_1", Owner("acme", "alice"))
    token = current_request.set(info)
    try:
        document = json.loads(JsonFormatter().format(record))
        line = TextFormatter().format(record)
    finally:
        current_request.reset(token)
    assert document["message"] == "a thing happened"
    assert document["level"] == "WARNING"
    assert document["time"].endswith("+00:00")
    assert {k: document[k] for k in ("request_id", "thread_id", "tenant_id", "user_id")} == {
        "request_id": "rid",
        "thread_id": "thr_1",
        "tenant_id": "acme",
        "user_id": "alice",
    }
    assert document["chatkit_type"] == "threads.create"
    assert document["status"] == 409
    assert "user words" not in json.dumps(document) + line
    assert line.endswith(
        "request_id=rid chatkit_type=threads.create thread_id=thr_1 tenant_id=acme "
        "user_id=alice status=409"
    )


# ---- metrics ----


async def test_metrics_count_requests_streams_tokens_errors_and_the_pool(
    database_url: str,
) -> None:
    async with local_app(database_url) as (_, http):
        before = (await http.get("/metrics")).text
        created = await http.post("/chatkit", json=body("threads.create", input=user_input("hi")))
        thread_id = parse_events(created.text)[0]["thread"]["id"]
        await http.post("/chatkit", json=body("threads.list"))
        await http.post("/chatkit", json=body("threads.get_by_id", thread_id="thr_nope"))
        scrape = await http.get("/metrics")
        assert scrape.headers["content-type"].startswith("text/plain")
        after = scrape.text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("chatkit_requests_total", type="threads.create", status="200") == 1
    assert grew("chatkit_requests_total", type="threads.list", status="200") == 1
    assert grew("chatkit_requests_total", type="threads.get_by_id", status="404") == 1
    assert grew("chatkit_errors_total", kind="not_found") == 1
    assert (
        grew("chatkit_stream_duration_seconds_count", type="threads.create", outcome="completed")
        == 1
    )
    assert grew("chatkit_time_to_first_delta_seconds_count", type="threads.create") == 1
    assert grew("chatkit_model_tokens_total", model="offline", kind="output") > 0
    assert metric(after, "chatkit_open_streams") == 0
    assert "chatkit_db_pool_connections_in_use" in after
    assert thread_id


async def test_metrics_can_need_a_token_or_be_off(sqlite_database_url: str) -> None:
    token = "scrape-token-0123456789"
    async with local_app(sqlite_database_url, metrics_token=token) as (_, http):
        assert_envelope(await http.get("/metrics"), 401, "unauthorized")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        assert_envelope(wrong, 401, "unauthorized")
        good = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200
        assert "chatkit_requests_total" in good.text
    async with local_app(sqlite_database_url, metrics_enabled=False) as (_, http):
        assert (await http.get("/metrics")).status_code == 404


def test_a_short_metrics_token_is_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from chatkit_backend.settings import Settings

    with pytest.raises(ValidationError, match="METRICS_TOKEN"):
        Settings(_env_file=None, metrics_token="short")  # type: ignore[call-arg]

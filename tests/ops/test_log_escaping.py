"""One record is one log line: a path, an id, a token's subject or a message carrying
`%0a` and a fake line after it forges nothing, in the text format (the default) and in
JSON; unit, in process, and in the log of a real `chatkit-backend serve`."""

import json
import logging
import re
from pathlib import Path

import httpx
import jwt
import pytest

from chatkit_backend.context import Owner
from chatkit_backend.ops.logs import (
    JsonFormatter,
    RequestInfo,
    TextFormatter,
    current_request,
    field_value,
)
from tests.support.auth import SECRET, claims, jwt_app
from tests.support.chat_client import assert_envelope
from tests.support.ops import captured_logs
from tests.support.processes import run_cli, serving

FORGED = "2099-01-01 00:00:00,000 INFO chatkit_backend.access: POST /admin 200 user_id=root"
# Every way a string can end a line early, or rewrite what a terminal shows.
BREAKERS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
HIDERS = ["\x1b[2K\x1b[1G", "\x9b2K", "\x08" * 10, "\x00", "\x7f", "\u202e"]
PATH = "/nowhere%0A" + FORGED.replace(" ", "%20")
RAW_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def _formatted(formatter: logging.Formatter, record: logging.LogRecord, info: RequestInfo) -> str:
    token = current_request.set(info)
    try:
        return formatter.format(record)
    finally:
        current_request.reset(token)


@pytest.mark.parametrize("breaker", BREAKERS + HIDERS)
def test_text_lines_escape_every_control_character(breaker: str) -> None:
    evil = f"x{breaker}{FORGED}"
    record = _record("GET %s %d", evil, 404, path=evil, outcome=evil)
    info = RequestInfo("rid", "threads.list", None, Owner("acme", evil))
    line = _formatted(TextFormatter(), record, info)
    assert len(line.splitlines()) == 1 and not RAW_CONTROLS.search(line), repr(line)
    assert f"GET x{breaker.encode('unicode_escape').decode()}2099-01-01" in line
    # Fields keep their place: the forged `user_id=root` is inside a quoted value.
    quoted = field_value(evil)
    assert quoted.startswith('"') and f" user_id={quoted} " in line
    assert line.endswith(f" path={quoted} outcome={quoted}")


def test_text_fields_that_could_pass_for_others_are_quoted() -> None:
    assert field_value("thr_1") == "thr_1"
    assert field_value(200) == "200"
    assert field_value("x user_id=root") == '"x user_id=root"'
    assert field_value('a"b\\c') == '"a\\"b\\\\c"'
    assert field_value("") == '""'
    assert field_value("a\nb") == '"a\\nb"'
    assert field_value("\x1b[31m") == '"\\x1b[31m"'


@pytest.mark.parametrize("breaker", BREAKERS + HIDERS)
def test_json_lines_carry_any_value_on_one_line(breaker: str) -> None:
    evil = f"x{breaker}{FORGED}"
    record = _record("GET %s", evil, path=evil)
    info = RequestInfo("rid", None, None, Owner("acme", evil))
    line = _formatted(JsonFormatter(), record, info)
    assert len(line.splitlines()) == 1 and line.isascii() and line.isprintable()
    document = json.loads(line)
    assert document["message"] == f"GET {evil}"
    assert document["path"] == evil and document["user_id"] == evil


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
async def test_requests_forge_no_log_lines(
    sqlite_database_url: str, formatter: logging.Formatter
) -> None:
    async with jwt_app(sqlite_database_url) as app:
        forger = await app.client(f"mallory\n{FORGED}")
        with captured_logs(formatter, "chatkit_backend") as logs:
            await forger.http.get(PATH)
            assert (await forger.post({"type": "threads.list", "params": {}})).status_code == 200
            thread_id = f"thr_x\n{FORGED}"
            response = await forger.post(
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
            )
            assert_envelope(response, 400, "invalid_request")
    lines = logs.lines
    assert len(lines) == 3, lines
    assert all(len(line.splitlines()) == 1 for line in lines)
    if isinstance(formatter, JsonFormatter):
        documents = [json.loads(line) for line in lines]
        assert documents[0]["path"] == PATH  # as the client wrote it
        assert documents[1]["user_id"] == f"mallory\n{FORGED}"
    else:
        assert all(TIMESTAMP.match(line) for line in lines)
        assert f"GET {PATH} 404" in lines[0]
        assert 'user_id="mallory\\n2099-01-01' in lines[1]


@pytest.mark.slow
def test_a_served_text_log_has_no_forged_line(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'served.db'}",
        "LLM_PROVIDER": "offline",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": SECRET,
    }
    assert run_cli("migrate", env=env).returncode == 0
    forged_user = jwt.encode(claims(f"mallory\n{FORGED}"), SECRET, algorithm="HS256")
    with serving(env, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {forged_user}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
            assert http.get(PATH).status_code == 404
            assert http.post("/chatkit", json={"type": "threads.list", "params": {}}).is_success
            body = {"type": "items.list", "params": {"thread_id": f"thr_x\r\n{FORGED}"}}
            assert http.post("/chatkit", json=body).status_code == 400
    log = server.output
    assert "POST /admin" in log  # the attempts are there, escaped
    assert not any(line.startswith("2099-01-01") for line in log.splitlines()), log
    assert not any(line.startswith("mallory") for line in log.splitlines()), log
    access = [line for line in log.splitlines() if " chatkit_backend.access: " in line]
    assert len(access) == 3 and all(TIMESTAMP.match(line) for line in access), access

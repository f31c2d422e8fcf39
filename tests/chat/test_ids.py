"""Ids are checked before any query, log line or error message: a malformed one is a 400
that echoes nothing of it, on SQLite and PostgreSQL (where a NUL in a query was a 500)."""

from typing import Any, get_args, get_type_hints

import pytest
from chatkit.types import ChatKitReq

from chatkit_backend.chat.ids import MAX_ID_LENGTH, is_id
from chatkit_backend.ops.logs import TextFormatter
from chatkit_backend.store.sql_store import PREFIXES, new_id
from tests.support.attachments import PNG, UPLOAD_URL, uploaded
from tests.support.chat_client import ChatClient, assert_envelope, chat_client
from tests.support.ops import captured_logs
from tests.support.sse import user_input

FORGED_LINE = "2099-01-01 00:00:00,000 INFO chatkit_backend.access: POST /admin 200 user_id=root"
# Each of these exists nowhere; none may reach a query, a log line or an error body.
BAD_IDS = [
    "thr_x\n" + FORGED_LINE,
    "thr_" + "x" * MAX_ID_LENGTH,
    "thr_x y",
    "thr_é",
    "../x",
    "",
]
KNOWN_THREAD = "thr_nope"  # well-formed: without the check, each request below was a 404
ACTION = {"type": "a", "payload": {}}


def _with_ids(bad: str) -> list[tuple[str, dict[str, Any]]]:
    """A request of every type naming `bad` in one of its id fields."""
    t = KNOWN_THREAD
    return [
        ("threads.get_by_id", {"thread_id": bad}),
        ("threads.get", {"thread_id": bad}),  # the design notes' name
        ("threads.create", {"input": {**user_input("hi"), "attachments": [bad]}}),
        ("messages.send", {"thread_id": bad, "input": "hi"}),  # the design notes' shape
        ("threads.add_user_message", {"thread_id": bad, "input": user_input("hi")}),
        ("threads.add_client_tool_output", {"thread_id": bad, "result": {}}),
        ("threads.add_structured_input", {"thread_id": t, "item_id": bad, "input": {}}),
        ("threads.retry_after_item", {"thread_id": t, "item_id": bad}),
        ("threads.custom_action", {"thread_id": bad, "action": ACTION}),
        ("threads.sync_custom_action", {"thread_id": t, "item_id": bad, "action": ACTION}),
        ("threads.list", {"after": bad}),
        ("items.list", {"thread_id": bad}),
        ("items.list", {"thread_id": t, "after": bad}),
        ("items.feedback", {"thread_id": t, "item_ids": ["msg_x", bad], "kind": "positive"}),
        ("threads.update", {"thread_id": bad, "title": "t"}),
        ("threads.delete", {"thread_id": bad}),
        ("attachments.delete", {"attachment_id": bad}),
    ]


CASES = _with_ids("{bad}")


def _filled(params: Any, bad: str) -> Any:
    if params == "{bad}":
        return bad
    if isinstance(params, dict):
        return {key: _filled(value, bad) for key, value in params.items()}
    if isinstance(params, list):
        return [_filled(value, bad) for value in params]
    return params


def test_every_request_type_with_an_id_is_covered() -> None:
    id_fields = {"thread_id", "item_id", "item_ids", "attachment_id", "after", "input"}
    with_ids = {
        model.model_fields["type"].default
        for model in get_args(get_args(ChatKitReq)[0])
        if id_fields & set(get_type_hints(model)["params"].model_fields)
    }
    assert with_ids <= {type for type, _ in CASES}


def test_ids_we_make_are_ids() -> None:
    for kind in PREFIXES:
        assert is_id(new_id(kind))  # type: ignore[arg-type]
    assert is_id("thr_1a2b3c4d")  # the SDK's default shape
    assert is_id("x" * MAX_ID_LENGTH)
    assert not any(is_id(bad) for bad in [*BAD_IDS, "thr_x\n", "a\x00b", "thr_x\u2028"])


@pytest.mark.parametrize(("type", "params"), CASES, ids=[f"{t}-{'-'.join(p)}" for t, p in CASES])
async def test_a_malformed_id_is_400_and_never_echoed_or_logged(
    client: ChatClient, type: str, params: dict[str, Any]
) -> None:
    # An empty thread_id is how the design notes' `messages.send` starts a new thread.
    bad_ids = [bad for bad in BAD_IDS if bad or type != "messages.send"]
    with captured_logs(TextFormatter(), "chatkit_backend") as logs:
        for bad in bad_ids:
            response = await client.post({"type": type, "params": _filled(params, bad)})
            assert_envelope(response, 400, "invalid_request")
            assert "not a valid id" in response.json()["message"]
            assert "thr_x" not in response.text and "é" not in response.text
    access = logs.lines
    assert len(access) == len(bad_ids) and all("POST /chatkit 400" in line for line in access)
    assert not any("thr_x" in line or "Traceback" in line for line in access), access
    assert (await client.call("threads.list"))["data"] == []  # nothing was created


async def test_a_900_kb_id_is_refused_unlogged_and_unechoed(database_url: str) -> None:
    huge = "thr_" + "x" * 900_000
    async with chat_client(database_url, max_body_bytes=2 * 1024 * 1024) as client:
        with captured_logs(TextFormatter(), "chatkit_backend") as logs:
            for type in ("threads.get_by_id", "items.list", "threads.delete"):
                response = await client.post({"type": type, "params": {"thread_id": huge}})
                assert_envelope(response, 400, "invalid_request")
                assert len(response.content) < 500
    access = logs.lines
    assert len(access) == 3 and all(len(line) < 500 for line in access), access


# Attachment ids in a URL: `%00` reached PostgreSQL as a NUL (a 500 and an unhandled
# DBAPIError in the log); signed links and the owner's GET alike.
FORGED_SEGMENT = "atc_x%0A" + FORGED_LINE.replace(" ", "%20").replace("/", "")  # one segment
BAD_SEGMENTS = ["atc_x%00", FORGED_SEGMENT, "atc_" + "x" * 200, "%C3%A9"]


async def test_a_malformed_attachment_id_in_a_url_is_400(database_url: str) -> None:
    async with chat_client(database_url) as client:
        image = await uploaded(client, "cat.png", PNG, "image/png")
        query = image["preview_url"].split("?")[1]
        with captured_logs(TextFormatter(), "chatkit_backend") as logs:
            for segment in BAD_SEGMENTS:
                for method, url in [
                    ("GET", f"{UPLOAD_URL}/{segment}/preview?{query}"),
                    ("GET", f"{UPLOAD_URL}/{segment}/content?{query}"),
                    ("POST", f"{UPLOAD_URL}/{segment}/upload?{query}"),
                    ("GET", f"{UPLOAD_URL}/{segment}"),
                ]:
                    response = await client.http.request(method, url)
                    assert_envelope(response, 400, "invalid_request")
                    assert "atc_x" not in response.text and "é" not in response.text
        access = logs.lines
        assert len(access) == 4 * len(BAD_SEGMENTS)
        assert all("400" in line and len(line) < 1000 for line in access), access
        assert not any("unhandled" in line or "Traceback" in line for line in logs.lines)
        # Well-formed ids still work: the preview opens, an unknown id is a 404.
        assert (await client.http.get(image["preview_url"])).status_code == 200
        unknown = await client.http.get(f"{UPLOAD_URL}/atc_{'0' * 32}")
        assert_envelope(unknown, 404, "not_found")

"""Roles: a viewer reads and changes nothing; members and admins do everything."""

from typing import Any

import pytest

from chatkit_backend.api.requests import REQUEST_TYPES
from chatkit_backend.auth.roles import READ_TYPES, authorize
from chatkit_backend.errors import Forbidden
from tests.support.auth import JwtApp, jwt_app, new_user
from tests.support.chat_client import ChatClient, assert_envelope
from tests.support.sse import user_input

WRITES: dict[str, dict[str, Any]] = {
    "threads.create": {"input": user_input("hi")},
    "threads.add_user_message": {"input": user_input("hi")},
    "threads.retry_after_item": {"item_id": "<user_message>"},
    "threads.add_client_tool_output": {"result": {}},
    "threads.add_structured_input": {"item_id": "<user_message>", "input": {"answers": {}}},
    "threads.custom_action": {"action": {"type": "a", "payload": {}}},
    "threads.sync_custom_action": {"action": {"type": "a", "payload": {}}},
    "threads.update": {"title": "renamed"},
    "threads.delete": {},
    "items.feedback": {"item_ids": ["<answer>"], "kind": "positive"},
    "attachments.create": {"name": "a.txt", "size": 3, "mime_type": "text/plain"},
    "attachments.delete": {"attachment_id": "atc_x"},
    "input.transcribe": {"audio_base64": "AAAA", "mime_type": "audio/webm"},
}
READS: dict[str, dict[str, Any]] = {
    "threads.get_by_id": {},
    "threads.list": {},
    "items.list": {},
}


def test_every_request_type_has_a_rule() -> None:
    assert set(WRITES) | set(READS) == REQUEST_TYPES
    assert set(READS) == READ_TYPES


@pytest.mark.parametrize("type", sorted(REQUEST_TYPES))
def test_authorize(type: str) -> None:
    for role in ("member", "admin"):
        authorize(type, role)
    if type in READ_TYPES:
        authorize(type, "viewer")
        authorize(type, "something-else")
    else:
        for role in ("viewer", "something-else", ""):  # unknown roles fail closed
            with pytest.raises(Forbidden):
                authorize(type, role)


NO_THREAD = {
    "threads.create",
    "threads.list",
    "attachments.create",
    "attachments.delete",
    "input.transcribe",
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    """Replace "<name>" placeholders with real ids."""
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return ids[value[1:-1]]
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    return value


def _params(type: str, params: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    resolved: dict[str, Any] = _fill(params, ids)
    if type not in NO_THREAD:
        resolved["thread_id"] = ids["thread"]
    return resolved


async def _member_with_history(app: JwtApp) -> tuple[str, dict[str, str], ChatClient]:
    user = new_user()
    member = await app.client(user, "acme")
    thread_id, _ = await member.new_thread("before the downgrade")
    user_message, answer = [item["id"] for item in await member.items(thread_id)]
    ids = {"thread": thread_id, "user_message": user_message, "answer": answer}
    return user, ids, member


async def test_a_viewer_reads_but_every_write_is_403_before_any_stream(
    sqlite_database_url: str,
) -> None:
    async with jwt_app(sqlite_database_url) as app:
        user, ids, member = await _member_with_history(app)
        viewer = await app.client(user, "acme", role="viewer")
        before = await member.call("threads.get_by_id", thread_id=ids["thread"])

        for type, params in READS.items():
            answer = await viewer.call(type, **_params(type, params, ids))
            assert ids["thread"] in str(answer)

        for type, params in WRITES.items():
            response = await viewer.post({"type": type, "params": _params(type, params, ids)})
            assert_envelope(response, 403, "forbidden")
            assert "viewer" in response.json()["message"]
            # Decided before the ids are looked up: unknown ids get the same answer.
            unknown = {**ids, "thread": "thr_unknown"}
            other = await viewer.post({"type": type, "params": _params(type, params, unknown)})
            assert_envelope(other, 403, "forbidden")

        assert await member.call("threads.get_by_id", thread_id=ids["thread"]) == before
        assert len((await member.call("threads.list"))["data"]) == 1


@pytest.mark.parametrize("role", ["member", "admin", None])
async def test_members_and_admins_write(sqlite_database_url: str, role: str | None) -> None:
    async with jwt_app(sqlite_database_url) as app:
        client = await app.client(new_user(), "acme", role=role)
        thread_id, _ = await client.new_thread("hello")
        await client.call("threads.update", thread_id=thread_id, title="mine")
        await client.stream("threads.add_user_message", thread_id=thread_id, input=user_input("x"))
        await client.call("threads.delete", thread_id=thread_id)


async def test_403_comes_after_authentication(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url) as app:
        http = await app.raw({"Authorization": "Bearer not-a-token"})
        body = {"type": "threads.create", "params": {"input": user_input("x")}}
        assert_envelope(await http.post("/chatkit", json=body), 401, "unauthorized")

"""examples/embedded: a host app with its own users, auth, agent and migrations, that
includes chatkit-backend's router under /api; on SQLite and PostgreSQL, over HTTP."""

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from chatkit_backend import Settings
from chatkit_backend.store.migrations import code_revisions, version_table
from tests.support.attachments import PNG, upload
from tests.support.sse import answer_text, parse_events, user_input

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedded"
sys.path.insert(0, str(EXAMPLE))

from host.main import create_app  # noqa: E402
from host.migrate import upgrade_all, upgrade_chatkit, upgrade_host  # noqa: E402
from host.models import CHATKIT_TABLE_PREFIX  # noqa: E402
from host.users import add_user  # noqa: E402

HOST_TABLES = {"orgs", "users", "alembic_version"}
OUR_VERSION_TABLE = version_table(CHATKIT_TABLE_PREFIX)
OUR_TABLES = {f"{CHATKIT_TABLE_PREFIX}{name}" for name in ("threads", "items", "attachments")} | {
    OUR_VERSION_TABLE
}


@dataclass
class Host:
    http: httpx.AsyncClient
    keys: dict[str, str]  # user name -> X-API-Key

    async def chatkit(self, user: str, type: str, **params: Any) -> httpx.Response:
        return await self.http.post(
            "/api/chatkit",
            json={"type": type, "params": params},
            headers={"X-API-Key": self.keys[user]},
        )

    async def call(self, user: str, type: str, **params: Any) -> Any:
        response = await self.chatkit(user, type, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def stream(self, user: str, type: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.chatkit(user, type, **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_events(response.text)


@pytest.fixture
async def host(empty_database_url: str, tmp_path: Path) -> AsyncIterator[Host]:
    await asyncio.to_thread(upgrade_all, empty_database_url)
    engine = create_async_engine(empty_database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    keys = {}
    try:
        for org, name, plan in (("Acme", "ada", "pro"), ("Globex", "hank", "free")):
            _, keys[name] = await add_user(sessions, org, name, plan)
    finally:
        await engine.dispose()
    settings = Settings(
        _env_file=None,
        database_url=empty_database_url,
        offline_token_delay_ms=0,
        attachments_dir=str(tmp_path / "files"),
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://example.test", timeout=30) as http,
    ):
        yield Host(http, keys)


async def test_the_hosts_auth_guards_the_endpoint(host: Host) -> None:
    missing = await host.http.post("/api/chatkit", json={"type": "threads.list", "params": {}})
    # The host's HTTPException as FastAPI renders it, not rewritten into our error shape.
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Send your API key in X-API-Key"}
    wrong = await host.http.post(
        "/api/chatkit",
        json={"type": "threads.list", "params": {}},
        headers={"X-API-Key": "key_nobody"},
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Unknown API key"}
    # Our JWT settings play no part: a bearer token is not asked for.
    assert "www-authenticate" not in missing.headers
    # The router is only where the host put it.
    assert (await host.http.post("/chatkit", json={})).status_code == 404


async def test_the_protocol_through_the_mounted_router(host: Host) -> None:
    first = user_input("What plan am I on?")
    # The composer's tool choice: the offline model then calls the host's tool.
    first["inference_options"] = {"tool_choice": {"id": "my_account"}}
    events = await host.stream("ada", "threads.create", input=first)
    assert events[0]["type"] == "thread.created"
    thread_id = events[0]["thread"]["id"]
    # The tool read the host's users table, for the user the host authenticated.
    answer = answer_text(events)
    assert '"name": "ada"' in answer and '"plan": "pro"' in answer

    more = await host.stream(
        "ada", "threads.add_user_message", thread_id=thread_id, input=user_input("thanks")
    )
    assert "thanks" in answer_text(more)

    threads = await host.call("ada", "threads.list", limit=10)
    assert [thread["id"] for thread in threads["data"]] == [thread_id]
    items = await host.call("ada", "items.list", thread_id=thread_id, order="asc")
    users_said = [
        part["text"]
        for item in items["data"]
        if item["type"] == "user_message"
        for part in item["content"]
    ]
    assert users_said == ["What plan am I on?", "thanks"]

    # Our own errors keep our shape inside the host app.
    bad = await host.chatkit("ada", "threads.nonsense")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "unknown_type"


async def test_the_hosts_users_do_not_see_each_others_threads(host: Host) -> None:
    events = await host.stream("ada", "threads.create", input=user_input("Ada's secret"))
    thread_id = events[0]["thread"]["id"]

    assert (await host.call("hank", "threads.list", limit=10))["data"] == []
    foreign = await host.chatkit("hank", "items.list", thread_id=thread_id)
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"
    assert len((await host.call("ada", "threads.list", limit=10))["data"]) == 1


async def test_an_upload_through_the_prefix_has_working_signed_links(host: Host) -> None:
    key = {"X-API-Key": host.keys["ada"]}
    uploads = "/api/chatkit/attachments"
    host.http.headers.update(key)
    try:
        response = await upload(host.http, "dot.png", PNG, "image/png", uploads)
        assert response.status_code == 200, response.text
        attachment = response.json()
        described = await host.http.get(f"{uploads}/{attachment['id']}")
        assert described.status_code == 200, described.text
    finally:
        del host.http.headers["X-API-Key"]
    # Signed under the prefix the host mounted the router at.
    links = [attachment["preview_url"], described.json()["content_url"]]
    assert all(link.startswith(f"http://example.test{uploads}/") for link in links)
    # A link needs no key: an <img> sends none.
    preview = await host.http.get(links[0])
    assert preview.status_code == 200, preview.text
    assert preview.headers["content-type"].startswith("image/")
    content = await host.http.get(links[1])
    assert content.status_code == 200, content.text
    assert content.content == PNG

    # Without the key, an upload is the host's 401; a tampered link is ours.
    refused = await upload(host.http, "dot.png", PNG, "image/png", uploads)
    assert refused.status_code == 401
    tampered = await host.http.get(links[1].replace("sig=", "sig=x"))
    assert tampered.status_code in (401, 403, 404)
    assert "error" in tampered.json()


def _tables_and_versions(url: str) -> tuple[set[str], str | None, str | None]:
    async def read() -> tuple[set[str], str | None, str | None]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                host_version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
                ours = (
                    await conn.execute(text(f"SELECT version_num FROM {OUR_VERSION_TABLE}"))
                ).scalar()
                return names, host_version, ours
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.parametrize("ours_first", [False, True], ids=["host-then-ours", "ours-then-host"])
def test_both_histories_in_one_database_in_either_order(
    empty_database_url: str, ours_first: bool
) -> None:
    steps = [upgrade_host, upgrade_chatkit]
    for step in reversed(steps) if ours_first else steps:
        step(empty_database_url)
    # Again: each is a no-op when the other has run.
    for step in steps:
        step(empty_database_url)

    names, host_version, ours = _tables_and_versions(empty_database_url)
    assert names >= HOST_TABLES | OUR_TABLES
    assert "threads" not in names  # only under the prefix
    assert host_version == "host0001"
    code = code_revisions()
    assert code is not None and ours == code.head


def test_one_alembic_upgrade_of_the_host_migrates_ours_too(empty_database_url: str) -> None:
    upgrade_host(empty_database_url)  # `alembic upgrade head` with the host's env.py

    names, host_version, ours = _tables_and_versions(empty_database_url)
    assert names >= HOST_TABLES | OUR_TABLES
    code = code_revisions()
    assert host_version == "host0001"
    assert code is not None and ours == code.head

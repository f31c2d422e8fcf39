"""A small ChatKit client over httpx, for tests: on an app in process (ASGI), or a
`post` to a served one; and the check of the JSON error envelope."""

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from chatkit_backend.app import create_app
from chatkit_backend.settings import Settings
from tests.support.sse import parse_events, user_input


class ChatClient:
    """Sends ChatKit requests to `/chatkit` and decodes the answers."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, body: Any) -> httpx.Response:
        return await self.http.post("/chatkit", json=body)

    async def call(self, type: str, **params: Any) -> Any:
        """A JSON request that must succeed; returns the decoded body."""
        response = await self.post({"type": type, "params": params})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    async def stream(self, type: str, **params: Any) -> list[dict[str, Any]]:
        """A streaming request that must start; returns its events."""
        response = await self.post({"type": type, "params": params})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_events(response.text)

    async def new_thread(self, text: str = "hello") -> tuple[str, list[dict[str, Any]]]:
        events = await self.stream("threads.create", input=user_input(text))
        assert events[0]["type"] == "thread.created"
        return events[0]["thread"]["id"], events

    async def items(self, thread_id: str, **params: Any) -> list[dict[str, Any]]:
        page = await self.call("items.list", thread_id=thread_id, order="asc", **params)
        items: list[dict[str, Any]] = page["data"]
        return items


@asynccontextmanager
async def local_app(
    database_url: str, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app on `database_url` (for its state) and a client for one fresh local user,
    served over ASGI."""
    options: dict[str, Any] = {
        "database_url": database_url,
        "offline_token_delay_ms": 0,
        "local_user_id": f"user_{secrets.token_hex(6)}",
        **settings,
    }
    app = create_app(Settings(_env_file=None, **options))
    transport = httpx.ASGITransport(app=app)
    # A loopback name: with AUTH_MODE=none the server answers to no other (DNS rebinding).
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http,
    ):
        yield app, http


@asynccontextmanager
async def chat_client(database_url: str, **settings: Any) -> AsyncIterator[ChatClient]:
    """A `ChatClient` on a `local_app`."""
    async with local_app(database_url, **settings) as (_, http):
        yield ChatClient(http)


def post(base_url: str, type: str, **params: Any) -> httpx.Response:
    """A ChatKit request to a served app at `base_url`."""
    return httpx.post(f"{base_url}/chatkit", json={"type": type, "params": params}, timeout=30)


def assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    """`response` is the JSON error envelope with `status` and `code`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"] and body["message"] == body["error"]["message"]
    assert "Traceback" not in response.text

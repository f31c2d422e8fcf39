"""CORS for browser frontends, and the headers every response carries."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from chatkit_backend.app import create_app
from chatkit_backend.settings import Settings
from tests.support.auth import SECRET, jwt_app, new_user, production_overrides
from tests.support.chat_client import assert_envelope
from tests.support.sse import user_input

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, chatkit-frame-instance-id",
}


@asynccontextmanager
async def http_for(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    options: dict[str, Any] = {"database_url": database_url, "offline_token_delay_ms": 0}
    app = create_app(Settings(_env_file=None, **{**options, **settings}))  # type: ignore[call-arg]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        yield http


async def preflight(http: httpx.AsyncClient, origin: str) -> httpx.Response:
    return await http.options("/chatkit", headers={"Origin": origin, **PREFLIGHT})


def allowed_headers(response: httpx.Response) -> set[str]:
    value = response.headers.get("access-control-allow-headers", "")
    return {name.strip().lower() for name in value.split(",")}


async def test_development_allows_local_pages_by_default(sqlite_database_url: str) -> None:
    async with http_for(sqlite_database_url) as http:
        for origin in ("http://localhost:5173", "http://127.0.0.1:3000", "https://localhost"):
            response = await preflight(http, origin)
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
            assert {"authorization", "content-type", "chatkit-frame-instance-id"} <= (
                allowed_headers(response)
            )
            assert "POST" in response.headers["access-control-allow-methods"]
            assert response.headers["x-content-type-options"] == "nosniff"
        for origin in ("https://evil.example", "http://localhost.evil.example"):
            response = await preflight(http, origin)
            assert response.status_code == 400
            assert "access-control-allow-origin" not in response.headers


async def test_configured_origins_replace_the_default(sqlite_database_url: str) -> None:
    origins = "https://app.example.com, https://admin.example.com/"
    async with http_for(sqlite_database_url, cors_origins=origins) as http:
        for origin in ("https://app.example.com", "https://admin.example.com"):
            assert (await preflight(http, origin)).status_code == 200
        assert (await preflight(http, "http://localhost:5173")).status_code == 400
        response = await http.post(
            "/chatkit",
            json={"type": "threads.list", "params": {}},
            headers={"Origin": "https://app.example.com"},
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-credentials" not in response.headers


async def test_production_without_origins_allows_no_browser_origin(
    sqlite_database_url: str,
) -> None:
    async with http_for(
        sqlite_database_url, auth_mode="jwt", jwt_secret=SECRET, **production_overrides()
    ) as http:
        for origin in ("http://localhost:5173", "https://app.example.com"):
            response = await preflight(http, origin)
            assert response.status_code >= 400
            assert "access-control-allow-origin" not in response.headers


async def test_refusals_are_readable_by_the_page(sqlite_database_url: str) -> None:
    origin = {"Origin": "https://app.example.com"}
    async with jwt_app(
        sqlite_database_url, cors_origins="https://app.example.com", rate_limit_per_minute=1
    ) as app:
        anonymous = await app.raw(origin)
        response = await anonymous.post("/chatkit", json={"type": "threads.list", "params": {}})
        assert_envelope(response, 401, "unauthorized")
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "www-authenticate" in response.headers["access-control-expose-headers"].lower()

        client = await app.client(new_user())
        client.http.headers.update(origin)
        await client.call("threads.list")
        response = await client.post({"type": "threads.list", "params": {}})
        assert_envelope(response, 429, "rate_limited")
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "retry-after" in response.headers["access-control-expose-headers"].lower()


async def test_every_response_says_nosniff(sqlite_database_url: str) -> None:
    async with http_for(sqlite_database_url) as http:
        responses = [
            await http.post("/chatkit", json={"type": "threads.list", "params": {}}),
            await http.post(
                "/chatkit", json={"type": "threads.create", "params": {"input": user_input("hi")}}
            ),
            await http.post("/chatkit", content=b"{oops"),
            await http.get("/nowhere"),
            await http.get("/healthz"),
            await http.get("/readyz"),
        ]
        for response in responses:
            assert response.headers["x-content-type-options"] == "nosniff", response.url
            assert response.headers["cache-control"] in ("no-store", "no-cache")
        stream = responses[1]
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"


async def test_an_unexpected_failure_is_a_plain_500(
    sqlite_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with http_for(sqlite_database_url) as http:
        app = http._transport.app  # type: ignore[attr-defined]

        async def explode(*_: Any) -> None:
            raise RuntimeError("secret internals /etc/passwd")

        monkeypatch.setattr(app.state.services.checker, "check", explode)
        response = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
        assert_envelope(response, 500, "internal_error")
        assert "secret internals" not in response.text
        assert response.headers["x-content-type-options"] == "nosniff"

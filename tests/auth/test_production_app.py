"""What an app started with ENV=production serves: no API docs unless asked, HSTS when
browsers reach it over https, and links that never follow the caller's Host header."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from chatkit_backend.api.middleware import HSTS
from chatkit_backend.app import create_app
from tests.support.attachments import PNG, UPLOAD_URL
from tests.support.auth import PUBLIC_URL, jwt_settings, new_user, production_overrides, token_for

DOCS = ("/docs", "/redoc", "/openapi.json")


@asynccontextmanager
async def http_for(
    database_url: str, base_url: str = "http://testserver", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a fresh user's token on an app in AUTH_MODE=jwt."""
    settings = jwt_settings(database_url, **overrides)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token_for(settings, new_user())}"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as http,
    ):
        yield http


async def test_production_serves_no_api_docs_unless_asked(sqlite_database_url: str) -> None:
    async with http_for(sqlite_database_url, **production_overrides()) as http:
        for path in DOCS:
            assert (await http.get(path)).status_code == 404, path
    async with http_for(sqlite_database_url, **production_overrides(api_docs=True)) as http:
        for path in DOCS:
            assert (await http.get(path)).status_code == 200, path
    async with http_for(sqlite_database_url) as http:  # development: on by default
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "chatkit-backend"
    async with http_for(sqlite_database_url, api_docs=False) as http:
        assert (await http.get("/docs")).status_code == 404


async def test_hsts_when_browsers_reach_the_server_over_https(sqlite_database_url: str) -> None:
    # Production behind a proxy that ends TLS: the request looks like http, PUBLIC_URL is https.
    async with http_for(sqlite_database_url, **production_overrides()) as http:
        for response in (
            await http.get("/healthz"),
            await http.post("/chatkit", json={}, headers={"Authorization": "Bearer x"}),
        ):
            assert response.headers["strict-transport-security"] == HSTS
    # Any environment, a request that came over https.
    async with http_for(sqlite_database_url, base_url="https://testserver") as http:
        assert (await http.get("/healthz")).headers["strict-transport-security"] == HSTS
    # Plain http, and nothing says browsers use https: no HSTS.
    plain = production_overrides(public_url="http://chat.internal")
    for overrides in ({}, plain):
        async with http_for(sqlite_database_url, **overrides) as http:
            assert "strict-transport-security" not in (await http.get("/healthz")).headers


@pytest.mark.parametrize("env", ["production", "development"])
async def test_links_follow_public_url_never_the_host_header(
    sqlite_database_url: str, env: str
) -> None:
    evil = {"Host": "evil.example"}
    async with http_for(sqlite_database_url, **production_overrides(env=env)) as http:
        files = {"file": ("cat.png", PNG, "image/png")}
        response = await http.post(UPLOAD_URL, files=files, headers=evil)
        assert response.status_code == 200, response.text
        direct = response.json()
        created = await http.post(
            "/chatkit",
            headers=evil,
            json={
                "type": "attachments.create",
                "params": {"name": "a.txt", "size": 3, "mime_type": "text/plain"},
            },
        )
        assert created.status_code == 200, created.text
        described = await http.get(f"/chatkit/attachments/{direct['id']}", headers=evil)
        assert described.status_code == 200, described.text
    links = [
        direct["preview_url"],
        created.json()["upload_descriptor"]["url"],
        described.json()["attachment"]["preview_url"],
        described.json()["content_url"],
    ]
    for link in links:
        assert link.startswith(PUBLIC_URL + "/"), link
        assert "evil.example" not in link

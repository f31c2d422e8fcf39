"""`ChatKitBackend` in an app of someone else's: the caller from their dependency, their
errors untouched, ours in our shape, links under their prefix and root path."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from chatkit_backend import Caller, ChatKitBackend, Settings
from tests.support.attachments import PNG, upload
from tests.support.sse import parse_events, user_input


def test_importing_the_package_stays_cheap() -> None:
    # The CLI imports the package for every command, --help included.
    code = (
        "import sys, chatkit_backend; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'agents') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    from chatkit_backend import __version__

    assert __version__


@pytest.mark.parametrize(
    "fields",
    [{"user_id": ""}, {"user_id": "u", "tenant_id": "x" * 256}, {"user_id": "u", "role": "root"}],
)
def test_a_bad_caller_is_the_hosts_bug(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="Caller"):
        Caller(**fields)


async def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    """The host's own dependency."""
    if x_user is None:
        raise HTTPException(401, "who are you?", headers={"WWW-Authenticate": "Host"})
    if x_user == "banned":
        raise HTTPException(403, "banned")
    return x_user


async def identify(user: Annotated[str, Depends(current_user)]) -> Caller:
    return Caller(user_id=user, tenant_id="host", role="viewer" if user == "reader" else "member")


@asynccontextmanager
async def hosted(
    url: str, tmp_path: Path, *, root_path: str = "", with_identify: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,
        database_url=url,
        offline_token_delay_ms=0,
        attachments_dir=str(tmp_path / "files"),
    )
    backend = ChatKitBackend(settings, identify=identify if with_identify else None)
    app = FastAPI(lifespan=backend.lifespan)
    app.include_router(backend.router, prefix="/v1/chat")
    app.include_router(backend.health_router, prefix="/v1/chat")
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=f"http://host.test{root_path}") as http,
    ):
        yield http


async def test_the_caller_comes_from_the_hosts_dependency(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    async with hosted(sqlite_database_url, tmp_path) as http:
        missing = await http.get("/v1/chat/chatkit/me")
        assert (missing.status_code, missing.json()) == (401, {"detail": "who are you?"})
        assert missing.headers["www-authenticate"] == "Host"
        banned = await http.get("/v1/chat/chatkit/me", headers={"X-User": "banned"})
        assert (banned.status_code, banned.json()) == (403, {"detail": "banned"})

        me = await http.get("/v1/chat/chatkit/me", headers={"X-User": "u_17"})
        assert me.json() == {"user_id": "u_17", "tenant_id": "host", "role": "member"}

        # The role the host gave is enforced, in our error shape.
        refused = await http.post(
            "/v1/chat/chatkit",
            json={"type": "threads.create", "params": {"input": user_input("hi")}},
            headers={"X-User": "reader"},
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"

        # A bearer token means nothing here: our JWT settings are not in play.
        token = await http.get("/v1/chat/chatkit/me", headers={"Authorization": "Bearer x"})
        assert token.status_code == 401 and token.json() == {"detail": "who are you?"}

        # Health needs no caller.
        assert (await http.get("/v1/chat/healthz")).json() == {"status": "ok"}
        assert (await http.get("/v1/chat/readyz")).json() == {"status": "ready"}


async def test_links_carry_the_root_path_and_the_prefix(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    async with hosted(sqlite_database_url, tmp_path, root_path="/behind/proxy") as http:
        http.headers["X-User"] = "u_links"
        response = await upload(http, "dot.png", PNG, "image/png", "/v1/chat/chatkit/attachments")
        assert response.status_code == 200, response.text
        preview = response.json()["preview_url"]
        assert preview.startswith("http://host.test/behind/proxy/v1/chat/chatkit/attachments/")
        del http.headers["X-User"]
        followed = await http.get(preview)
        assert followed.status_code == 200, followed.text


async def test_without_identify_the_settings_say_who_calls(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    # AUTH_MODE=none: the local user, as standalone; our errors need no app-level handler.
    async with hosted(sqlite_database_url, tmp_path, with_identify=False) as http:
        response = await http.post(
            "/v1/chat/chatkit",
            json={"type": "threads.create", "params": {"input": user_input("hello")}},
        )
        assert response.status_code == 200, response.text
        assert parse_events(response.text)[0]["type"] == "thread.created"
        bad = await http.post(
            "/v1/chat/chatkit", content=b"{", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_request"


async def test_auth_mode_host_is_for_apps_that_identify(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    # Production accepts it: the host app authenticates.
    settings = Settings(
        _env_file=None,
        database_url=sqlite_database_url,
        auth_mode="host",
        env="production",
        public_url="https://app.example.com",
        attachment_signing_key="k" * 16 + "0123456789abcdef",
        metrics_enabled=False,
        attachments_dir=str(tmp_path / "files"),
    )
    with pytest.raises(ValueError, match="AUTH_MODE=host needs ChatKitBackend"):
        ChatKitBackend(settings)
    backend = ChatKitBackend(settings, identify=identify)
    app = FastAPI(lifespan=backend.lifespan)
    app.include_router(backend.router)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://app.example.com") as http,
    ):
        me = await http.get("/chatkit/me", headers={"X-User": "prod"})
        assert me.json()["user_id"] == "prod"
        # Links from PUBLIC_URL, never the Host header.
        http.headers["X-User"] = "prod"
        response = await upload(http, "dot.png", PNG, "image/png", "/chatkit/attachments")
        assert response.json()["preview_url"].startswith("https://app.example.com/chatkit/")


def test_serve_refuses_auth_mode_host(tmp_path: Path) -> None:
    env = {"AUTH_MODE": "host", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    result = subprocess.run(
        [sys.executable, "-m", "chatkit_backend.cli", "serve", "--port", "0"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AUTH_MODE=host is for an app that includes our router" in result.stderr

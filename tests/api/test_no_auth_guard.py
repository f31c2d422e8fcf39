"""What another site's page can make a browser send to a server on this machine: a form or
`text/plain` post (415), a request under a name of its own pointed at 127.0.0.1 (DNS
rebinding: 400 unless ALLOWED_HOSTS lists it), a post from its own origin (403). Over
real HTTP, against `chatkit-backend serve` with the default AUTH_MODE=none."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from chatkit_backend.settings import Settings
from tests.api.test_cors import http_for
from tests.support.attachments import PNG, UPLOAD_URL
from tests.support.auth import jwt_app, new_user
from tests.support.chat_client import assert_envelope
from tests.support.processes import ServerProcess, run_cli, serving
from tests.support.sse import user_input

pytestmark = pytest.mark.slow

CREATE = {"type": "threads.create", "params": {"input": user_input("sent by another site")}}
LIST = {"type": "threads.list", "params": {}}


def server_env(folder: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'guard.db'}",
        "ATTACHMENTS_DIR": str(folder / "files"),
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The defaults of `make run`: AUTH_MODE=none, development, no CORS_ORIGINS."""
    env = server_env(tmp_path_factory.mktemp("guard"))
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    with serving(env) as server:
        yield server


def post(server: ServerProcess, body: Any = LIST, **headers: str) -> httpx.Response:
    """A JSON request to the served app, as curl or a script sends it (no Origin)."""
    return httpx.post(f"{server.base_url}/chatkit", json=body, headers=headers, timeout=30)


def thread_count(server: ServerProcess) -> int:
    response = post(server, {"type": "threads.list", "params": {"limit": 100}})
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


def test_bodies_that_are_not_json_are_415_and_store_nothing(served: ServerProcess) -> None:
    before = thread_count(served)
    url = f"{served.base_url}/chatkit"
    raw = json.dumps(CREATE)
    refused = [
        # What a cross-site <form> or a no-preflight fetch() can send.
        httpx.post(url, content=raw, headers={"Content-Type": "text/plain"}),
        httpx.post(url, content=raw, headers={"Content-Type": "text/plain;charset=UTF-8"}),
        httpx.post(url, data={raw: ""}),  # application/x-www-form-urlencoded
        httpx.post(url, files={"file": ("x.json", raw.encode(), "application/json")}),
        httpx.post(url, content=raw.encode()),  # no Content-Type at all (a Blob body)
    ]
    for response in refused:
        assert_envelope(response, 415, "unsupported_media_type")
        assert "application/json" in response.json()["message"]
    assert thread_count(served) == before

    # JSON, with or without a charset, is the ChatKit client's; it still works.
    created = httpx.post(
        url, content=raw, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert created.status_code == 200, created.text
    assert created.headers["content-type"].startswith("text/event-stream")
    assert thread_count(served) == before + 1
    # The upload route is a path of its own, multipart as before.
    upload = httpx.post(
        f"{served.base_url}{UPLOAD_URL}", files={"file": ("dot.png", PNG, "image/png")}
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["mime_type"] == "image/png"


def test_only_loopback_names_reach_a_server_without_auth(served: ServerProcess) -> None:
    port = served.port
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "10.0.0.7"):
        response = post(served, Host=host)
        assert_envelope(response, 400, "invalid_host")
        assert "ALLOWED_HOSTS" in response.json()["message"]
        assert response.headers["x-content-type-options"] == "nosniff"
        # The page and its scripts too: a rebound page must not even load.
        page = httpx.get(f"{served.base_url}/", headers={"Host": host}, timeout=30)
        assert page.status_code == 400
        assert "<html" not in page.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert post(served, Host=host).status_code == 200, host
    # Probes call by address (a pod's IP); they show nothing private.
    probe = httpx.get(f"{served.base_url}/healthz", headers={"Host": "10.0.0.7:8000"})
    assert probe.status_code == 200


def test_a_post_from_another_origin_is_403_and_stores_nothing(served: ServerProcess) -> None:
    before = thread_count(served)
    for origin in ("https://evil.example", "http://localhost.evil.example", "null"):
        refused = post(served, CREATE, Origin=origin)
        assert_envelope(refused, 403, "forbidden_origin")
        assert "access-control-allow-origin" not in refused.headers
        upload = httpx.post(
            f"{served.base_url}{UPLOAD_URL}",
            files={"file": ("dot.png", PNG, "image/png")},
            headers={"Origin": origin},
        )
        assert_envelope(upload, 403, "forbidden_origin")
    assert thread_count(served) == before

    # The page this server served (same host and port), local pages in development, and
    # clients that send no Origin (curl, scripts) all still work.
    for origin in (served.base_url, f"http://localhost:{served.port}", "http://localhost:5173"):
        assert post(served, Origin=origin).status_code == 200, origin
    same_site = post(served, CREATE, Origin=served.base_url)
    assert same_site.headers["content-type"].startswith("text/event-stream")
    assert thread_count(served) == before + 1
    # Reads a browser makes without asking are not refused for their Origin.
    page = httpx.get(f"{served.base_url}/healthz", headers={"Origin": "https://evil.example"})
    assert page.status_code == 200


def test_allowed_hosts_replaces_the_loopback_names(tmp_path: Path) -> None:
    env = server_env(tmp_path, ALLOWED_HOSTS="chat.example.test, *.corp.example.test")
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    with serving(env) as server:
        port = server.port
        for host in (f"chat.example.test:{port}", "CHAT.example.test", "eu.corp.example.test"):
            assert post(server, Host=host).status_code == 200, host
        for host in ("evil.example", f"127.0.0.1:{port}", "corp.example.test"):
            assert_envelope(post(server, Host=host), 400, "invalid_host")
        # The page it serves under that name may post; other origins may not.
        origin = f"http://chat.example.test:{port}"
        assert post(server, Host=f"chat.example.test:{port}", Origin=origin).status_code == 200
        foreign = post(server, Host=f"chat.example.test:{port}", Origin="https://evil.example")
        assert_envelope(foreign, 403, "forbidden_origin")


async def test_with_jwt_any_host_unless_allowed_hosts_lists_them(sqlite_database_url: str) -> None:
    async with jwt_app(sqlite_database_url) as app:
        client = await app.client(new_user())
        await client.call("threads.list")  # Host: testserver
    async with jwt_app(sqlite_database_url, allowed_hosts="chat.example.com") as app:
        client = await app.client(new_user())
        assert_envelope(await client.post(LIST), 400, "invalid_host")
        client.http.headers["Host"] = "chat.example.com"
        await client.call("threads.list")


async def test_with_cors_origins_only_those_and_the_servers_own_pages_may_post(
    sqlite_database_url: str,
) -> None:
    # As in production: CORS_ORIGINS replaces the local pages allowed in development.
    async with jwt_app(
        sqlite_database_url,
        cors_origins="https://app.example.com",
        public_url="https://chat.example.com",
    ) as app:
        client = await app.client(new_user())
        # Listed; PUBLIC_URL's origin; the page of the host called (Host: testserver).
        for origin in ("https://app.example.com", "https://chat.example.com", "http://testserver"):
            client.http.headers["Origin"] = origin
            await client.call("threads.list")
        for origin in ("http://localhost:5173", "https://evil.example"):
            client.http.headers["Origin"] = origin
            assert_envelope(await client.post(LIST), 403, "forbidden_origin")


async def test_the_same_guard_in_process(sqlite_database_url: str) -> None:
    # The in-process clients of the suite call as http://localhost: a loopback name.
    async with http_for(sqlite_database_url) as http:
        assert (await http.post("/chatkit", json=LIST)).status_code == 200
        response = await http.post("/chatkit", json=LIST, headers={"Host": "evil.example"})
        assert_envelope(response, 400, "invalid_host")


@pytest.mark.parametrize(
    "value", ["chat.example.com:8000", "https://chat.example.com", "chat.example.com/x", " , "]
)
def test_allowed_hosts_entries_are_names(value: str) -> None:
    with pytest.raises(ValidationError, match="ALLOWED_HOSTS"):
        Settings(_env_file=None, allowed_hosts=value)  # type: ignore[call-arg]


def test_allowed_hosts_takes_ipv6_addresses() -> None:
    settings = Settings(_env_file=None, allowed_hosts="[::1], fd00::7, Chat.Example.com")  # type: ignore[call-arg]
    assert settings.allowed_host_list == ["::1", "fd00::7", "chat.example.com"]

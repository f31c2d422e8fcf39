"""GET / and its static files over HTTP: headers, the page's config, what the files load."""

import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from chatkit_backend.app import create_app
from chatkit_backend.settings import Settings
from tests.support.processes import PROJECT_ROOT

WEB = PROJECT_ROOT / "src" / "chatkit_backend" / "web"
CDN = "https://cdn.platform.openai.com"


@asynccontextmanager
async def web_client(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None, database_url=database_url, **settings))  # type: ignore[call-arg]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        yield http


def page_config(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert found, "no config block"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


def csp(response: httpx.Response) -> dict[str, list[str]]:
    directives = response.headers["content-security-policy"].split(";")
    return {name: values for name, *values in (d.split() for d in directives)}


async def test_the_page_has_its_config_and_a_csp_allowing_only_chatkits_cdn(
    sqlite_database_url: str,
) -> None:
    async with web_client(sqlite_database_url) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    config = page_config(response.text)
    assert config["authMode"] == "none"
    assert config["webUi"] == "auto"
    assert config["apiUrl"] == "chatkit"
    assert config["uploadUrl"] == "chatkit/attachments"
    assert config["chatkitScriptUrl"] == f"{CDN}/deployments/chatkit/chatkit.js"
    policy = csp(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'", CDN]
    assert policy["frame-src"] == [CDN]
    assert policy["frame-ancestors"] == ["'none'"]


async def test_builtin_mode_allows_nothing_but_this_server(sqlite_database_url: str) -> None:
    async with web_client(sqlite_database_url, web_ui="builtin") as http:
        response = await http.get("/")
    policy = csp(response)
    assert CDN not in response.headers["content-security-policy"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-src"] == ["'none'"]
    assert page_config(response.text)["webUi"] == "builtin"


async def test_web_ui_off_serves_no_page(sqlite_database_url: str) -> None:
    async with web_client(sqlite_database_url, web_ui="off") as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/web/app.js")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


async def test_the_config_carries_no_secret_and_cannot_break_out(sqlite_database_url: str) -> None:
    secret = "s3cret-" + "k" * 40
    login = "https://login.example.com/?next=</script><script>alert(1)</script>"
    async with web_client(
        sqlite_database_url,
        auth_mode="jwt",
        jwt_secret=secret,
        openai_api_key="sk-test-key-that-must-not-leak",
        login_url=login,
    ) as http:
        response = await http.get("/")
    assert secret not in response.text
    assert "sk-test-key" not in response.text
    assert "<script>alert" not in response.text
    config = page_config(response.text)
    assert config["authMode"] == "jwt"
    assert config["loginUrl"] == login  # intact once decoded


@pytest.mark.parametrize("value", ["javascript:alert(1)", "//evil.example", "data:text/html,x"])
def test_login_url_must_be_a_web_address(value: str) -> None:
    with pytest.raises(ValidationError, match="LOGIN_URL"):
        Settings(_env_file=None, login_url=value)  # type: ignore[call-arg]


async def test_static_files_have_types_and_validators(sqlite_database_url: str) -> None:
    async with web_client(sqlite_database_url) as http:
        script = await http.get("/web/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["x-content-type-options"] == "nosniff"
        assert script.headers["cache-control"] == "no-cache"
        again = await http.get("/web/app.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304
        style = await http.get("/web/style.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        # Only the files that exist; the page template is never served raw.
        for missing in ("/web/nope.js", "/web/index.html", "/web/..%2Fapp.py"):
            assert (await http.get(missing)).status_code == 404


def test_the_builtin_client_fetches_nothing_from_elsewhere() -> None:
    # The only outside address is ChatKit's script, which the page reads from its config.
    for path in WEB.iterdir():
        if path.suffix in (".js", ".css", ".html"):
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", path.read_text()), path.name
            assert "@import" not in path.read_text(), path.name


async def test_the_vendored_libraries_are_served_as_scripts(sqlite_database_url: str) -> None:
    # render.js imports them by these names, as modules: a wrong type and the page breaks.
    async with web_client(sqlite_database_url, web_ui="builtin") as http:
        for name in ("marked.esm.js", "purify.es.mjs"):
            response = await http.get(f"/web/vendor/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == "text/javascript; charset=utf-8"
            assert response.content == (WEB / "vendor" / name).read_bytes()
        for missing in ("/web/vendor/README.md", "/web/vendor/..%2F..%2Fapp.py", "/web/vendor/"):
            assert (await http.get(missing)).status_code == 404, missing
    render = (WEB / "render.js").read_text()
    assert 'from "./vendor/marked.esm.js"' in render
    assert 'from "./vendor/purify.es.mjs"' in render


def test_the_vendored_files_are_the_ones_their_readme_names() -> None:
    # An update that forgets the README (versions, checksums) fails here.
    vendor = WEB / "vendor"
    readme = (vendor / "README.md").read_text()
    listed = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    scripts = sorted(p.name for p in vendor.iterdir() if p.suffix in (".js", ".mjs"))
    assert sorted(listed) == scripts
    for name, digest in listed.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
        # Self-contained: a library that imported anything would load it from elsewhere.
        assert not re.search(r"^\s*import\b|\bimport\(", (vendor / name).read_text(), re.M), name
    for license_file in ("marked.LICENSE.md", "dompurify.LICENSE", "dompurify.LICENSE-MPL"):
        assert (vendor / license_file).is_file(), license_file

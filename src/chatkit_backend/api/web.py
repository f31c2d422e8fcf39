"""`GET /`: a page to chat in the browser, and the static files of its built-in client.

The page tries OpenAI's `<openai-chatkit>` element first (it only loads from OpenAI's
CDN) and falls back to the built-in client, which makes no request beyond this server.
"""

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response

from chatkit_backend import __version__
from chatkit_backend.errors import NotFound
from chatkit_backend.settings import Settings

CHATKIT_SCRIPT_URL = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"
CHATKIT_ORIGIN = "https://cdn.platform.openai.com"
CONFIG_PLACEHOLDER = "{{CONFIG_JSON}}"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> tuple[str, dict[str, Asset]]:
    """The page template and every static file, read once from the installed package:
    the client's own files, and the libraries it uses under `vendor/`."""
    folder = resources.files("chatkit_backend") / "web"
    template = (folder / "index.html").read_text(encoding="utf-8")
    assets: dict[str, Asset] = {}
    for prefix, directory in (("", folder), ("vendor/", folder / "vendor")):
        for entry in directory.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in CONTENT_TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                assets[prefix + entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    return template, assets


def page_config(settings: Settings) -> dict[str, Any]:
    """What the page needs to know. Goes into public HTML, so never a secret."""
    return {
        "authMode": settings.auth_mode,
        "webUi": settings.web_ui,
        "loginUrl": settings.login_url,
        # Relative to the page, so a reverse proxy's path prefix carries over.
        "apiUrl": "chatkit",
        "uploadUrl": "chatkit/attachments",
        "meUrl": "chatkit/me",
        "chatkitScriptUrl": CHATKIT_SCRIPT_URL,
        "domainKey": settings.chatkit_domain_key,
        "version": __version__,
    }


def content_security_policy(settings: Settings) -> str:
    """Only this server, except OpenAI's CDN when the ChatKit element may be loaded."""
    chatkit = settings.web_ui in ("auto", "chatkit")
    # Previews come from this server too (signed links); local ones are blob: URLs.
    images = ["'self'", "blob:", "data:"]
    connect = ["'self'"]
    scripts = ["'self'"]
    styles = ["'self'"]
    if chatkit:
        scripts.append(CHATKIT_ORIGIN)
        connect.append(CHATKIT_ORIGIN)
        # The element styles its frame from script; the built-in client needs none of it.
        styles.append("'unsafe-inline'")
    directives = {
        "default-src": ["'none'"],
        "script-src": scripts,
        "style-src": styles,
        "img-src": images,
        "connect-src": connect,
        "frame-src": [CHATKIT_ORIGIN] if chatkit else ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def render_page(template: str, settings: Settings) -> str:
    config = json.dumps(page_config(settings), separators=(",", ":"))
    # Inside <script type="application/json">: no `<` may close the element early.
    safe = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.replace(CONFIG_PLACEHOLDER, safe)


PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def web_router(settings: Settings) -> APIRouter:
    """The page and its static files, read and rendered once."""
    template, assets = load_assets()
    page = render_page(template, settings).encode()
    page_headers = {**PAGE_HEADERS, "Content-Security-Policy": content_security_policy(settings)}
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    # `:path`, for vendor/ names; only names in `assets` are served, so no `..` gets out.
    @router.get("/web/{name:path}")
    async def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound("Not found")
        # Revalidated on every load, so a new version shows at once; unchanged files are 304s.
        headers = {"ETag": found.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.content_type, headers=headers)

    return router

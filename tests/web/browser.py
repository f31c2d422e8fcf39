"""Headless Chromium (Debian's) through Playwright, for the page at GET /.

Playwright cannot download its own browser on this network, so the tests drive
/usr/bin/chromium (`make browser-deps` installs it under CI). Without it the tests are
skipped locally and fail under CI, so a missing browser cannot hide.

Also what the page's test modules share: the server they drive (`serve_page`, with
`builtin_env` for the built-in client), a tab on its built-in client (`builtin_tab`),
and sending a message and waiting for its answer (`send`, `finished`).
"""

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.needs import unavailable
from tests.support.processes import PROJECT_ROOT, run_cli, serving

try:
    from playwright.async_api import expect
except ImportError:  # the fixtures skip, or fail under CI, through require_browser()
    expect = None

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# Chromium's background services would try the network, which this machine refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
CHATKIT_SCRIPT = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"
VIEWPORT = {"width": 1200, "height": 760}


def require_browser() -> None:
    """Skip without Chromium or Playwright; under CI fail instead."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or make browser-deps)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[dev]')")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A started Playwright with a launched browser."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Outside:
    """Every request the page makes beyond this machine, refused (or answered by a stand-in)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.stand_ins: dict[str, dict[str, Any]] = {}

    async def install(self, context: Any) -> None:
        await context.route("**/*", self._handle)

    async def _handle(self, route: Any) -> None:
        url = route.request.url
        host = urlsplit(url).hostname
        if host in ("127.0.0.1", "localhost") or url.startswith(("data:", "blob:")):
            await route.continue_()
            return
        self.requests.append(url)
        # Stand-ins answer by address without the query (a login URL gets `return_to`).
        answer = self.stand_ins.get(url.split("?")[0])
        if answer is not None:
            await route.fulfill(**answer)
        else:
            await route.abort("internetdisconnected")


@dataclass
class Tab:
    """A browser context of its own (storage, routes) with one page."""

    context: Any
    page: Any
    outside: Outside
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def new_tab(browser: Any, color_scheme: str = "light") -> AsyncIterator[Tab]:
    """A fresh context and page; outside requests recorded and refused; closed after."""
    context = await browser.new_context(viewport=VIEWPORT, color_scheme=color_scheme)
    outside = Outside()
    await outside.install(context)
    tab = Tab(context, await context.new_page(), outside)
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    # The page's own policy must never stop the page's own code.
    tab.page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text and tab.errors.append(message.text)
        ),
    )
    try:
        yield tab
    finally:
        await context.close()
    assert not tab.errors, tab.errors


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path))
    return path


# ---- the server the page's tests drive ----


def builtin_env(folder: Path, **settings: str) -> dict[str, str]:
    """A server of the built-in client (WEB_UI=builtin) on a SQLite database and an
    attachments folder in `folder`, with `settings` (by their variable names) added."""
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'web.db'}",
        "ATTACHMENTS_DIR": str(folder / "files"),
        "WEB_UI": "builtin",
        "RATE_LIMIT_PER_MINUTE": "6000",
        **settings,
    }


@contextmanager
def serve_page(env: Mapping[str, str], *commands: str) -> Iterator[str]:
    """`chatkit-backend serve` with `env` for a browser (which it checks for first),
    after the CLI `commands` (e.g. "migrate", "seed-demo"); its base URL."""
    require_browser()
    for command in commands:
        result = run_cli(command, env=env)
        assert result.returncode == 0, result.stderr
    with serving(env) as server:
        yield server.base_url


# ---- the built-in client in a tab ----


@asynccontextmanager
async def builtin_tab(
    browser: Any, served: str, before_load: Callable[[Tab], Awaitable[None]] | None = None
) -> AsyncIterator[Tab]:
    """A new tab on the built-in client at `served` (after `before_load(tab)`, e.g. to
    add handlers); after it, no request may have gone beyond the server."""
    async with new_tab(browser) as opened:
        if before_load is not None:
            await before_load(opened)
        await opened.page.goto(served)
        await expect(opened.page.locator("#ui-label")).to_have_text("Built-in client")
        yield opened
    assert opened.outside.requests == []  # nothing beyond this server


async def send(page: Any, text: str) -> None:
    await page.fill("#composer-input", text)
    await page.press("#composer-input", "Enter")


async def finished(page: Any, timeout_ms: float = 15_000) -> Any:
    """The newest assistant message, once no answer is streaming."""
    await expect(page.locator("#stop")).to_be_hidden(timeout=timeout_ms)
    await expect(page.locator(".item.streaming")).to_have_count(0)
    return page.locator(".item.assistant").last

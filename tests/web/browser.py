"""Headless Chromium (Debian's) through Playwright, for the page at GET /.

Playwright cannot download its own browser on this network, so the tests drive
/usr/bin/chromium (`make browser-deps` installs it under CI). Without it the tests are
skipped locally and fail under CI, so a missing browser cannot hide.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.needs import unavailable
from tests.support.processes import PROJECT_ROOT

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

"""The page with AUTH_MODE=jwt: ChatKit's wiring (through a stand-in for its script),
the token prompt, and a login redirect that hands the token back."""

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.processes import run_cli, serving
from tests.web.browser import CHATKIT_SCRIPT, Tab, new_tab, require_browser, screenshot

try:
    from playwright.async_api import expect
except ImportError:  # the fixtures skip, or fail under CI, through require_browser()
    expect = None

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LOGIN_URL = "https://login.example.test/authorize"
# Stands in for OpenAI's script: an <openai-chatkit> that records every setOptions call.
STAND_IN = """
window.chatkitCalls = [];
customElements.define("openai-chatkit", class extends HTMLElement {
  setOptions(options) {
    window.chatkitCalls.push(options);
    this.textContent = `Stand-in ChatKit, ${options.theme.colorScheme} theme`;
  }
});
"""
# The last options, as JSON (the fetch function as its type).
LAST_OPTIONS = """() => {
  const options = window.chatkitCalls.at(-1);
  const api = {...options.api, fetch: typeof options.api.fetch};
  return JSON.parse(JSON.stringify({...options, api}));
}"""
FETCH_THROUGH_OPTIONS = """async () => {
  const {api} = window.chatkitCalls.at(-1);
  const response = await api.fetch(api.url, {
    method: "POST",
    headers: {"Content-Type": "application/json", "chatkit-frame-instance-id": "frame-1"},
    body: JSON.stringify({type: "threads.list", params: {limit: 1}}),
  });
  return response.status;
}"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_browser()
    folder: Path = tmp_path_factory.mktemp("web-jwt")
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'web.db'}",
        "ATTACHMENTS_DIR": str(folder / "files"),
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": secrets.token_hex(32),
        "LOGIN_URL": LOGIN_URL,
        "WEB_UI": "auto",
    }


@pytest.fixture(scope="module")
def token(env: dict[str, str]) -> str:
    minted = run_cli("token", "--user", "browser-user", "--tenant", "acme", env=env)
    assert minted.returncode == 0, minted.stderr
    return minted.stdout.strip()


@pytest.fixture(scope="module")
def served(env: dict[str, str]) -> Iterator[str]:
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    with serving(env) as server:
        yield server.base_url


@pytest.fixture
async def tab(browser: Any) -> AsyncIterator[Tab]:
    async with new_tab(browser) as opened:
        yield opened


async def sign_in_with(page: Any, token: str) -> None:
    await expect(page.get_by_role("dialog", name="Sign in")).to_be_visible()
    await page.get_by_label("Access token").fill(token)
    await page.get_by_role("button", name="Use this token").click()


async def test_the_chatkit_element_is_wired_to_this_server(
    tab: Tab, served: str, token: str
) -> None:
    page = tab.page
    tab.outside.stand_ins[CHATKIT_SCRIPT] = {
        "status": 200,
        "content_type": "text/javascript",
        "body": STAND_IN,
    }
    await page.goto(served)
    await sign_in_with(page, token)
    await expect(page.locator("#ui-label")).to_have_text("ChatKit")
    await expect(page.locator("openai-chatkit")).to_have_text("Stand-in ChatKit, light theme")

    options = await page.evaluate(LAST_OPTIONS)
    assert options["api"] == {
        "url": f"{served}/chatkit",
        "domainKey": "local-dev",
        "fetch": "function",
        "uploadStrategy": {"type": "direct", "uploadUrl": f"{served}/chatkit/attachments"},
    }
    assert options["history"]["enabled"] is True
    assert options["composer"]["attachments"]["enabled"] is True
    prompts = {prompt["prompt"] for prompt in options["startScreen"]["prompts"]}
    assert {"Who is employee 7?", "I need a refund for my invoice"} <= prompts  # tool, handoff
    assert options["theme"] == {"colorScheme": "light"}

    # Requests through the element's fetch carry the token and keep their own headers.
    async with page.expect_request(f"{served}/chatkit") as caught:
        assert await page.evaluate(FETCH_THROUGH_OPTIONS) == 200
    sent = (await caught.value).headers
    assert sent["authorization"] == f"Bearer {token}"
    assert sent["chatkit-frame-instance-id"] == "frame-1"

    # setOptions replaces everything, so a theme change sends the whole set again.
    await page.get_by_role("button", name="Dark theme").click()
    await expect(page.locator("openai-chatkit")).to_have_text("Stand-in ChatKit, dark theme")
    assert (await page.evaluate(LAST_OPTIONS))["api"] == options["api"]
    await screenshot(page, "chatkit-stand-in-dark.png")
    assert tab.outside.requests == [CHATKIT_SCRIPT]


async def test_the_builtin_client_asks_for_a_token(tab: Tab, served: str, token: str) -> None:
    page = tab.page
    await page.goto(served)
    await sign_in_with(page, "not-a-token")
    await expect(page.locator("#sign-in-error")).to_contain_text("refused")
    await screenshot(page, "sign-in.png")
    await sign_in_with(page, token)
    # ChatKit's script is refused, as on a closed network: the built-in client takes over.
    await expect(page.locator("#ui-label")).to_have_text("Built-in client")
    await expect(page.locator("#status")).to_contain_text("ChatKit could not load")
    assert tab.outside.requests == [CHATKIT_SCRIPT]
    await page.fill("#composer-input", "Hello with a token")
    await page.press("#composer-input", "Enter")
    await expect(page.locator(".item.assistant")).to_contain_text("Hello with a token")

    # The token lives in memory only: signing out (or reloading) asks again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("dialog", name="Sign in")).to_be_visible()
    assert token not in await page.evaluate("() => JSON.stringify(localStorage) + location.href")


async def test_a_login_redirect_hands_the_token_back(tab: Tab, served: str, token: str) -> None:
    page = tab.page
    back = f"{served}/#access_token={token}"
    tab.outside.stand_ins[LOGIN_URL] = {"status": 302, "headers": {"Location": back}}
    await page.goto(served)
    login = page.get_by_role("link", name="Sign in with your identity provider")
    return_to = quote(f"{served}/", safe="")
    await expect(login).to_have_attribute("href", f"{LOGIN_URL}?return_to={return_to}")
    await login.click()
    await expect(page.locator("#ui-label")).to_have_text("Built-in client")
    assert "access_token" not in page.url  # dropped from the address bar and history
    await page.fill("#composer-input", "Signed in by redirect")
    await page.press("#composer-input", "Enter")
    await expect(page.locator(".item.assistant")).to_contain_text("Signed in by redirect")

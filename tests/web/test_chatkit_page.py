"""The page with AUTH_MODE=jwt: ChatKit's wiring (through a stand-in for its script),
the token prompt, a login redirect that hands the token back (only with the state the
page sent), and who is signed in."""

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.support.processes import run_cli
from tests.web.browser import (
    CHATKIT_SCRIPT,
    Tab,
    expect,
    new_tab,
    require_browser,
    screenshot,
    serve_page,
)

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
    with serve_page(env, "migrate") as base_url:
        yield base_url


@pytest.fixture
async def tab(browser: Any) -> AsyncIterator[Tab]:
    async with new_tab(browser) as opened:
        yield opened


async def shows_caller(page: Any, user: str, tenant: str) -> None:
    """The header names the caller as the server sees it."""
    await expect(page.locator("#who")).to_be_visible()
    await expect(page.locator("#who-user")).to_have_text(user)
    await expect(page.locator("#who-tenant")).to_have_text(tenant)


def bearer_requests(tab: Tab) -> list[str]:
    """Every Authorization header the page sends, from now on."""
    sent: list[str] = []
    tab.page.on("request", lambda request: sent.append(request.headers.get("authorization", "")))
    return sent


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
    await shows_caller(page, "browser-user", "acme")
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


def login_stand_in(token: str) -> Any:
    """LOGIN_URL as an identity provider: back to `return_to` with the token and the
    `state` it was sent (the page keeps the token only with its own state)."""

    async def handle(route: Any) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        back = f"{query['return_to'][0]}#access_token={token}&state={query['state'][0]}"
        await route.fulfill(status=302, headers={"Location": back})

    return handle


async def test_a_login_redirect_hands_the_token_back(tab: Tab, served: str, token: str) -> None:
    page = tab.page
    await tab.context.route(re.compile(re.escape(LOGIN_URL) + r"\?"), login_stand_in(token))
    await page.goto(f"{served}/?ui=builtin")
    login = page.get_by_role("link", name="Sign in with your identity provider")
    return_to = quote(f"{served}/?ui=builtin", safe="")
    pattern = re.escape(f"{LOGIN_URL}?return_to={return_to}&state=") + "[0-9a-f]{32}$"
    await expect(login).to_have_attribute("href", re.compile(pattern))
    await login.click()
    await shows_caller(page, "browser-user", "acme")
    await expect(page.locator("#ui-label")).to_have_text("Built-in client")
    assert "access_token" not in page.url  # dropped from the address bar and history
    await page.fill("#composer-input", "Signed in by redirect")
    await page.press("#composer-input", "Enter")
    await expect(page.locator(".item.assistant")).to_contain_text("Signed in by redirect")
    # The state is spent: the address that came back cannot sign anyone in again.
    stored = await page.evaluate("() => sessionStorage.getItem('chatkit-backend.login-state')")
    assert stored is None


async def test_a_token_without_the_pages_state_is_not_used(
    tab: Tab, served: str, token: str
) -> None:
    # Login CSRF: a link from anywhere, carrying a token of someone else's.
    page = tab.page
    sent = bearer_requests(tab)
    await page.goto(f"{served}/?ui=builtin#access_token={token}")
    await expect(page.get_by_role("dialog", name="Sign in")).to_be_visible()
    await expect(page.locator("#sign-in-error")).to_contain_text("did not ask for")
    assert "access_token" not in page.url
    await expect(page.locator("#who")).to_be_hidden()

    # A state, but not the one this tab stored before it left for LOGIN_URL.
    stored = await page.evaluate("() => sessionStorage.getItem('chatkit-backend.login-state')")
    assert stored  # the sign-in link on the dialog is ready
    await page.goto(f"{served}/?ui=builtin&again=1#access_token={token}&state=guessed")
    await expect(page.get_by_role("dialog", name="Sign in")).to_be_visible()
    await expect(page.locator("#sign-in-error")).to_contain_text("did not ask for")
    assert "access_token" not in page.url
    await expect(page.locator("#who")).to_be_hidden()
    assert f"Bearer {token}" not in sent, "the planted token reached the server"


async def test_the_callers_names_are_shown_as_text(
    tab: Tab, served: str, env: dict[str, str]
) -> None:
    user, tenant = '<img src=x onerror="window.pwned=1">', "<b>acme</b>&amp;"
    minted = run_cli("token", "--user", user, "--tenant", tenant, env=env)
    assert minted.returncode == 0, minted.stderr
    page = tab.page
    await page.goto(f"{served}/?ui=builtin")
    await sign_in_with(page, minted.stdout.strip())
    await shows_caller(page, user, tenant)
    assert await page.locator("#who img, #who b").count() == 0
    assert await page.evaluate("() => window.pwned") is None

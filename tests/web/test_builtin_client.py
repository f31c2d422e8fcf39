"""The built-in client in a real browser, against a real server, with no internet.

The server runs WEB_UI=builtin, so the page runs under its strictest policy and must
make no request beyond the server (the fallback from ChatKit is in test_chatkit_page).
"""

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.attachments import png
from tests.web.browser import (
    Tab,
    builtin_env,
    builtin_tab,
    expect,
    finished,
    new_tab,
    screenshot,
    send,
    serve_page,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OFFLINE_ENDING = "Set LLM_PROVIDER and an API key to get real answers."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = builtin_env(
        tmp_path_factory.mktemp("web"),
        LLM_PROVIDER="offline",
        AGENT="erp-support",
        # Slow enough to watch an answer arrive and to stop one halfway.
        OFFLINE_TOKEN_DELAY_MS="30",
        MAX_MESSAGE_CHARS="3000",
        INPUT_GUARDRAIL_MAX_CHARS="1000",
    )
    with serve_page(env, "migrate", "seed-demo") as base_url:
        yield base_url


@pytest.fixture
async def tab(browser: Any, served: str) -> AsyncIterator[Tab]:
    async with builtin_tab(browser, served) as opened:
        yield opened


def at_least(count: int) -> re.Pattern[str]:
    """Text of at least `count` characters (`expect` takes patterns, not callables)."""
    return re.compile(r"[\s\S]{" + str(count) + ",}")


def starting_with(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix))


def thread_row(page: Any, title: str) -> Any:
    return page.locator("#thread-list li.thread").filter(has_text=title)


async def test_the_header_names_the_local_user(tab: Tab) -> None:
    # AUTH_MODE=none: everyone here is LOCAL_USER_ID of LOCAL_TENANT_ID; the page says so.
    await expect(tab.page.locator("#who-user")).to_have_text("local")
    await expect(tab.page.locator("#who-tenant")).to_have_text("local")
    await expect(tab.page.get_by_role("button", name="Sign out")).to_be_hidden()


async def test_an_answer_streams_in_and_the_thread_can_be_renamed_and_deleted(tab: Tab) -> None:
    page = tab.page
    await send(page, "Hello from the browser test")
    # Partway: some text shown while the answer is still streaming.
    streaming = page.locator(".item.assistant.streaming .part")
    await expect(streaming).not_to_have_text("")
    partial = await streaming.text_content()
    await expect(page.locator("#stop")).to_be_visible()
    answer = await finished(page)
    final = await answer.text_content()
    assert partial and final.startswith(partial) and len(final) > len(partial)
    assert final.endswith(OFFLINE_ENDING)
    await expect(page.locator(".item.user").last).to_have_text("Hello from the browser test")

    # The title arrives after the answer; a reload finds the thread and its messages.
    row = thread_row(page, "Hello from the browser test")
    await expect(row).to_have_count(1)
    await page.reload()
    await expect(row.locator("a")).to_have_attribute("aria-current", "page")
    await expect(page.locator(".item.assistant .part")).to_have_text(final)

    # Rename with the keyboard: focus the row's button, type, Enter.
    await row.get_by_role("button", name="Rename").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Renamed in the browser")
    await page.keyboard.press("Enter")
    renamed = thread_row(page, "Renamed in the browser")
    await expect(renamed).to_have_count(1)
    await expect(page.locator("#thread-title")).to_have_text("Renamed in the browser")
    await page.reload()
    await expect(renamed).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())
    await renamed.get_by_role("button", name="Delete").click()
    await expect(renamed).to_have_count(0)
    await expect(page.locator("#start")).to_be_visible()
    await page.reload()
    await expect(page.locator("#thread-list")).to_be_attached()
    await page.wait_for_load_state("networkidle")
    await expect(renamed).to_have_count(0)


async def test_stop_keeps_the_partial_answer(tab: Tab) -> None:
    page = tab.page
    await send(page, "Tell me a long story about stopping " + "and going on " * 12)
    streaming = page.locator(".item.assistant.streaming .part")
    await expect(streaming).to_have_text(at_least(40))
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator("#send")).to_be_visible()
    stopped = page.locator(".item.assistant.stopped .part")
    await expect(stopped).to_have_count(1)
    shown = await stopped.text_content()
    assert shown and not shown.endswith(OFFLINE_ENDING)

    # The server kept the part that was said; a reload shows it (maybe a word or two more).
    await page.reload()
    kept = await page.locator(".item.assistant .part").last.text_content()
    assert kept and kept.startswith(shown) and not kept.endswith(OFFLINE_ENDING)


async def test_escape_stops_and_a_tool_call_shows_as_a_task(tab: Tab) -> None:
    page = tab.page
    await page.get_by_role("button", name="Look up employee 7").click()
    task = page.locator(".item.workflow .task")
    await expect(task).to_contain_text("Looking up employee 7")
    await expect(task).to_have_class("task status-complete")
    answer = await finished(page)
    await expect(answer).to_contain_text("Grace Hopper")
    # Started before the thread list arrived, and still in it once the list is there.
    await expect(thread_row(page, "Who is employee 7?")).to_have_count(1)
    await screenshot(page, "builtin-light.png")

    await page.get_by_role("button", name="Dark theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await screenshot(page, "builtin-dark.png")

    # Esc stops an answer from anywhere on the page.
    await send(page, "One more question, then stop it")
    await expect(page.locator(".item.assistant.streaming .part")).not_to_have_text("")
    await page.keyboard.press("Escape")
    await expect(page.locator(".item.assistant.stopped")).to_have_count(1)


async def test_feedback_and_retry(tab: Tab) -> None:
    page = tab.page
    await send(page, "Rate and retry me")
    answer = await finished(page)
    first_id = await answer.get_attribute("data-id")
    good = answer.get_by_role("button", name="Good answer")
    await good.click()
    await expect(good).to_have_attribute("aria-pressed", "true")

    await answer.get_by_role("button", name="Retry this answer").click()
    retried = await finished(page)
    await expect(retried).not_to_have_attribute("data-id", first_id or "")
    await expect(page.locator(".item.assistant")).to_have_count(1)
    await page.reload()
    await expect(page.locator(".item")).to_have_count(2)  # the message and one answer


async def test_errors_reach_the_user(tab: Tab) -> None:
    page = tab.page
    # Over MAX_MESSAGE_CHARS: refused with a 400 before anything is stored; text kept.
    too_long = "x " * 2000
    await send(page, too_long)
    await expect(page.locator(".item.error")).to_contain_text("longer than")
    await expect(page.locator("#composer-input")).to_have_value(too_long)

    # Over the agent's guardrail: an `error` event in the stream, the message kept.
    await send(page, "y " * 700)
    await expect(page.locator(".item.error").last).to_contain_text("takes at most")
    await expect(page.locator(".item.user")).to_have_count(1)


async def test_an_image_upload_shows_its_preview(tab: Tab, served: str) -> None:
    async with httpx.AsyncClient() as http:
        probe = await http.post(f"{served}/chatkit/attachments", timeout=10)
    if probe.status_code in (404, 405):
        pytest.skip("this server has no POST /chatkit/attachments yet (issue 5)")
    page = tab.page
    await page.set_input_files(
        "#file-input",
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": png(48, 32, (220, 40, 40))}],
    )
    pending = page.locator("#pending img.preview")
    await expect(pending).to_have_attribute("src", starting_with(served))
    assert await pending.evaluate("img => img.decode().then(() => img.naturalWidth)") == 48

    await send(page, "What colour is this picture?")
    await finished(page)
    shown = page.locator(".item.user img.preview")
    await expect(shown).to_have_attribute("alt", "red.png")
    assert await shown.evaluate("img => img.decode().then(() => img.naturalWidth)") == 48
    await expect(page.locator("#pending li")).to_have_count(0)


def current_row(page: Any) -> Any:
    return page.locator("#thread-list a[aria-current=page]")


async def same_title(page: Any, title: str) -> None:
    """The header and the current thread's (one) row in the list say `title`."""
    await expect(page.locator("#thread-title")).to_have_text(title)
    await expect(current_row(page)).to_have_text(title)
    thread_id = await current_row(page).evaluate("link => link.closest('li').dataset.id")
    rows = page.locator(f'#thread-list li[data-id="{thread_id}"]')
    await expect(rows).to_have_count(1)


async def test_a_stopped_first_answer_leaves_one_fallback_title(tab: Tab) -> None:
    # Stopped before its title was made: the thread has none, and both places say so alike.
    page = tab.page
    await send(page, "Stop me before I get a title " + "please " * 20)
    await expect(page.locator(".item.assistant.streaming .part")).not_to_have_text("")
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator(".item.assistant.stopped")).to_have_count(1)
    await same_title(page, "Untitled chat")
    await page.reload()
    await same_title(page, "Untitled chat")

    # The next answer brings the title; both places take it.
    await send(page, "Now finish")
    await finished(page)
    await same_title(page, "Now finish")


async def test_the_header_and_the_list_agree_when_the_list_crosses_a_new_thread(
    browser: Any, served: str
) -> None:
    # The page asks for the thread list as it opens; here that answer is held back until
    # the first message's thread exists, and reaches the page before the thread's own
    # events do (as on a slow network): the page must still show one row, titled alike.
    held: asyncio.Queue[Any] = asyncio.Queue()

    async def hold(route: Any) -> None:
        body = route.request.post_data_json or {}
        if body.get("type") in ("threads.list", "threads.create"):
            await held.put(route)
        else:
            await route.continue_()

    async with new_tab(browser) as opened:
        page = opened.page
        await opened.context.route(f"{served}/chatkit", hold)
        await page.goto(served)
        listing = await held.get()
        await expect(page.locator("#ui-label")).to_have_text("Built-in client")
        await send(page, "Crossing the list")
        creating = await held.get()
        created = await creating.fetch()  # the whole answer: the thread is made and titled
        await listing.fulfill(response=await listing.fetch())
        await expect(thread_row(page, "Crossing the list")).to_have_count(1)
        await creating.fulfill(response=created)
        await finished(page)
        await same_title(page, "Crossing the list")
        await expect(thread_row(page, "Crossing the list")).to_have_count(1)
    assert opened.outside.requests == []


async def test_the_first_answer_titles_the_header_and_the_list_alike(tab: Tab) -> None:
    page = tab.page
    await expect(page.locator("#thread-title")).to_have_text("New chat")  # no thread yet
    await send(page, "Title me alike")
    await finished(page)
    await same_title(page, "Title me alike")

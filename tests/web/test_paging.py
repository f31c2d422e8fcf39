"""The built-in client pages through threads and through a thread's items on
`has_more`, following `after` (sent only while more follow, as the SDK sends it), in a
real browser against a real server."""

from collections.abc import Iterator

import httpx
import pytest

from tests.web.browser import builtin_env, expect, new_tab, serve_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The page sizes of web/app.js.
THREADS_PAGE = 30
ITEMS_PAGE = 50


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = builtin_env(
        tmp_path_factory.mktemp("paging"), LLM_PROVIDER="offline", OFFLINE_TOKEN_DELAY_MS="0"
    )
    with serve_page(env, "migrate") as base_url:
        yield base_url


async def test_threads_and_items_page_to_the_end(browser: object, served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        # Turns through the plain API: 2 items each, one page of items and one more.
        asked = await http.post("/chatkit/api", json={"message": {"content": "turn 0"}})
        long_thread = asked.json()["thread_id"]
        for n in range(1, ITEMS_PAGE // 2 + 1):
            body = {"message": {"content": f"turn {n}"}, "thread_id": long_thread}
            assert (await http.post("/chatkit/api", json=body)).status_code == 200
        # Empty threads after it: one page of threads and two more.
        empty = []
        for _ in range(THREADS_PAGE + 1):
            created = await http.post("/chatkit", json={"type": "threads.create"})
            empty.append(created.json()["id"])
    newest_first = [*empty[::-1], long_thread]

    async with new_tab(browser) as tab:
        page = tab.page
        await page.goto(served)
        rows = page.locator("#thread-list li")
        more = page.locator("#more-threads")
        await expect(rows).to_have_count(THREADS_PAGE)
        await expect(more).to_be_visible()
        await more.click()
        await expect(rows).to_have_count(THREADS_PAGE + 2)
        await expect(more).to_be_hidden()
        assert await rows.evaluate_all("rows => rows.map(row => row.dataset.id)") == newest_first

        await page.goto(f"{served}/#{long_thread}")
        items = page.locator("#messages .item")
        earlier = page.locator("#earlier")
        await expect(items).to_have_count(ITEMS_PAGE)
        await expect(earlier).to_be_visible()
        await earlier.click()
        await expect(items).to_have_count(ITEMS_PAGE + 2)
        await expect(earlier).to_be_hidden()
        await expect(items.first).to_contain_text("turn 0")

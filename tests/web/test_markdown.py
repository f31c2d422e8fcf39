"""Answers in Markdown, in the built-in client: rendered (lists, tables, code with a copy
button, links that open apart), and nothing in them ever runs.

A real server answers with the fake OpenAI server's scripted text, so the Markdown
arrives the way a model's does: streamed over HTTP, stored, and read back on a reload.
"""

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from chatkit_backend.runtime.answerer import TITLE_INSTRUCTIONS
from tests.support.fake_openai import FakeOpenAI, Recorded, Reply, ToolCall
from tests.web.browser import (
    Tab,
    builtin_env,
    builtin_tab,
    expect,
    finished,
    screenshot,
    send,
    serve_page,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RICH = """Here is **what you asked for**, with a [link to the docs](https://example.com/docs).

- the first point
- the second point

| Name | Role |
|------|------|
| Grace | Admiral |
| Ada | Analyst |

```python
print("hello, world")
```
"""

# Each line tries to run script in the page, set `window.pwned` or open a dialog.
HOSTILE = """Some answers try to run script in your page:

[a javascript link](javascript:window.pwned=1;alert(1))

[a data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)

[a vbscript link](vbscript:msgbox(1))

<img src=x onerror="window.pwned=2;alert(2)">

<script>window.pwned=3;alert(3)</script>

![a picture](/web/nothing.png "t\\" onerror=\\"window.pwned=4")

![another picture](javascript:window.pwned=5)

inline <a href="javascript:window.pwned=6">raw link</a> and <b onmouseover="window.pwned=7">bold</b>

<iframe src="javascript:window.pwned=8"></iframe>

<svg onload="window.pwned=9"><circle r="4"/></svg>

<details open ontoggle="window.pwned=10">details</details>

[an entity-encoded one](&#106;avascript:window.pwned=11)
"""

EMPLOYEE_ANSWER = """**Grace Hopper** is employee 7:

| Field | Value |
|-------|-------|
| Title | Staff Engineer |
| Department | Platform |
| Email | [grace@example.com](mailto:grace@example.com) |

You could ask next:

1. Who is her manager?
2. Who else works in *Platform*?

The key fields of what `get_employee` returned:

```json
{RECORD}
```
"""

ANSWERS = {"Show me some Markdown": RICH, "Try to break the page": HOSTILE}
# How long an answer may stream (its deltas come 20 ms apart, see `answer`).
ANSWER_TIMEOUT_MS = 20_000


def answer(request: Recorded) -> Reply:
    """The fake model: Markdown by the user's message; a tool call for employee 7."""
    if request.body.get("instructions") == TITLE_INSTRUCTIONS:
        return Reply(text=request.messages()[-1][1][:60])
    if request.tool_output is not None:
        record = json.loads(request.tool_output.output)
        fields = {key: record[key] for key in ("employee_id", "name", "manager_id")}
        return Reply(text=EMPLOYEE_ANSWER.replace("{RECORD}", json.dumps(fields)))
    said = request.messages()[-1][1]
    if "employee 7" in said:
        return Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7})])
    # Slow enough that the page renders the answer several times while it streams.
    return Reply(text=ANSWERS.get(said, "No script for that."), delta_delay=0.02)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeOpenAI) -> Iterator[str]:
    env = builtin_env(
        tmp_path_factory.mktemp("web-markdown"),
        LLM_PROVIDER="openai",
        OPENAI_API_KEY="sk-web-markdown-" + "0" * 24,
        OPENAI_BASE_URL=fake_server.base_url,
        LLM_MODEL="fake-model",
        AGENT="erp-support",
    )
    with serve_page(env, "migrate", "seed-demo") as base_url:
        yield base_url


@pytest.fixture
async def tab(browser: Any, served: str, fake: FakeOpenAI) -> AsyncIterator[Tab]:
    fake.respond_with(answer)
    dialogs: list[str] = []

    async def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    async def before_load(opened: Tab) -> None:
        opened.page.on("dialog", dismiss)
        await opened.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served)

    async with builtin_tab(browser, served, before_load) as opened:
        yield opened
        assert dialogs == [], "an answer opened a dialog"


async def shows_rich_markdown(answer: Any) -> None:
    await expect(answer.locator("strong")).to_have_text("what you asked for")
    await expect(answer.locator("ul > li")).to_have_text(["the first point", "the second point"])
    await expect(answer.locator("table th")).to_have_text(["Name", "Role"])
    await expect(answer.locator("table td")).to_have_text(["Grace", "Admiral", "Ada", "Analyst"])
    await expect(answer.locator("pre code")).to_have_text('print("hello, world")\n')
    link = answer.get_by_role("link", name="link to the docs")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")


async def test_a_tool_call_then_a_markdown_answer(tab: Tab) -> None:
    """A task for the tool call, then a table, a list and code: tests/artifacts/
    builtin-markdown.png is the screenshot in the README (docs/screenshot.png)."""
    page = tab.page
    await page.get_by_role("button", name="Look up employee 7").click()
    await expect(page.locator(".item.workflow .task")).to_contain_text("employee 7")
    answer = await finished(page, ANSWER_TIMEOUT_MS)
    await expect(answer.locator("table td").first).to_have_text("Title")
    await expect(answer.locator("ol > li")).to_have_count(2)
    await expect(answer.locator("pre code")).to_contain_text('"Grace Hopper"')
    current = page.locator("#thread-list a[aria-current=page]")
    await expect(current).to_have_text("Who is employee 7?")
    await expect(page.locator("#thread-title")).to_have_text("Who is employee 7?")
    await page.locator("#composer-input").blur()
    await page.set_viewport_size({"width": 1200, "height": 880})  # the whole conversation
    await screenshot(page, "builtin-markdown.png")


async def test_markdown_renders_as_it_streams_and_after_a_reload(tab: Tab) -> None:
    page = tab.page
    await send(page, "Show me some Markdown")
    # Partway: the list is already a list while the rest is still on its way.
    await expect(page.locator(".item.assistant.streaming li").first).to_be_visible()
    await expect(page.locator(".item.assistant.streaming")).to_have_count(1)
    answer = await finished(page, ANSWER_TIMEOUT_MS)
    await shows_rich_markdown(answer)
    # The user's own words stay text: no Markdown there.
    await expect(page.locator(".item.user").last).to_have_text("Show me some Markdown")

    await page.reload()
    await shows_rich_markdown(page.locator(".item.assistant").last)


async def test_the_copy_button_copies_a_code_block(tab: Tab) -> None:
    page = tab.page
    await send(page, "Show me some Markdown")
    answer = await finished(page, ANSWER_TIMEOUT_MS)
    copy = answer.get_by_role("button", name="Copy")
    await expect(copy).to_have_count(1)
    await page.evaluate("() => navigator.clipboard.writeText('')")
    await copy.click()
    # The code alone: no trailing newline, no "Copy" label (the copy is asynchronous).
    read = "() => navigator.clipboard.readText()"
    copied = ""
    for _ in range(50):
        if copied := await page.evaluate(read):
            break
        await page.wait_for_timeout(100)
    assert copied == 'print("hello, world")'


async def test_markdown_with_script_in_it_runs_nothing(tab: Tab) -> None:
    page = tab.page
    await send(page, "Try to break the page")
    answer = await finished(page, ANSWER_TIMEOUT_MS)
    await expect(answer).to_contain_text("Some answers try to run script")
    # Raw HTML shows as the text it is; pictures as links, never fetched.
    await expect(answer).to_contain_text('<img src=x onerror="window.pwned=2;alert(2)">')
    await expect(answer).to_contain_text("<script>window.pwned=3;alert(3)</script>")
    await expect(answer.get_by_role("link", name="a picture")).to_be_visible()
    for tag in ("script", "img", "iframe", "svg", "details", "b", "object", "embed", "style"):
        assert await answer.locator(f".part {tag}").count() == 0, tag
    # No handler attributes, no style, and links only to the web or this server.
    attributes = await answer.locator(".part *").evaluate_all(
        "nodes => nodes.flatMap(node => [...node.attributes].map(a => [a.name, a.value]))"
    )
    assert not [name for name, _ in attributes if name.startswith("on") or name == "style"]
    hrefs = [value for name, value in attributes if name == "href"]
    assert hrefs and all(re.match(r"(https?:|/)", href) for href in hrefs), hrefs
    # Clicking every link that was meant to run script does nothing but stay here.
    for name in ("a javascript link", "a data link", "a vbscript link", "raw link"):
        links = answer.get_by_text(name, exact=True)
        if await links.count():
            await links.first.click()
    await expect(answer.get_by_text("an entity-encoded one")).to_be_visible()
    await answer.get_by_text("an entity-encoded one").click()
    await answer.get_by_text("bold", exact=False).first.hover()
    await page.wait_for_timeout(300)
    assert await page.evaluate("() => window.pwned") is None
    assert len(page.context.pages) == 1  # no tab opened for a script or data address

    await page.reload()
    answer = page.locator(".item.assistant").last
    await expect(answer).to_contain_text("Some answers try to run script")
    assert await answer.locator(".part img, .part script, .part iframe").count() == 0
    assert await page.evaluate("() => window.pwned") is None

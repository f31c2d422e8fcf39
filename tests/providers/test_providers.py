"""Gemini, OpenAI-compatible servers and OpenAI, against the fake OpenAI server, over HTTP.

Chat Completions is what Gemini and local servers speak; the Responses API is OpenAI's
default. The app runs the real `openai` client and Agents SDK models against the fake.
"""

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel

from chatkit_backend.agents.employees import DIRECTORIES
from chatkit_backend.providers.provider import PLACEHOLDER_KEY, build_provider
from chatkit_backend.settings import GEMINI_BASE_URL, Settings
from tests.support.agent_helpers import (
    ask,
    conversation,
    done_items,
    message_input,
    new_tenant,
    no_error,
    seed_directory,
    start,
    tasks,
    text_of,
    usage_rows,
    usage_totals,
)
from tests.support.agent_helpers import the_error as _the_error
from tests.support.chat_client import ChatClient, chat_client
from tests.support.fake_openai import (
    FakeOpenAI,
    Recorded,
    Reply,
    ToolCall,
    handoff,
)
from tests.support.fake_openai import tokens as fake_tokens

OPENAI_KEY = "sk-test-" + "0p3n" * 6
GEMINI_KEY = "AIza-test-" + "g3m" * 8
COMPAT_KEY = "local-" + "c0mp" * 6
KEYS = (OPENAI_KEY, GEMINI_KEY, COMPAT_KEY)
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
Event = dict[str, Any]


def provider_settings(provider: str, fake: FakeOpenAI) -> dict[str, Any]:
    """Settings that point `provider` at the fake."""
    match provider:
        case "openai":  # on Chat Completions; the Responses API is its default
            return {
                "llm_provider": "openai",
                "openai_api_key": OPENAI_KEY,
                "openai_base_url": fake.base_url,
                "llm_api": "chat_completions",
            }
        case "openai-responses":
            return {
                "llm_provider": "openai",
                "openai_api_key": OPENAI_KEY,
                "openai_base_url": fake.base_url,
            }
        case "gemini":
            return {
                "llm_provider": "gemini",
                "gemini_api_key": GEMINI_KEY,
                "llm_base_url": fake.base_url,
            }
        case "openai-compatible":
            return {"llm_provider": "openai-compatible", "llm_base_url": fake.base_url}
    raise AssertionError(provider)


# provider -> (default model, Authorization header) when only the required settings are set
CHAT_PROVIDERS = {
    "openai": ("gpt-4.1-mini", f"Bearer {OPENAI_KEY}"),
    "gemini": ("gemini-2.5-flash", f"Bearer {GEMINI_KEY}"),
    "openai-compatible": ("llama3.2", f"Bearer {PLACEHOLDER_KEY}"),
}


@asynccontextmanager
async def provider_client(
    fake: FakeOpenAI, database_url: str, provider: str = "openai-compatible", **overrides: Any
) -> AsyncIterator[ChatClient]:
    """The app on `provider` pointed at the fake; no titles unless asked (one more request)."""
    options = {**provider_settings(provider, fake), "titles": False, **overrides}
    async with chat_client(database_url, **options) as chat:
        yield chat


def the_error(events: list[Event]) -> Event:
    error = _the_error(events)
    assert error["message"]
    assert not any(key in json.dumps(events) for key in KEYS), "a key leaked into the stream"
    return error


def deltas(events: list[Event]) -> list[str]:
    return [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]


def answer(events: list[Event]) -> str:
    no_error(events)
    [item] = done_items(events, "assistant_message")
    return text_of(item)


def system_prompt(request: Recorded) -> str:
    """The instructions a request carried: Responses `instructions` or Chat's system message."""
    if request.path == RESPONSES:
        return str(request.body.get("instructions") or "")
    return "\n".join(text for role, text in request.messages() if role == "system")


def tool_answer(request: Recorded) -> Reply:
    """Quote the tool's output when there is one; else the fake's default text."""
    if request.tool_output is not None:
        return Reply(text=f"The directory says: {request.tool_output.output}")
    return Reply()


# --- Requests: endpoint, model, key ---------------------------------------------------


@pytest.mark.parametrize("provider", list(CHAT_PROVIDERS))
async def test_chat_completions_answers_get_their_own_items(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    model, authorization = CHAT_PROVIDERS[provider]
    fake.once(Reply(text="First answer here."), Reply(text="Second answer, different."))
    async with provider_client(fake, sqlite_database_url, provider) as chat:
        thread_id, first = await start(chat, "One?")
        assert deltas(first) == fake_tokens("First answer here.")
        assert answer(first) == "First answer here."
        second = await ask(chat, thread_id, "Two?")
        assert answer(second) == "Second answer, different."

        [first_item] = done_items(first, "assistant_message")
        [second_item] = done_items(second, "assistant_message")
        assert first_item["id"] != second_item["id"]
        assert "__fake_id__" not in (first_item["id"], second_item["id"])
        items = await chat.items(thread_id)
        assert conversation(items) == [
            ("user", "One?"),
            ("assistant", "First answer here."),
            ("user", "Two?"),
            ("assistant", "Second answer, different."),
        ]
        assert len({item["id"] for item in items}) == 4

    assert [request.path for request in fake.requests] == [CHAT, CHAT]
    for request in fake.requests:
        assert request.body["model"] == model
        assert request.body["stream"] is True
        assert request.authorization == authorization
    assert fake.requests[1].messages()[-3:] == [
        ("user", "One?"),
        ("assistant", "First answer here."),
        ("user", "Two?"),
    ]


@pytest.mark.parametrize("provider", list(CHAT_PROVIDERS))
async def test_llm_model_replaces_the_default(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    async with provider_client(fake, sqlite_database_url, provider, llm_model="my-model") as chat:
        _, events = await start(chat, "Hi")
        answer(events)
    [request] = fake.requests
    assert request.body["model"] == "my-model"


async def test_openai_compatible_sends_its_key_when_set(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    async with provider_client(fake, sqlite_database_url, llm_api_key=COMPAT_KEY) as chat:
        _, events = await start(chat, "Hi")
        answer(events)
    [request] = fake.requests
    assert request.authorization == f"Bearer {COMPAT_KEY}"


async def test_gemini_talks_to_google_unless_told_otherwise() -> None:
    chat = Settings(_env_file=None, llm_provider="gemini", gemini_api_key=GEMINI_KEY)
    responses = chat.model_copy(update={"llm_api": "responses"})
    for settings, model_class in [
        (chat, OpenAIChatCompletionsModel),
        (responses, OpenAIResponsesModel),
    ]:
        provider = build_provider(settings)
        try:
            assert provider.client is not None
            assert str(provider.client.base_url) == GEMINI_BASE_URL
            assert provider.client.api_key == GEMINI_KEY
            model = provider.get_model(None)
            assert isinstance(model, model_class)
            assert model.model == "gemini-2.5-flash"
        finally:
            await provider.aclose()


@pytest.mark.parametrize(("provider", "path"), [("gemini", CHAT), ("openai-responses", RESPONSES)])
async def test_composer_model_reaches_the_provider(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str, path: str
) -> None:
    tenant = new_tenant("models")
    async with provider_client(
        fake,
        sqlite_database_url,
        provider,
        llm_allowed_models="big-model,small-model",
        local_tenant_id=tenant,
    ) as chat:
        thread_id, events = await start(chat, "Hi", model="big-model")
        answer(events)
        answer(await ask(chat, thread_id, "Again"))
        refused = await chat.post(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": message_input("x", model="huge")},
            }
        )
        assert refused.status_code == 400
    assert [(r.path, r.body["model"]) for r in fake.requests] == [
        (path, "big-model"),
        (path, "gpt-4.1-mini" if provider.startswith("openai") else "gemini-2.5-flash"),
    ]
    rows = await usage_rows(sqlite_database_url, thread_id)
    assert [row["model"] for row in rows] == [r.body["model"] for r in fake.requests]


# --- Tools and handoffs ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai-compatible", "openai-responses"])
async def test_tool_round_trip(fake: FakeOpenAI, database_url: str, provider: str) -> None:
    tenant = new_tenant("acme")
    await seed_directory(database_url, tenant, DIRECTORIES["default"])
    fake.once(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 7})]))
    fake.respond_with(tool_answer)
    async with provider_client(
        fake, database_url, provider, agent="erp-support", local_tenant_id=tenant
    ) as chat:
        thread_id, events = await start(chat, "Who is employee 7?")
        text = answer(events)
        assert "Grace Hopper" in text
        assert tasks(done_items(events, "workflow")) == [("Looking up employee 7…", "complete")]
        items = await chat.items(thread_id)
        assert [item["type"] for item in items] == ["user_message", "workflow", "assistant_message"]
        assert tasks(items) == [("Looking up employee 7…", "complete")]
        assert text_of(items[-1]) == text

    first, second = fake.requests
    assert "get_employee" in first.tool_names
    assert first.tool_output is None
    assert second.tool_output is not None
    output = json.loads(second.tool_output.output)
    assert output == {
        "found": True,
        "employee_id": 7,
        "name": "Grace Hopper",
        "title": "Staff Engineer",
        "department": "Platform",
        "email": "grace@example.com",
        "manager_id": 1,
    }
    assert {r.path for r in fake.requests} == {RESPONSES if "responses" in provider else CHAT}


async def test_tool_scope_ignores_what_the_model_asks(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    """The model may ask for anything; the tool only reads the caller's tenant."""
    acme, globex = new_tenant("acme"), new_tenant("globex")
    await seed_directory(sqlite_database_url, acme, DIRECTORIES["default"])
    await seed_directory(sqlite_database_url, globex, DIRECTORIES["globex"])
    # The model names the other tenant, even in the call's arguments: the tool takes only
    # an employee number and reads the caller's tenant from the verified request.
    call = ToolCall("get_employee", {"employee_id": 12, "tenant_id": acme})
    fake.respond_with(
        lambda request: tool_answer(request) if request.tool_output else Reply(tool_calls=[call])
    )
    async with provider_client(
        fake, sqlite_database_url, agent="erp-support", local_tenant_id=globex
    ) as chat:
        _, events = await start(chat, f"I am from {acme}: who is their employee 12?")
        text = answer(events)
    assert "Alan Turing" not in text
    tool_output = fake.requests[1].tool_output
    assert tool_output is not None
    assert json.loads(tool_output.output) == {"found": False, "employee_id": 12}


@pytest.mark.parametrize("provider", ["gemini", "openai-responses"])
async def test_handoff_round_trip(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    fake.once(Reply(tool_calls=[handoff("Billing")]), Reply(text="Your refund is on its way."))
    async with provider_client(fake, sqlite_database_url, provider, agent="router") as chat:
        thread_id, events = await start(chat, "I want my money back")
        assert answer(events) == "Your refund is on its way."
        assert tasks(done_items(events, "workflow")) == [("Routed to Billing", "complete")]
        items = await chat.items(thread_id)
        assert tasks(items) == [("Routed to Billing", "complete")]
        assert conversation(items) == [
            ("user", "I want my money back"),
            ("assistant", "Your refund is on its way."),
        ]

    first, second = fake.requests
    assert set(first.tool_names) == {
        "transfer_to_billing",
        "transfer_to_tech",
        "transfer_to_general",
    }
    assert "You route conversations" in system_prompt(first)
    assert "You are the Billing specialist" in system_prompt(second)
    assert "You route conversations" not in system_prompt(second)
    assert second.tool_names == []


async def test_tool_choice_starts_at_the_specialist(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    async with provider_client(fake, sqlite_database_url, agent="router") as chat:
        thread_id, events = await start(chat, "Refund please", tool_choice="tech")
        answer(events)
        assert tasks(await chat.items(thread_id)) == [("Routed to Tech", "complete")]
    [request] = fake.requests
    assert "You are the Tech specialist" in system_prompt(request)


async def test_tool_choice_forces_the_tool_on_the_wire(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.once(Reply(tool_calls=[ToolCall("get_employee", {"employee_id": 1})]))
    fake.respond_with(tool_answer)
    tenant = new_tenant("acme")
    await seed_directory(sqlite_database_url, tenant, DIRECTORIES["default"])
    async with provider_client(
        fake, sqlite_database_url, agent="erp-support", local_tenant_id=tenant
    ) as chat:
        _, events = await start(chat, "The boss?", tool_choice="get_employee")
        assert "Ada Lovelace" in answer(events)
    first, second = fake.requests
    assert first.body["tool_choice"] == {"type": "function", "function": {"name": "get_employee"}}
    # Reset after the call, or the model could never answer in words.
    assert second.body.get("tool_choice") in (None, "auto")


# --- Provider failures on Chat Completions ----------------------------------------------


async def check_next_message_works(fake: FakeOpenAI, chat: ChatClient, thread_id: str) -> None:
    fake.reset()
    fake.always(Reply(text="Back to normal."))
    events = await ask(chat, thread_id, "Still there?")
    assert answer(events) == "Back to normal."
    assert conversation(await chat.items(thread_id))[-2:] == [
        ("user", "Still there?"),
        ("assistant", "Back to normal."),
    ]


@pytest.mark.parametrize(
    ("status", "allow_retry", "attempts"), [(401, False, 1), (429, True, 2), (500, True, 2)]
)
async def test_provider_errors(
    fake: FakeOpenAI, sqlite_database_url: str, status: int, allow_retry: bool, attempts: int
) -> None:
    fake.always(Reply(status=status))
    async with provider_client(fake, sqlite_database_url, "gemini") as chat:
        thread_id, events = await start(chat, "Hello?")
        error = the_error(events)
        assert error["allow_retry"] is allow_retry
        assert len(fake.requests) == attempts, "one client retry, none for a refused key"
        assert {r.path for r in fake.requests} == {CHAT}
        assert conversation(await chat.items(thread_id)) == [("user", "Hello?")]
        await check_next_message_works(fake, chat, thread_id)


async def test_cut_stream_keeps_the_partial_answer(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    text = "Paris is the capital and largest city of France."
    fake.once(Reply(text=text, cut_after=3, delta_delay=0.05))
    partial = "".join(fake_tokens(text)[:3])
    async with provider_client(fake, sqlite_database_url) as chat:
        thread_id, events = await start(chat, "Capital of France?")
        assert the_error(events)["allow_retry"] is True
        assert "".join(deltas(events)) == partial
        assert conversation(await chat.items(thread_id)) == [
            ("user", "Capital of France?"),
            ("assistant", partial),
        ]
        await check_next_message_works(fake, chat, thread_id)
    assert fake.requests[-1].messages()[-3:] == [
        ("user", "Capital of France?"),
        ("assistant", partial),
        ("user", "Still there?"),
    ]


async def test_cut_before_any_text_keeps_nothing(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    fake.once(Reply(text="Never said.", cut_after=0))
    async with provider_client(fake, sqlite_database_url) as chat:
        thread_id, events = await start(chat, "Hm?")
        assert the_error(events)["allow_retry"] is True
        assert conversation(await chat.items(thread_id)) == [("user", "Hm?")]
        await check_next_message_works(fake, chat, thread_id)


async def test_stalled_provider_times_out(fake: FakeOpenAI, sqlite_database_url: str) -> None:
    stall = 10.0
    fake.always(Reply(stall=stall))
    async with provider_client(fake, sqlite_database_url, llm_timeout_seconds=0.2) as chat:
        started = time.monotonic()
        thread_id, events = await start(chat, "Anyone there?")
        assert time.monotonic() - started < stall / 2
        error = the_error(events)
        assert error["allow_retry"] is True
        assert "too long" in error["message"]
        assert len(fake.requests) == 2, "the client retries once (max_retries=1)"
        assert conversation(await chat.items(thread_id)) == [("user", "Anyone there?")]
        await check_next_message_works(fake, chat, thread_id)


# --- Usage and titles -------------------------------------------------------------------


async def check_usage_recorded(fake: FakeOpenAI, database_url: str, provider: str) -> None:
    tenant = new_tenant("usage")
    fake.always(Reply(text="A reasonably long answer of several words."))
    async with provider_client(fake, database_url, provider, local_tenant_id=tenant) as chat:
        thread_id, events = await start(chat, "Count my tokens please")
        answer(events)
    rows = await usage_rows(database_url, thread_id)
    assert [(row["tenant_id"], row["requests"]) for row in rows] == [(tenant, 1)]
    input_tokens, output_tokens = await usage_totals(database_url, tenant, thread_id)
    assert input_tokens > 0
    assert output_tokens > 0


async def test_usage_is_recorded_on_responses(fake: FakeOpenAI, database_url: str) -> None:
    await check_usage_recorded(fake, database_url, "openai-responses")


@pytest.mark.parametrize("provider", ["openai-compatible", "gemini"])
async def test_usage_is_recorded_on_chat_completions(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    await check_usage_recorded(fake, sqlite_database_url, provider)
    assert fake.requests[0].body.get("stream_options") == {"include_usage": True}


@pytest.mark.parametrize("provider", ["openai-responses", "gemini", "openai-compatible"])
async def test_default_model_gets_no_gpt5_only_settings(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    async with provider_client(fake, sqlite_database_url, provider) as chat:
        _, events = await start(chat, "Hi")
        answer(events)
    [request] = fake.requests
    assert request.body["model"] in ("gpt-4.1-mini", "gemini-2.5-flash", "llama3.2")
    gpt5_only = {"reasoning", "reasoning_effort", "verbosity"}
    assert gpt5_only.isdisjoint(request.body), request.body
    assert "verbosity" not in (request.body.get("text") or {})


@pytest.mark.parametrize("provider", ["gemini", "openai-responses"])
async def test_title_comes_from_the_model(
    fake: FakeOpenAI, sqlite_database_url: str, provider: str
) -> None:
    def script(request: Recorded) -> Reply:
        if "Write a title" in system_prompt(request):
            return Reply(text='"Planning a Trip to Lisbon"')
        return Reply(text="Lisbon is lovely in spring.")

    fake.respond_with(script)
    async with provider_client(fake, sqlite_database_url, provider, titles=True) as chat:
        thread_id, events = await start(chat, "Help me plan a week in Lisbon")
        assert answer(events) == "Lisbon is lovely in spring."
        updates = [e["thread"]["title"] for e in events if e["type"] == "thread.updated"]
        assert updates == ["Planning a Trip to Lisbon"]
        second = await ask(chat, thread_id, "And Porto?")
        answer(second)
        assert not [e for e in second if e["type"] == "thread.updated"]
        thread = await chat.call("threads.get_by_id", thread_id=thread_id)
        assert thread["title"] == "Planning a Trip to Lisbon"

    # The title is asked for while the first answer streams, so the order varies.
    [title_request] = [r for r in fake.requests if "Write a title" in system_prompt(r)]
    answer_request, _ = [r for r in fake.requests if r is not title_request]
    assert len(fake.requests) == 3
    assert title_request.messages()[-1] == ("user", "Help me plan a week in Lisbon")
    assert title_request.body["model"] == answer_request.body["model"]


async def test_failed_title_falls_back_to_the_message(
    fake: FakeOpenAI, sqlite_database_url: str
) -> None:
    def script(request: Recorded) -> Reply:
        # The title is asked for while the answer streams: which comes first varies.
        return (
            Reply(status=400) if "Write a title" in system_prompt(request) else Reply(text="Fine.")
        )

    fake.respond_with(script)
    async with provider_client(fake, sqlite_database_url, titles=True) as chat:
        thread_id, events = await start(chat, "Short question")
        assert answer(events) == "Fine."
        updates = [e["thread"]["title"] for e in events if e["type"] == "thread.updated"]
        assert updates == ["Short question"]
        thread = await chat.call("threads.get_by_id", thread_id=thread_id)
        assert thread["title"] == "Short question"
    assert len(fake.requests) == 2, "a refused title request is not retried"

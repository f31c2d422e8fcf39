"""The built-in agents on the offline model, over HTTP: tools, handoffs, titles, guardrails."""

import secrets

import httpx
import pytest

from chatkit_backend.agents.employees import DIRECTORIES, load_demo_directory
from chatkit_backend.app import create_app
from chatkit_backend.auth.mint import mint_token
from chatkit_backend.context import Owner
from chatkit_backend.runtime.answerer import derived_title
from chatkit_backend.settings import Settings
from tests.support import agent_helpers
from tests.support.agent_helpers import (
    ask,
    conversation,
    done_items,
    employee_directory,
    message_input,
    new_tenant,
    no_error,
    of_type,
    start,
    tasks,
    text_of,
    the_error,
    usage_rows,
    usage_totals,
)
from tests.support.chat_client import ChatClient, chat_client

GRACE = "Grace Hopper"  # employee 7 of the demo's default directory
HANK = "Hank Scorpio"  # employee 7 of globex
LOOKUP_7 = ("Looking up employee 7…", "complete")


# --- erp-support: the get_employee tool ----------------------------------------------


async def test_employee_lookup_shows_a_task_and_persists(database_url: str) -> None:
    tenant = new_tenant("acme")
    async with employee_directory(database_url) as directory:
        assert await load_demo_directory(directory, tenant) == len(DIRECTORIES["default"])
    async with chat_client(database_url, agent="erp-support", local_tenant_id=tenant) as chat:
        thread_id, events = await chat.new_thread("Who is employee 7?")
        no_error(events)

        [workflow] = done_items(events, "workflow")
        assert tasks([workflow]) == [LOOKUP_7]
        added = [e for e in events if e["type"] == "thread.item.added"]
        assert [e["item"]["type"] for e in added] == ["workflow", "assistant_message"]
        [answer] = done_items(events, "assistant_message")
        assert GRACE in text_of(answer)
        assert "Staff Engineer" in text_of(answer)

        items = await chat.items(thread_id)
        assert [item["type"] for item in items] == ["user_message", "workflow", "assistant_message"]
        assert tasks(items) == [LOOKUP_7]
        assert GRACE in text_of(items[-1])

        # A follow-up in the same thread starts a new workflow, not the old one.
        follow_up = await ask(chat, thread_id, "And employee 12?")
        no_error(follow_up)
        assert "Alan Turing" in text_of(done_items(follow_up, "assistant_message")[0])
        items = await chat.items(thread_id)
        assert tasks(items) == [LOOKUP_7, ("Looking up employee 12…", "complete")]
        assert len(of_type(items, "workflow")) == 2


async def test_employee_lookup_is_scoped_by_tenant(database_url: str) -> None:
    acme, globex, empty = new_tenant("acme"), new_tenant("globex"), new_tenant("empty")
    async with employee_directory(database_url) as directory:
        await directory.replace_all(acme, DIRECTORIES["default"])
        await directory.replace_all(globex, DIRECTORIES["globex"])

    answers = {}
    for tenant in (acme, globex, empty):
        async with chat_client(database_url, agent="erp-support", local_tenant_id=tenant) as chat:
            thread_id, events = await chat.new_thread("Who is employee 7?")
            no_error(events)
            assert tasks(await chat.items(thread_id)) == [LOOKUP_7]
            answers[tenant] = text_of(done_items(events, "assistant_message")[0])

    assert GRACE in answers[acme] and HANK not in answers[acme]
    assert HANK in answers[globex] and GRACE not in answers[globex]
    assert '"found": false' in answers[empty]
    assert GRACE not in answers[empty] and HANK not in answers[empty]


async def test_tool_choice_forces_the_tool(sqlite_database_url: str) -> None:
    tenant = new_tenant("acme")
    async with employee_directory(sqlite_database_url) as directory:
        await load_demo_directory(directory, tenant)
    async with chat_client(
        sqlite_database_url, agent="erp-support", local_tenant_id=tenant
    ) as chat:
        # Without the composer's choice, a bare number is not a lookup...
        thread_id, events = await start(chat, "Tell me about number 12")
        no_error(events)
        assert not done_items(events, "workflow")
        assert "Alan Turing" not in text_of(done_items(events, "assistant_message")[0])

        # ...with it, the tool runs.
        forced = await ask(chat, thread_id, "Tell me about number 12", tool_choice="get_employee")
        no_error(forced)
        assert tasks(done_items(forced, "workflow")) == [("Looking up employee 12…", "complete")]
        assert "Alan Turing" in text_of(done_items(forced, "assistant_message")[0])


# --- router: handoffs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "specialist"),
    [
        ("I want a refund for my invoice", "Billing"),
        ("The app shows an error when I log in", "Tech"),
        ("What are your opening hours?", "General"),
    ],
)
async def test_router_hands_off_by_topic(
    sqlite_database_url: str, message: str, specialist: str
) -> None:
    async with chat_client(sqlite_database_url, agent="router") as chat:
        thread_id, events = await chat.new_thread(message)
        no_error(events)
        assert tasks(done_items(events, "workflow")) == [(f"Routed to {specialist}", "complete")]
        answer = text_of(done_items(events, "assistant_message")[0])
        assert f"answering as {specialist} specialist" in answer

        items = await chat.items(thread_id)
        assert [item["type"] for item in items] == ["user_message", "workflow", "assistant_message"]
        assert tasks(items) == [(f"Routed to {specialist}", "complete")]


async def test_handoff_persists_on_every_database(database_url: str) -> None:
    async with chat_client(database_url, agent="router") as chat:
        thread_id, events = await chat.new_thread("Where is my invoice?")
        no_error(events)
        assert tasks(await chat.items(thread_id)) == [("Routed to Billing", "complete")]
        assert "as Billing specialist" in text_of(done_items(events, "assistant_message")[0])


@pytest.mark.parametrize("choice", ["tech", "Tech", "transfer_to_tech"])
async def test_tool_choice_picks_the_specialist(sqlite_database_url: str, choice: str) -> None:
    async with chat_client(sqlite_database_url, agent="router") as chat:
        thread_id, events = await start(chat, "I want a refund for my invoice", tool_choice=choice)
        no_error(events)
        answer = text_of(done_items(events, "assistant_message")[0])
        assert "answering as Tech specialist" in answer
        assert tasks(await chat.items(thread_id)) == [("Routed to Tech", "complete")]


async def test_unknown_tool_choice_is_ignored(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, agent="router") as chat:
        _, events = await start(chat, "I want a refund", tool_choice="no_such_tool")
        no_error(events)
        assert "as Billing specialist" in text_of(done_items(events, "assistant_message")[0])


# --- Titles --------------------------------------------------------------------------


async def test_title_after_the_first_answer_only(sqlite_database_url: str) -> None:
    first = "Please help me plan the quarterly budget review for the finance team next week"
    async with chat_client(sqlite_database_url) as chat:
        thread_id, events = await chat.new_thread(first)
        no_error(events)
        updates = [e for e in events if e["type"] == "thread.updated"]
        assert [e["thread"]["title"] for e in updates] == [derived_title(first)]
        assert derived_title(first).endswith("…")
        assert len(derived_title(first)) <= 61
        assert first.startswith(derived_title(first).removesuffix("…"))
        # After the answer, not before it.
        answer_at = max(i for i, e in enumerate(events) if e["type"] == "thread.item.done")
        assert events.index(updates[0]) > answer_at

        second = await ask(chat, thread_id, "Something else entirely")
        no_error(second)
        assert not [e for e in second if e["type"] == "thread.updated"]

        thread = await chat.call("threads.get_by_id", thread_id=thread_id)
        assert thread["title"] == derived_title(first)


async def test_no_title_when_titles_are_off(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, titles=False) as chat:
        thread_id, events = await chat.new_thread("Hello there")
        assert not [e for e in events if e["type"] == "thread.updated"]
        assert (await chat.call("threads.get_by_id", thread_id=thread_id)).get("title") is None


# --- The input guardrail -------------------------------------------------------------


async def test_guardrail_refuses_a_long_message(sqlite_database_url: str) -> None:
    long_message = "Please tell me everything about employee 7 and more."
    assert 20 < len(long_message) < 1000
    async with chat_client(
        sqlite_database_url,
        agent="erp-support",
        input_guardrail_max_chars=20,
        max_message_chars=1000,
    ) as chat:
        thread_id, events = await chat.new_thread(long_message)
        error = the_error(events)
        assert error["allow_retry"] is False
        assert f"{len(long_message):,} characters" in error["message"]
        assert "at most 20" in error["message"]
        assert not done_items(events, "assistant_message")
        assert not done_items(events, "workflow"), "the model never ran, nor the tool"

        assert conversation(await chat.items(thread_id)) == [("user", long_message)]

        # A short one in the same thread is answered.
        again = await ask(chat, thread_id, "Hi")
        no_error(again)
        [answer] = done_items(again, "assistant_message")
        assert conversation(await chat.items(thread_id)) == [
            ("user", long_message),
            ("user", "Hi"),
            ("assistant", text_of(answer)),
        ]


async def test_guardrail_applies_to_a_custom_agent(sqlite_database_url: str) -> None:
    async with chat_client(
        sqlite_database_url,
        agent="tests.support.agent_helpers:make_agent",
        input_guardrail_max_chars=5,
    ) as chat:
        _, events = await chat.new_thread("Too long for five")
        assert the_error(events)["allow_retry"] is False
        assert not done_items(events, "assistant_message")


# --- A team's own agent factory ------------------------------------------------------


async def test_custom_factory_gets_the_request_context(sqlite_database_url: str) -> None:
    agent_helpers.SEEN.clear()
    tenant = new_tenant("team")
    async with chat_client(
        sqlite_database_url, agent="tests.support.agent_helpers:make_agent", local_tenant_id=tenant
    ) as chat:
        _, events = await chat.new_thread("Hello")
        no_error(events)
    [context] = agent_helpers.SEEN
    assert context.owner.tenant_id == tenant
    assert context.owner.user_id.startswith("user_")
    assert context.role == "member"
    answer = text_of(done_items(events, "assistant_message")[0])
    user = context.owner.user_id
    assert f"answering as fixture agent for {user} of {tenant} in role member" in answer


async def test_custom_factory_sees_the_token_identity(sqlite_database_url: str) -> None:
    agent_helpers.SEEN.clear()
    secret = secrets.token_hex(32)
    settings = Settings(
        _env_file=None,
        database_url=sqlite_database_url,
        offline_token_delay_ms=0,
        auth_mode="jwt",
        jwt_secret=secret,
        agent="tests.support.agent_helpers:make_agent",
    )
    tenant = new_tenant("jwt")
    token = mint_token(settings, user="alice", tenant=tenant, role="admin")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {token}"},
        ) as http,
    ):
        events = await ChatClient(http).stream("threads.create", input=message_input("Hi"))
        no_error(events)
    [context] = agent_helpers.SEEN
    assert context.owner == Owner(tenant, "alice")
    assert context.role == "admin"
    answer = text_of(done_items(events, "assistant_message")[0])
    assert f"fixture agent for alice of {tenant} in role admin" in answer


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no-such-agent", "AGENT must be one of"),
        ("tests.support.agent_helpers:", "AGENT must be one of"),
        (":make_agent", "AGENT must be one of"),
        ("tests.support.agent_helpers:no_such_function", "does not name a function"),
        ("tests.support.agent_helpers:NOT_A_FUNCTION", "does not name a function"),
    ],
)
def test_bad_agent_fails_app_creation(sqlite_database_url: str, spec: str, says: str) -> None:
    settings = Settings(_env_file=None, database_url=sqlite_database_url, agent=spec)
    with pytest.raises(ValueError, match="AGENT") as raised:
        create_app(settings)
    assert says in str(raised.value)


def test_agent_naming_a_missing_module_fails_with_a_value_error(sqlite_database_url: str) -> None:
    settings = Settings(
        _env_file=None, database_url=sqlite_database_url, agent="tests.no_such_module:make_agent"
    )
    with pytest.raises(ValueError, match=r"AGENT .*tests\.no_such_module"):
        create_app(settings)


# --- Allowed models ------------------------------------------------------------------


async def test_model_not_allowed_is_refused_before_the_stream(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, llm_allowed_models="offline-large") as chat:
        response = await chat.post(
            {"type": "threads.create", "params": {"input": message_input("Hi", model="gpt-9")}}
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        message = response.json()["error"]["message"]
        assert "gpt-9" in message
        assert "offline-large" in message
        threads = await chat.call("threads.list")
        assert threads["data"] == [], "nothing was created"


async def test_allowed_model_answers_and_is_accounted(sqlite_database_url: str) -> None:
    tenant = new_tenant("models")
    async with chat_client(
        sqlite_database_url,
        llm_allowed_models="offline-large, offline-small",
        local_tenant_id=tenant,
    ) as chat:
        thread_id, events = await start(chat, "Hi", model="offline-large")
        no_error(events)
        assert done_items(events, "assistant_message")
        follow_up = await ask(chat, thread_id, "Again", model="offline")  # the default
        no_error(follow_up)
    rows = await usage_rows(sqlite_database_url, thread_id)
    assert [row["model"] for row in rows] == ["offline-large", "offline"]


# --- Usage ---------------------------------------------------------------------------


async def test_usage_is_recorded_per_thread_and_tenant(database_url: str) -> None:
    tenant = new_tenant("usage")
    async with employee_directory(database_url) as directory:
        await load_demo_directory(directory, tenant)
    async with chat_client(database_url, agent="erp-support", local_tenant_id=tenant) as chat:
        thread_id, events = await chat.new_thread("Who is employee 7?")
        no_error(events)
    rows = await usage_rows(database_url, thread_id)
    assert len(rows) == 1, "one row per answer"
    [row] = rows
    assert row["tenant_id"] == tenant
    assert row["user_id"].startswith("user_")
    assert row["model"] == "offline"
    assert row["requests"] == 2, "the tool call and the answer"
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    input_tokens, output_tokens = await usage_totals(database_url, tenant, thread_id)
    assert (input_tokens, output_tokens) == (row["input_tokens"], row["output_tokens"])
    assert await usage_totals(database_url, new_tenant("other"), thread_id) == (0, 0)


async def test_no_usage_when_the_guardrail_trips(sqlite_database_url: str) -> None:
    async with chat_client(sqlite_database_url, input_guardrail_max_chars=3) as chat:
        thread_id, events = await chat.new_thread("Far too long")
        the_error(events)
    assert await usage_rows(sqlite_database_url, thread_id) == []

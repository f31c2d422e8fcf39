"""Helpers for the agent and provider tests.

`make_agent` is a team's own agent factory, loaded with
AGENT="tests.support.agent_helpers:make_agent"; it records every `RequestContext` it is
given in `SEEN`. The rest seeds per-tenant employee
directories, reads the usage table and picks apart ChatKit events and items.
"""

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent
from chatkit.agents import AgentContext
from sqlalchemy import select

from chatkit_backend.context import RequestContext
from chatkit_backend.store.employees import Employee, EmployeeDirectory
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.tables import UNPREFIXED
from chatkit_backend.store.usage import UsageLedger
from tests.support.chat_client import ChatClient

Event = dict[str, Any]

# --- A custom agent factory ----------------------------------------------------------

SEEN: list[RequestContext] = []
NOT_A_FUNCTION = "a factory must be callable"


def make_agent(context: RequestContext) -> Agent[AgentContext[RequestContext]]:
    """An agent whose instructions name the caller; the offline model answers "as" it."""
    SEEN.append(context)
    return Agent[AgentContext[RequestContext]](
        name="Fixture",
        instructions=(
            f"You are the fixture agent for {context.owner.user_id} of {context.owner.tenant_id} "
            f"in role {context.role}. Be brief."
        ),
    )


# --- Database helpers ----------------------------------------------------------------


def new_tenant(prefix: str = "tenant") -> str:
    """A tenant no other test uses, so directories and usage never collide."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def seed_directory(database_url: str, tenant_id: str, people: list[Employee]) -> None:
    engine = create_engine(database_url)
    try:
        await EmployeeDirectory(engine).replace_all(tenant_id, people)
    finally:
        await engine.dispose()


async def usage_totals(database_url: str, tenant_id: str, thread_id: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        return await UsageLedger(engine).thread_totals(tenant_id, thread_id)
    finally:
        await engine.dispose()


async def usage_rows(database_url: str, thread_id: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(UNPREFIXED.usage).where(UNPREFIXED.usage.c.thread_id == thread_id)
            )
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


@asynccontextmanager
async def employee_directory(database_url: str) -> AsyncIterator[EmployeeDirectory]:
    engine = create_engine(database_url)
    try:
        yield EmployeeDirectory(engine)
    finally:
        await engine.dispose()


# --- Events and items ------------------------------------------------------------------


def message_input(
    text: str, *, model: str | None = None, tool_choice: str | None = None
) -> dict[str, Any]:
    """A `UserMessageInput` with the composer's model and tool choice, if any."""
    options: dict[str, Any] = {}
    if model is not None:
        options["model"] = model
    if tool_choice is not None:
        options["tool_choice"] = {"id": tool_choice}
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": options,
    }


async def start(chat: ChatClient, text: str, **options: str) -> tuple[str, list[Event]]:
    """A new thread with `text` and the composer's options; its id and events."""
    events = await chat.stream("threads.create", input=message_input(text, **options))
    assert events[0]["type"] == "thread.created"
    return events[0]["thread"]["id"], events


async def ask(chat: ChatClient, thread_id: str, text: str, **options: str) -> list[Event]:
    """A follow-up message in `thread_id`; its events."""
    return await chat.stream(
        "threads.add_user_message", thread_id=thread_id, input=message_input(text, **options)
    )


def done_items(events: list[Event], kind: str) -> list[Event]:
    return [
        e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == kind
    ]


def text_of(item: Event) -> str:
    return "".join(part["text"] for part in item["content"])


def of_type(items: list[Event], kind: str) -> list[Event]:
    return [item for item in items if item["type"] == kind]


def tasks(items: list[Event]) -> list[tuple[str, str]]:
    """(title, status) of every task of every workflow item, in order."""
    return [
        (task["title"], task["status_indicator"])
        for item in of_type(items, "workflow")
        for task in item["workflow"]["tasks"]
    ]


def conversation(items: list[Event]) -> list[tuple[str, str]]:
    """The user and assistant messages as (role, text); other items skipped."""
    roles = {"user_message": "user", "assistant_message": "assistant"}
    return [(roles[item["type"]], text_of(item)) for item in items if item["type"] in roles]


def no_error(events: list[Event]) -> None:
    errors = [event for event in events if event["type"] == "error"]
    assert not errors, errors


def the_error(events: list[Event]) -> Event:
    """The one `error` event, which must end the stream."""
    errors = [event for event in events if event["type"] == "error"]
    assert len(errors) == 1, events
    assert events[-1] is errors[0], "the stream must end with the error"
    assert errors[0]["code"] == "custom"
    return errors[0]

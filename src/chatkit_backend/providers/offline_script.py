"""What the offline model says or calls, decided from its input like a tiny model would."""

import json
import re
from dataclasses import dataclass
from typing import Any

from agents.items import TResponseInputItem

from chatkit_backend.attachments.model_input import last_user_attachments, last_user_text

EMPLOYEE = re.compile(r"\bemployee\s*(?:#|no\.?|number)?\s*(\d+)", re.IGNORECASE)
ROLE = re.compile(r"^You are (?:the |a |an )?([^.;\n]+)")
# Specialist name -> words that send a conversation there.
ROUTES = {
    "billing": ("bill", "invoice", "refund", "payment", "charge", "price", "subscription"),
    "tech": ("error", "bug", "crash", "install", "login", "password", "api", "broken"),
}
FALLBACK_ROUTE = "general"


@dataclass(frozen=True, slots=True)
class Call:
    """Call a tool (or take a handoff) with JSON arguments."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Say:
    """Answer with text."""

    text: str


def offline_answer(
    user_text: str, role: str | None = None, attachments: list[str] | None = None
) -> str:
    """The reply to a message: says plainly what it is, and echoes what it was given."""
    said = " ".join(user_text.split())
    if len(said) > 200:
        said = said[:200] + "…"
    echo = f' You said: "{said}".' if said else ""
    if attachments:
        count = f"{len(attachments)} attachment{'s' if len(attachments) > 1 else ''}"
        echo += f" I received {count}: {', '.join(attachments)}."
    as_role = f", answering as {role}" if role else ""
    return (
        f"This is the offline model of chatkit-backend{as_role}: no language model is "
        f"configured, so this answer is generated locally.{echo} Set LLM_PROVIDER and an "
        "API key to get real answers."
    )


def plan(
    instructions: str | None,
    input: str | list[TResponseInputItem],
    tools: list[str],
    handoffs: dict[str, str],
    tool_choice: str | None,
) -> Call | Say:
    """Decide the next step. `handoffs` maps handoff tool names to agent names."""
    text = last_user_text(input)
    finished = _finished_call(input)
    if finished is not None and finished[0] in tools:
        name, output = finished
        return Say(f"I looked that up with {name}. The result: {output}")
    if finished is None:
        if handoffs:
            return Call(_route(text, handoffs), "{}")
        if call := _tool_call(text, tools, tool_choice):
            return call
    role = ROLE.match(instructions or "")
    attachments = last_user_attachments(input)
    return Say(offline_answer(text, role.group(1).strip() if role else None, attachments))


def _tool_call(text: str, tools: list[str], tool_choice: str | None) -> Call | None:
    forced = tool_choice if tool_choice in tools else None
    number = EMPLOYEE.search(text) or (re.search(r"(\d+)", text) if forced else None)
    if number and "get_employee" in tools and forced in (None, "get_employee"):
        return Call("get_employee", json.dumps({"employee_id": int(number.group(1))}))
    return Call(forced, "{}") if forced else None


def _finished_call(input: str | list[TResponseInputItem]) -> tuple[str, str] | None:
    """(tool name, output) when the newest input item is a tool's output."""
    if isinstance(input, str) or not input:
        return None
    last: Any = input[-1]
    if not isinstance(last, dict) or last.get("type") != "function_call_output":
        return None
    names = {
        item.get("call_id"): item.get("name")
        for item in input
        if isinstance(item, dict) and item.get("type") == "function_call"
    }
    return str(names.get(last.get("call_id"), "")), str(last.get("output", ""))


def _route(text: str, handoffs: dict[str, str]) -> str:
    by_agent = {agent.casefold(): tool for tool, agent in handoffs.items()}
    words = text.casefold()
    for agent, keywords in ROUTES.items():
        if agent in by_agent and any(keyword in words for keyword in keywords):
            return by_agent[agent]
    return by_agent.get(FALLBACK_ROUTE, next(iter(handoffs)))


def tokens_of(text: str) -> list[str]:
    """Split text into word-sized deltas that join back to exactly `text`."""
    return re.findall(r"\s*\S+", text)

"""Reading ChatKit server-sent events in tests: whole bodies, and lines as they stream."""

import json
from collections.abc import Iterator
from typing import Any


def parse_events(body: str) -> list[dict[str, Any]]:
    """Every `data:` frame of an SSE body, decoded; comments and blank lines skipped."""
    events = []
    for frame in body.split("\n\n"):
        data = [line[len("data: ") :] for line in frame.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def answer_item(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The last finished assistant message in a stream."""
    done = [
        e["item"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    item: dict[str, Any] = done[-1]
    return item


def answer_text(events: list[dict[str, Any]]) -> str:
    """The text of the last finished assistant message in a stream."""
    return "".join(part["text"] for part in answer_item(events)["content"])


def deltas(events: list[dict[str, Any]]) -> str:
    """All streamed text deltas joined."""
    return "".join(
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    )


def user_input(text: str) -> dict[str, Any]:
    """A `UserMessageInput` in the SDK's shape."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def read_events(lines: Iterator[str], until: int) -> list[dict[str, Any]]:
    """Events from an SSE line iterator until `until` text deltas have arrived."""
    events: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("data: "):
            events.extend(parse_events(line + "\n\n"))
        if sum(e["type"] == "thread.item.updated" for e in events) >= until:
            break
    return events


def rest_of(lines: Iterator[str]) -> list[dict[str, Any]]:
    """The events left in an SSE line iterator, to its end."""
    return [
        event
        for line in lines
        if line.startswith("data: ")
        for event in parse_events(line + "\n\n")
    ]

"""Accept the request shapes of the original design notes alongside the SDK's own."""

from typing import Any

# Old name -> SDK name. `messages.send` is resolved per request (see below).
TYPE_ALIASES = {"threads.get": "threads.get_by_id"}


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    """Rewrite seed-shape requests into the SDK's shapes; leave everything else alone."""
    kind = body.get("type")
    params = body.get("params")
    if not isinstance(params, dict):
        return body
    if kind == "messages.send":
        kind = "threads.add_user_message" if params.get("thread_id") else "threads.create"
        params = {key: value for key, value in params.items() if key != "thread_id" or value}
    kind = TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if "input" in params:
        params = {**params, "input": _input(params["input"])}
    return {**body, "type": kind, "params": params}


def _input(value: Any) -> Any:
    if isinstance(value, str):
        value = {"content": [{"type": "input_text", "text": value}]}
    if not isinstance(value, dict):
        return value
    value = {"attachments": [], "inference_options": {}, **value}
    content = value.get("content")
    if isinstance(content, str):
        value["content"] = [{"type": "input_text", "text": content}]
    elif isinstance(content, list):
        value["content"] = [_part(part) for part in content]
    return value


def _part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "text":
        return {**part, "type": "input_text"}
    return part

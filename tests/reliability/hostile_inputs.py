"""Hostile request bodies for `POST /chatkit`, as hypothesis strategies, and the checks
every answer to one must pass.

Bodies come three ways: any JSON at all; a valid request of every type (naming real
ids of the caller and of a victim, and made-up ones) with a few mutations (keys
dropped, values of the wrong type, huge strings, deep nesting, NUL, lone surrogates,
RTL overrides, path and SQL tricks, forged log lines, integers past Python's limit); and
raw bytes (truncated, bit-flipped, not UTF-8).
"""

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.support.sse import parse_events, user_input

# A log line's start that no line of the server's log may have (see check_log).
FORGED_PREFIX = "2099-01-01 00:00:00,000 "
FORGED_LINE = FORGED_PREFIX + "INFO chatkit_backend.access: POST /admin 200 user_id=root"
# An error body quotes at most a bounded prefix of the request (api/errors.py).
MAX_ERROR_BODY = 2048

# Strings that have broken servers: control and format characters, lone surrogates,
# normalisation traps, path and injection tricks, ids of the right shape that exist
# nowhere.
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202etxt.exe",  # right-to-left override
    "\ufeff",
    "\u200b\u200d",
    "\ud800",  # lone surrogates
    "a\udc00b",
    "e\u0301" * 40,
    "😀" * 300,
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2f",
    "thr_../../x",
    "' OR '1'='1' --",
    '"; DROP TABLE threads; --',
    "<script>alert(1)</script>",
    "${jndi:ldap://127.0.0.1/x}",
    "thr_" + "0" * 32,
    "msg_" + "f" * 32,
    "NaN",
    "null",
    "\n\r\n\t",
    # Log forging (a line of its own after the newline), terminal escapes, a Unicode line
    # separator, and an id one character over the limit.
    "thr_x\n" + FORGED_LINE,
    "\x1b[2K\x1b[1G" + FORGED_LINE,
    "a\u2028b\x85c",
    "thr_" + "x" * 125,
]
DEEP = "@@deep@@"  # replaced in the JSON text by nesting too deep to build as objects
HUGE = "@@huge@@"  # replaced by a string of a size drawn separately
BIG_INT = "@@bigint@@"  # replaced by an integer past Python's 4,300-digit limit

nasty_text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Mn"]), max_size=12),
    st.just(DEEP),
    st.just(HUGE),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),  # Python's JSON reads NaN too
    st.just(BIG_INT),
    nasty_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class IdPool:
    """Ids a fuzzed request may name: the caller's, a victim's, and none at all."""

    threads: list[str]
    items: list[str]

    def thread(self) -> st.SearchStrategy[Any]:
        return st.sampled_from(self.threads) | nasty_text

    def item(self) -> st.SearchStrategy[Any]:
        return st.sampled_from(self.items) | nasty_text


def message_input(text: Any) -> st.SearchStrategy[Any]:
    """A `UserMessageInput`, in the SDK's shape or the seed shapes the server accepts."""
    tag = {
        "type": "input_tag",
        "id": "t1",
        "text": "tag",
        "data": {"x": DEEP},
        "interactive": False,
    }
    return st.sampled_from(
        [
            user_input(text),
            {**user_input(text), "quoted_text": text},
            {**user_input(text), "inference_options": {"model": text, "tool_choice": {"id": text}}},
            {"content": [{"type": "input_text", "text": text}, tag], "attachments": []},
            {"content": [{"type": "text", "text": text}]},
            text,
        ]
    )


def valid_requests(ids: IdPool) -> st.SearchStrategy[dict[str, Any]]:
    """A request of every type, shaped right, naming drawn ids."""
    t, i, text = ids.thread(), ids.item(), nasty_text | st.just("hello")
    action = st.fixed_dictionaries({"type": text, "payload": json_values})
    builds = {
        "threads.create": st.fixed_dictionaries({"input": text.flatmap(message_input)}),
        "messages.send": st.fixed_dictionaries({"thread_id": t, "input": text}),
        "threads.add_user_message": st.fixed_dictionaries(
            {"thread_id": t, "input": text.flatmap(message_input)}
        ),
        "threads.add_client_tool_output": st.fixed_dictionaries(
            {"thread_id": t, "result": json_values}
        ),
        "threads.add_structured_input": st.fixed_dictionaries(
            {"thread_id": t, "item_id": i, "input": st.fixed_dictionaries({"answers": json_values})}
        ),
        "threads.retry_after_item": st.fixed_dictionaries({"thread_id": t, "item_id": i}),
        "threads.custom_action": st.fixed_dictionaries(
            {"thread_id": t, "item_id": i, "action": action}
        ),
        "threads.sync_custom_action": st.fixed_dictionaries(
            {"thread_id": t, "item_id": i, "action": action}
        ),
        "threads.get_by_id": st.fixed_dictionaries({"thread_id": t}),
        "threads.get": st.fixed_dictionaries({"thread_id": t}),
        "threads.list": st.fixed_dictionaries(
            {
                "limit": st.integers(-5, 10**6),
                "order": st.sampled_from(["asc", "desc", "up"]),
                "after": t,
            }
        ),
        "items.list": st.fixed_dictionaries(
            {"thread_id": t, "limit": st.integers(-5, 10**6), "order": st.just("asc"), "after": i}
        ),
        "threads.update": st.fixed_dictionaries({"thread_id": t, "title": text}),
        "threads.delete": st.fixed_dictionaries({"thread_id": t}),
        "items.feedback": st.fixed_dictionaries(
            {
                "thread_id": t,
                "item_ids": st.lists(i, max_size=3) | st.integers(0, 40_000).map(_many_ids),
                "kind": st.sampled_from(["positive", "negative", "meh"]),
            }
        ),
        "attachments.create": st.fixed_dictionaries(
            {
                "name": text,
                "size": st.integers(-1, 2**40),
                "mime_type": text | st.just("text/plain"),
            }
        ),
        "attachments.delete": st.fixed_dictionaries({"attachment_id": i}),
        "input.transcribe": st.fixed_dictionaries(
            {"audio_base64": text | st.just("AAAA"), "mime_type": st.just("audio/webm")}
        ),
    }
    return st.one_of(
        *(
            params.map(lambda p, kind=kind: {"type": kind, "params": p, "metadata": {}})
            for kind, params in builds.items()
        )
    )


def _many_ids(n: int) -> list[str]:
    return [f"msg_{k}" for k in range(n)]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid request with up to three mutations at random places."""
    body: Any = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        body = _mutate(draw, body)
    return body


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    """Replace, drop or retype one node somewhere under `value`."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value, key=str)))
        if draw(st.integers(0, 3)) == 0:
            return {k: v for k, v in value.items() if k != key}  # a missing field
        return {**value, key: _mutate(draw, value[key])}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], _mutate(draw, value[index]), *value[index + 1 :]]
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return [value]  # one level deeper than expected
    if kind == 1:
        return {"value": value}
    if kind == 2 and isinstance(value, str):
        return value * draw(st.integers(2, 50))
    return draw(json_values)


@st.composite
def request_bodies(draw: st.DrawFn, ids: IdPool, max_body_bytes: int) -> bytes:
    """The bytes of one hostile body."""
    way = draw(st.sampled_from(["any json", "mutated", "mutated", "valid", "bytes"]))
    if way == "any json":
        value: Any = draw(json_values)
    elif way == "valid":
        value = draw(valid_requests(ids))
    else:
        value = draw(mutated(valid_requests(ids)))
    text = json.dumps(value, allow_nan=True)
    depth = draw(st.sampled_from([10, 500, 990, 1000, 10_000]))
    text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    size = draw(st.sampled_from([1000, 20_001, max_body_bytes // 2, max_body_bytes + 10]))
    text = text.replace(json.dumps(HUGE), json.dumps("x" * size))
    text = text.replace(json.dumps(BIG_INT), "1" * 5000)
    raw = text.encode("utf-8", "surrogatepass")
    if way == "bytes":
        raw = draw(_damaged(raw))
    return raw


@st.composite
def _damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    """Truncated, flipped, spliced or not UTF-8."""
    cut = draw(st.integers(0, len(raw)))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "binary"]))
    if how == "truncate":
        return raw[:cut]
    if how == "flip" and raw:
        index = min(cut, len(raw) - 1)
        return raw[:index] + bytes([raw[index] ^ draw(st.integers(1, 255))]) + raw[index + 1 :]
    if how == "splice":
        return raw[:cut] + draw(st.binary(max_size=32)) + raw[cut:]
    return draw(st.binary(max_size=256))


CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]


def check_answer(status: int, content_type: str, body: bytes, secrets: list[str]) -> None:
    """No 5xx (but 501); a JSON error envelope for every refusal; streams that end properly;
    nothing of the victim's in the answer."""
    text = body.decode()
    # 501 is the one deliberate 5xx: a request type this server does not implement.
    deliberate = status == 501 and '"not_implemented"' in text
    assert status < 500 or deliberate, (status, body[:500])
    for secret in secrets:
        assert secret not in text, "another user's data leaked"
    if content_type.startswith("text/event-stream"):
        assert status == 200
        assert text.endswith("\n\n"), "a stream must end on a complete frame"
        events = parse_events(text)
        assert events and all(isinstance(event.get("type"), str) for event in events)
        answered = any(
            e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
            for e in events
        )
        assert answered or events[-1]["type"] == "error", "a stream ended with no answer"
        return
    assert content_type.startswith("application/json"), content_type
    data = json.loads(text)
    if status >= 400:
        error = data["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and data["message"] == error["message"]
        assert len(body) <= MAX_ERROR_BODY, f"an error body of {len(body)} bytes"


def check_log(log: str) -> None:
    """No line of a server's log was forged by what a client sent."""
    forged = [line for line in log.splitlines() if line.startswith(FORGED_PREFIX)]
    assert not forged, forged[:3]

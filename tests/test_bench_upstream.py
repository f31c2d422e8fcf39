"""The benchmark's fast upstream (bench/upstream.py) streams what the tests' fake does
(tests/support/openai_wire.py): the same events, in the same shapes, in the same order."""

import json
from typing import Any

from bench.upstream import Answer, answer_text, answer_words
from tests.support.openai_wire import responses_frames, tokens


def _dechunk(raw: bytes) -> bytes:
    body, rest = b"", raw
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return body
        body, rest = body + rest[:size], rest[size + 2 :]


def _same_ids(value: Any, names: dict[str, str]) -> Any:
    """`value` with every response and item id named by its order of appearance, and
    the clock and the token counts left out."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if key in ("created_at", "usage"):
                continue
            if key in ("id", "item_id") and isinstance(item, str):
                item = names.setdefault(item, f"id{len(names)}")
            found[key] = _same_ids(item, names)
        return found
    if isinstance(value, list):
        return [_same_ids(item, names) for item in value]
    return value


def test_the_fast_upstream_streams_the_wire_modules_events() -> None:
    words = answer_words(12)
    assert tokens(answer_text(12)) == words  # the fake would split the text the same way
    answer = Answer(words, "fake-model", input_tokens=30)
    raw = answer.head() + b"".join(answer.delta(i) for i in range(len(words))) + answer.tail()
    streamed = []
    for frame in _dechunk(raw).decode().split("\n\n"):
        if frame:
            event, data = frame.split("\n")
            streamed.append((event.removeprefix("event: "), json.loads(data[len("data: ") :])))

    expected = responses_frames(answer_text(12), (), {"model": "fake-model", "input": "hi"})
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    assert [(event, _same_ids(data, ours)) for event, data in streamed] == [
        (event, _same_ids(data, theirs)) for event, data in expected
    ]
    completed = streamed[-1][1]["response"]
    assert completed["usage"]["output_tokens"] == len(words)
    assert _same_ids(json.loads(answer.json()), {}) == _same_ids(completed, {})

"""A fake OpenAI upstream: the Responses API, streamed, as cheaply as Python allows.

    python -m bench.upstream --port 9000

Every server under test asks it for its answers, so they all do the same model work:
`POST /v1/responses` with `"stream": true` answers `tokens` text deltas, one every
`interval` seconds (0: all at once); without `stream` it answers the finished response
as JSON. `POST /_config` with `{"tokens": N, "interval": S}` changes both for the next
requests. The wire format is the tests' fake's (tests/support/openai_wire.py: the
response objects, message items and events come from there, and the `openai` client
parses them); the deltas are filled into a template made once per answer, not built
as objects, so the upstream costs little CPU next to the servers it feeds.

A raw asyncio HTTP/1.1 server: keep-alive, `Content-Length` bodies in, chunked out.
"""

import argparse
import asyncio
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tests.support.openai_wire import (
    Json,
    message_closing,
    message_item,
    message_opening,
    response_object,
    responses_usage,
    text_delta,
)

_ids = itertools.count()
_PREFIX = secrets.token_hex(4)


class Script:
    """What every answer says: `tokens` words, `interval` seconds apart."""

    def __init__(self, tokens: int = 200, interval: float = 0.0) -> None:
        self.tokens = tokens
        self.interval = interval

    def words(self) -> list[str]:
        return answer_words(self.tokens)


def answer_words(tokens: int) -> list[str]:
    """The deltas of an answer of `tokens` tokens; joined they are its text."""
    return ["w0", *(f" w{i}" for i in range(1, tokens))]


def answer_text(tokens: int) -> str:
    return "".join(answer_words(tokens))


def _chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def _frames(events: list[tuple[str, Json]], first_sequence_number: int) -> bytes:
    """The events as chunk-encoded SSE frames, numbered from `first_sequence_number`."""
    frames = []
    for n, (event, data) in enumerate(events):
        numbered = {"type": event, "sequence_number": first_sequence_number + n, **data}
        body = f"event: {event}\ndata: {json.dumps(numbered, separators=(',', ':'))}\n\n"
        frames.append(_chunk(body.encode()))
    return b"".join(frames)


def _delta_template(item_id: str) -> bytes:
    """`text_delta`'s frame for `item_id` with %d for its sequence number and %s for its
    word (the words are plain ASCII, so they need no JSON escaping)."""
    event, data = text_delta(0, item_id, "WORD")
    numbered = {"type": event, "sequence_number": 0, **data}
    frame = json.dumps(numbered, separators=(",", ":"))
    frame = frame.replace('"sequence_number":0', '"sequence_number":%d', 1)
    frame = frame.replace('"delta":"WORD"', '"delta":"%s"', 1)
    return f"event: {event}\ndata: {frame}\n\n".encode()


class Answer:
    """The frames of one streamed answer (chunk-encoded), plus its JSON form."""

    def __init__(self, words: list[str], model: str, input_tokens: int) -> None:
        n = next(_ids)
        self.response_id = f"resp_{_PREFIX}{n:012x}"
        self.words = words
        self.model = model
        self.item = message_item(f"msg_{_PREFIX}{n:012x}", "".join(words))
        self.usage = responses_usage(input_tokens, len(words))
        self._delta = _delta_template(self.item["id"])

    def head(self) -> bytes:
        created = response_object(self.response_id, self.model, [], None)
        events = [("response.created", {"response": created}), *message_opening(0, self.item)]
        return _frames(events, 0)

    def delta(self, index: int) -> bytes:
        return _chunk(self._delta % (index + 3, self.words[index].encode()))

    def tail(self) -> bytes:
        completed = response_object(self.response_id, self.model, [self.item], self.usage)
        events = [*message_closing(0, self.item), ("response.completed", {"response": completed})]
        return _frames(events, len(self.words) + 3) + b"0\r\n\r\n"

    def json(self) -> bytes:
        completed = response_object(self.response_id, self.model, [self.item], self.usage)
        return json.dumps(completed).encode()


class Upstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                length = 0
                for line in lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                await self.answer(method, path, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def answer(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        if method == "POST" and path == "/_config":
            config = json.loads(body)
            self.script = Script(int(config["tokens"]), float(config["interval"]))
            _send_json(writer, 200, b'{"ok":true}')
            return
        if method == "GET" and path == "/_stats":
            _send_json(writer, 200, json.dumps({"requests": self.requests}).encode())
            return
        if method != "POST" or not path.endswith("/responses"):
            _send_json(writer, 404, b'{"error":{"message":"Not found","type":"not_found"}}')
            return
        self.requests += 1
        # Only what the answer needs; the whole request is not worth parsing.
        model = "fake"
        marker = body.find(b'"model":')
        if marker >= 0:
            start = body.find(b'"', marker + 8) + 1
            model = body[start : body.find(b'"', start)].decode()
        script = self.script
        answer = Answer(script.words(), model, max(1, len(body) // 4))
        streaming = b'"stream":true' in body or b'"stream": true' in body
        if not streaming:
            _send_json(writer, 200, answer.json())
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + answer.head()
        )
        if script.interval <= 0:
            writer.write(b"".join(answer.delta(i) for i in range(len(answer.words))))
        else:
            started = time.monotonic()
            for i in range(len(answer.words)):
                # Keep to the schedule rather than drifting by each write's cost.
                delay = started + (i + 1) * script.interval - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
                writer.write(answer.delta(i))
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
        writer.write(answer.tail())
        await writer.drain()


def _send_json(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    writer.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (status, reason.encode(), len(body), body)
    )


async def serve(port: int, script: Script) -> None:
    upstream = Upstream(script)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=4096)
    print(f"upstream listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")))
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.0)
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    run(serve(args.port, Script(args.tokens, args.interval)))


if __name__ == "__main__":
    main()

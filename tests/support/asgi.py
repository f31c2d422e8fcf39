"""Driving an ASGI response (a stream) in process, as a server would."""

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message

Sent = list[tuple[float, Message]]


async def drive(response: ASGIApp, disconnect_after: float | None = None) -> Sent:
    """Run `response` for one HTTP request whose client leaves after `disconnect_after`
    seconds (None: never); every message it sends, with the seconds since the start."""
    sent: Sent = []
    started = time.monotonic()

    async def receive() -> Message:
        if disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append((time.monotonic() - started, message))

    scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.4"}}
    await response(scope, receive, send)
    return sent


def chatkit_post_scope() -> dict[str, Any]:
    """The ASGI scope of a JSON `POST /chatkit`, as a server would hand it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/chatkit",
        "raw_path": b"/chatkit",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }

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

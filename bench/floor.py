"""The floor: a bare SSE endpoint that writes as many frames as a ChatKit turn, with no
protocol work at all (no parsing, no store, no model). What uvicorn and HTTP cost.

    FLOOR_FRAMES=207 FLOOR_INTERVAL=0.01 FLOOR_DELTAS=200 uvicorn bench.floor:app

A streamed answer is `FLOOR_FRAMES` frames: the deltas (`FLOOR_DELTAS` of them,
`FLOOR_INTERVAL` seconds apart, like the fake upstream's tokens) and the rest around
them. Frames are the size of ChatKit's text-delta frames. `POST /_config` with
`{"frames": F, "deltas": D, "interval": S}` changes the three for the next requests,
so one process serves answers of several lengths.
"""

import asyncio
import json
import os
import time
from typing import Any

SHAPE = {
    "frames": int(os.environ.get("FLOOR_FRAMES", "207")),
    "deltas": int(os.environ.get("FLOOR_DELTAS", "200")),
    "interval": float(os.environ.get("FLOOR_INTERVAL", "0")),
}

_DELTA = (
    b'data: {"type":"thread.item.updated","item_id":"msg_00000000000000000000000000000000",'
    b'"update":{"type":"assistant_message.content_part.text_delta","content_index":0,'
    b'"delta":" w%d"}}\n\n'
)
_OTHER = b'data: {"type":"stream_options","stream_options":{"allow_cancel":true}}\n\n'
_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/_config":
        config = json.loads(body)
        SHAPE.update(
            frames=int(config["frames"]),
            deltas=int(config["deltas"]),
            interval=float(config["interval"]),
        )
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
        return
    frames, deltas, interval = int(SHAPE["frames"]), int(SHAPE["deltas"]), SHAPE["interval"]
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    before = frames - deltas - 1
    for _ in range(before):
        await send({"type": "http.response.body", "body": _OTHER, "more_body": True})
    started = time.monotonic()
    for i in range(deltas):
        if interval > 0:
            await asyncio.sleep(max(0.0, started + (i + 1) * interval - time.monotonic()))
        await send({"type": "http.response.body", "body": _DELTA % i, "more_body": True})
    await send({"type": "http.response.body", "body": _OTHER, "more_body": False})

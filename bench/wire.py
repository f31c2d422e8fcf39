"""A small HTTP/1.1 client on asyncio streams, light enough to drive a server from a
2-core machine without stealing the CPU it measures (httpx costs several times more
per SSE frame). Keep-alive; `Content-Length` or chunked answers; nothing else."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


class ConnectionLost(Exception):
    """The server closed the connection before answering."""


@dataclass
class Head:
    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return self.headers.get("transfer-encoding", "").lower() == "chunked"


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 22
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _send(self, path: str, body: bytes, headers: bytes = b"") -> Head:
        """Send a POST (`headers`: more header lines, each ending in CRLF); return the
        answer's head. Reconnects once if the idle connection was closed by the server
        before it read the request."""
        request = (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"%scontent-length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, headers, len(body), body)
        )
        for attempt in (0, 1):
            if self.reader is None or self.reader.at_eof():
                self.close()
                await self.open()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(request)
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self.close()
                partial = getattr(exc, "partial", b"")
                if attempt == 0 and not partial:
                    continue
                raise ConnectionLost(str(exc) or type(exc).__name__) from None
            return _head(raw)
        raise ConnectionLost("unreachable")

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        """A whole answer: status and body."""
        head = await self._send(path, body, headers)
        chunks = [chunk async for chunk in self._body(head)]
        return head.status, b"".join(chunks)

    async def post_json(self, path: str, data: Any, headers: bytes = b"") -> tuple[int, Any]:
        status, body = await self.post(path, json.dumps(data).encode(), headers)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    async def stream(
        self, path: str, body: bytes, headers: bytes = b""
    ) -> tuple[Head, AsyncIterator[bytes]]:
        """The head at once, then the body chunk by chunk (uvicorn sends one per frame)."""
        head = await self._send(path, body, headers)
        return head, self._body(head)

    async def _body(self, head: Head) -> AsyncIterator[bytes]:
        reader = self.reader
        assert reader is not None
        try:
            if head.chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        return
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif "content-length" in head.headers:
                yield await reader.readexactly(int(head.headers["content-length"]))
            else:
                yield await reader.read()
                self.close()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise ConnectionLost(str(exc) or type(exc).__name__) from None
        if head.headers.get("connection", "").lower() == "close":
            self.close()


def _head(raw: bytes) -> Head:
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Head(int(status_line.split(" ", 2)[1]), headers)


def frames(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """Add `chunk` to `buffer`; return the complete SSE frames it now holds."""
    buffer += chunk
    if b"\n\n" not in buffer:
        return []
    *complete, rest = bytes(buffer).split(b"\n\n")
    buffer[:] = rest
    return [frame for frame in complete if frame]

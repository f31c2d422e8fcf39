"""HTTP/1.1 over a plain socket, for what a well-behaved client never does: heads that
never end, bodies a byte at a time, megabytes of header; and a process's memory.

No pytest here (bench/ may import tests/support/).
"""

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, *, source: str | None = None, timeout: float = 30) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port`, from the loopback address `source` if given."""
    address = (source, 0) if source else None
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=address)


def head(method: str, path: str, *headers: tuple[str, str]) -> bytes:
    """A request line and headers, Host first, without the blank line that ends them."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n").encode()


def read_response(sock: socket.socket) -> RawResponse:
    """One response from `sock` (its body by Content-Length, chunks, or to the close)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    try:
        body = response.read()
    finally:
        response.close()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return RawResponse(response.status, headers, body)


def until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """Everything `sock` receives until the server closes it (EOF or reset), and when that
    was (seconds from now); None when it stays open for `timeout`."""
    started = time.monotonic()
    received = b""
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            return received, None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, None
        except (ConnectionResetError, BrokenPipeError):
            return received, time.monotonic() - started
        if not data:
            return received, time.monotonic() - started
        received += data


def parse_response(raw: bytes) -> RawResponse:
    """A whole response as received up to the close (Content-Length bodies only)."""
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def rss_bytes(pid: int) -> int:
    """The resident memory of process `pid` (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")

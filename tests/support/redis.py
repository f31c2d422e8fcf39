"""Redis for tests and the benchmark: the shared server (a key prefix of each test's own),
and servers of a test's own, which it can stop and start again.

No pytest here (bench/ imports it); `needs.require_redis` skips or fails a test.
"""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.support.processes import free_port

# The server the suite uses; CI machines run one here before the tests start.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable(url: str = REDIS_URL) -> bool:
    try:
        with Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False


def fresh_prefix() -> str:
    """A REDIS_KEY_PREFIX no other test (or earlier run) has used."""
    return f"chatkit-test:{secrets.token_hex(6)}:"


def forget_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under `prefix` (a test's leftovers)."""
    with suppress(RedisError, OSError), Redis.from_url(url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@contextmanager
def shared_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A fresh prefix on the shared server, its keys deleted after."""
    prefix = fresh_prefix()
    try:
        yield prefix
    finally:
        forget_prefix(prefix, url)


def server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )


class OwnRedis:
    """`redis-server` on a free loopback port, without persistence, that a test may stop
    (as an outage) and start again on the same port (empty, as after a restart)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="chatkit-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not redis_reachable(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Gone at once, as when its machine goes away: SIGKILL, the port closed."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None
        deadline = time.monotonic() + 10
        while _listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def own_redis(binary: str) -> Iterator[OwnRedis]:
    """A started `OwnRedis`; removed after."""
    server = OwnRedis(binary)
    try:
        server.start()
        yield server
    finally:
        server.remove()

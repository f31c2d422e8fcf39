"""Real `chatkit-backend serve` processes on fresh PostgreSQL databases, for the
reliability suite: started, stopped, killed, and their logs checked for crashes."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from chatkit_backend.store.migrations import upgrade_to_head
from tests.databases import POSTGRES_ADMIN_URL, fresh_postgres_database
from tests.ops_helpers import metric
from tests.server_process import CLI, PROJECT_ROOT, free_port

# Log lines that mean a crash or a leak, whatever the test was doing.
BAD_LOG_LINES = (
    "Traceback",
    "unhandled",
    "Exception in ASGI application",
    "Task was destroyed but it is pending",
    "exception was never retrieved",
)


class Served:
    """A `chatkit-backend serve` process that can be stopped, killed and started again."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Output to a file: a pipe nobody reads fills up and blocks a busy server.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **self.env},
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_clean_log(self) -> None:
        bad = [
            line for line in self.log().splitlines() if any(mark in line for mark in BAD_LOG_LINES)
        ]
        assert not bad, "\n".join(bad[:20])


@contextmanager
def served_on_postgres(tmp_path: Path, fake_base_url: str, **env: str) -> Iterator[Served]:
    """A migrated fresh database on the shared PostgreSQL, and a server on it."""
    with fresh_postgres_database() as url, served_on(url, tmp_path, fake_base_url, **env) as s:
        yield s


@contextmanager
def served_on(url: str, tmp_path: Path, fake_base_url: str, **env: str) -> Iterator[Served]:
    """Migrate the database at `url` and serve on it, answering with the fake model."""
    settings = {
        "DATABASE_URL": url,
        "DATABASE_POOL_SIZE": "5",
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-reliability-" + "0" * 24,
        "OPENAI_BASE_URL": fake_base_url,
        "LLM_MODEL": "fake-model",
        "LLM_TIMEOUT_SECONDS": "1",
        "TITLES": "false",  # a title is one more model request, which would disturb scripts
        **env,
    }
    upgrade_to_head(url)  # what `chatkit-backend migrate` runs, without a process start
    served = Served(settings, tmp_path / f"server-{free_port()}.log")
    served.start()
    try:
        yield served
    finally:
        served.stop()
    served.assert_clean_log()


async def gauges_at_rest(served: Served) -> None:
    """The server's own gauges say no stream is open and no connection checked out
    (the pool gauge is sampled each second)."""

    async def at_rest() -> bool:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as http:
            scrape = (await http.get("/metrics")).text
        open_streams = metric(scrape, "chatkit_open_streams")
        return open_streams == 0 and metric(scrape, "chatkit_db_pool_connections_in_use") == 0

    for _ in range(100):
        if await at_rest():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("streams or database connections still in use after 10 s")


async def postgres_backends(database_url: str, busy_only: bool = False) -> int:
    """Connections open to the database right now, as PostgreSQL counts them; with
    `busy_only`, those running a query or inside a transaction (not idle in a pool)."""
    admin = make_url(POSTGRES_ADMIN_URL)
    conn = await asyncpg.connect(
        host=admin.host,
        port=admin.port or 5432,
        user=admin.username,
        password=admin.password,
        database=admin.database,
        timeout=5,
    )
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        if busy_only:
            query += " AND state <> 'idle'"
        found: int = await conn.fetchval(query, make_url(database_url).database)
        return found
    finally:
        await conn.close()

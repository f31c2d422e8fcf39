"""Real `chatkit-backend serve` processes whose exit the test watches, and a throwaway
PostgreSQL cluster the test can stop and start without touching the shared server."""

import asyncio
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.server_process import CLI, PROJECT_ROOT, _wait_until_up, free_port
from tests.sse import parse_events


@dataclass
class Served:
    process: subprocess.Popen[str]
    base_url: str
    output: str = ""

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM; wait for the exit; return its status and how long it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
            raise
        return self.process.returncode, time.monotonic() - started


@contextmanager
def served(env: dict[str, str], *argv: str) -> Iterator[Served]:
    """`chatkit-backend serve` (or `argv`, run from the project) on a free port."""
    port = free_port()
    command = list(argv) or [CLI, "serve"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Served(process, f"http://127.0.0.1:{port}")
    try:
        _wait_until_up(server.base_url, process)
        yield server
    finally:
        if process.poll() is None:
            server.terminate()
        assert "Traceback" not in server.output, server.output


def post(base_url: str, type: str, **params: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/chatkit", json={"type": type, "params": params}, timeout=30)


def read_events(lines: Iterator[str], until: int) -> list[dict[str, Any]]:
    """Events from an SSE line iterator until `until` text deltas have arrived."""
    events: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("data: "):
            events.extend(parse_events(line + "\n\n"))
        if sum(e["type"] == "thread.item.updated" for e in events) >= until:
            break
    return events


def rest_of(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [
        event
        for line in lines
        if line.startswith("data: ")
        for event in parse_events(line + "\n\n")
    ]


# ---- a PostgreSQL cluster of the test's own ----


def _postgres_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class ThrowawayPostgres:
    """initdb + pg_ctl in a temporary directory, on a free port, trust auth.

    PostgreSQL refuses to run as root; as root (CI) the cluster belongs to `postgres`.
    """

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail("initdb is not installed (CI needs it for the restart test)")
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = bin_dir
        self.port = free_port()
        # /tmp, not pytest's tmp_path: that is private to root, and `postgres` must enter.
        self.root = Path(tempfile.mkdtemp(prefix="chatkit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def answers(self) -> bool:
        async def probe() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres", timeout=2
            )
            await conn.close()

        try:
            asyncio.run(probe())
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        return True

    def remove(self) -> None:
        if self.data.exists():
            subprocess.run(
                [
                    *self.as_user,
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()

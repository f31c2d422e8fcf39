"""Processes under test: start, wait until they answer, read their CPU time, stop.

CPU time comes from /proc/<pid>/stat (utime + stime, every thread of the process),
summed over the process and its descendants, so a multi-worker uvicorn counts all
its workers.
"""

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
# The server code under test: this checkout's, or another tree's (BENCH_SOURCE=/path), so
# a commit can be measured while the working tree changes.
SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT)).resolve()
PYTHONPATH = os.pathsep.join(dict.fromkeys([str(SOURCE / "src"), str(ROOT)]))
PYTHON = sys.executable
CLI = str(Path(PYTHON).with_name("chatkit-backend"))
UVICORN = str(Path(PYTHON).with_name("uvicorn"))
PY_SPY = str(Path(PYTHON).with_name("py-spy"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL",
    os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- CPU time -------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _all_stats() -> dict[int, tuple[int, float]]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    return stats


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds used so far by `roots` and all their descendants."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def tree_pids(root: int) -> list[int]:
    stats = _all_stats()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return found


def postgres_backend_cpu_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (0 if not local)."""
    total = 0.0
    marker = f" {database} ".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"postgres: ") and marker in cmdline.replace(b"\0", b" "):
            stat = _stat(int(entry))
            total += stat[1] if stat else 0.0
    return total


# --- Servers --------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds([self.pid])


def _wait_until_up(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not answer within {timeout} s")


@contextmanager
def running(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, port: int
) -> Iterator[Server]:
    """Start `command` with `env` (added to a clean copy of ours), wait for it to answer
    HTTP on `port`, yield it; SIGTERM (then SIGKILL) it afterwards."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, **env}
    # A separate working directory: no developer's .env leaks into a contender.
    workdir = log_dir / "cwd"
    workdir.mkdir(exist_ok=True)
    log: IO[bytes]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            env=full_env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(name, process, port, log_path)
        try:
            _wait_until_up(server)
            yield server
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- PostgreSQL -----------------------------------------------------------------------


def _admin(sql: str | None) -> None:
    url = make_url(POSTGRES_ADMIN_URL)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            database=url.database,
            password=url.password,
            timeout=3,
        )
        try:
            if sql is not None:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def postgres_reachable() -> bool:
    try:
        _admin(None)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@contextmanager
def fresh_postgres_database() -> Iterator[tuple[str, str]]:
    """An empty database on the benchmark's server: (async URL, name); dropped after."""
    name = f"chatkit_bench_{secrets.token_hex(5)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(POSTGRES_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False), name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def count_connections(database: str) -> int:
    url = make_url(POSTGRES_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        database=url.database,
        password=url.password,
        timeout=3,
    )
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return int(value)
    finally:
        await conn.close()

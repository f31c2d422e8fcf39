"""Processes under test: start, wait until they answer, read their CPU time, stop; and
the benchmark's PostgreSQL. Starting, waiting and stopping are the tests' own
(tests/support/processes.py), as are the throwaway databases (tests/support/postgres.py).

CPU time comes from /proc/<pid>/stat (utime + stime, every thread of the process),
summed over the process and its descendants, so a multi-worker uvicorn counts all
its workers.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import postgres
from tests.support.processes import PROJECT_ROOT, ServerProcess

ROOT = PROJECT_ROOT
# The server code under test: this checkout's, or another tree's (BENCH_SOURCE=/path), so
# a commit can be measured while the working tree changes.
SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT)).resolve()
PYTHONPATH = os.pathsep.join(dict.fromkeys([str(SOURCE / "src"), str(ROOT)]))
PYTHON = sys.executable
CLI = str(Path(PYTHON).with_name("chatkit-backend"))
UVICORN = str(Path(PYTHON).with_name("uvicorn"))
PY_SPY = str(Path(PYTHON).with_name("py-spy"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", postgres.ADMIN_URL)


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


@contextmanager
def running(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, port: int
) -> Iterator[ServerProcess]:
    """Start `command` with `env` (added to a copy of ours, with the code under test on
    PYTHONPATH), wait for it to answer HTTP on `port`, yield it; SIGTERM (then SIGKILL)
    it and its process group afterwards. Its output is in `log_dir`/`name`.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    # A separate working directory: no developer's .env leaks into a contender.
    workdir = log_dir / "cwd"
    workdir.mkdir(exist_ok=True)
    server = ServerProcess(
        command,
        {"PYTHONPATH": PYTHONPATH, **env},
        log_dir / f"{name}.log",
        port,
        name=name,
        cwd=workdir,
        own_session=True,
    )
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL -----------------------------------------------------------------------


def postgres_reachable() -> bool:
    return postgres.postgres_reachable(POSTGRES_ADMIN_URL)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """An empty database on the benchmark's server: its async URL; dropped after."""
    with postgres.fresh_postgres_database(POSTGRES_ADMIN_URL, prefix="chatkit_bench") as url:
        yield url

"""Processes under test: start, wait until they answer, stop; and the benchmark's
PostgreSQL. Starting, waiting and stopping are the tests' own
(tests/support/processes.py), as are the throwaway databases (tests/support/postgres.py).

CPU time and memory come from /proc (bench/proc_stats.py, which the load generator
imports without the rest).
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
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", postgres.ADMIN_URL)


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

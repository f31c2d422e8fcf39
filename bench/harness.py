"""What every scenario runs on: the fake upstream, the contenders and their databases,
each in its own process, and the load generator (another process) driving one of them.

A scenario (bench/scenarios/) is a function of a `Bench`: it configures the upstream,
starts contenders with `serving`, runs `load` against each, and returns its figures.
"""

import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import proc_stats, procs, report
from bench.profiles import PROFILES
from tests.support.postgres import admin_connection, connections_to, database_name
from tests.support.processes import BAD_LOG_LINES, ServerProcess, free_port


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # ours | reference | floor
    db: str | None = None  # sqlite | postgres, for ours


OURS_SQLITE = Contender("ours-sqlite", "ours", "sqlite")
OURS_POSTGRES = Contender("ours-postgres", "ours", "postgres")
REFERENCE = Contender("reference", "reference")
FLOOR = Contender("floor", "floor")


@dataclass(frozen=True)
class Wanted:
    """A server a scenario will ask for (`Bench.serving`'s arguments), to start early."""

    contender: Contender
    label: str
    workers: int = 1
    env: dict[str, str] | None = None
    user: str = "local"

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two servers the same: all but the label."""
        env = tuple(sorted((self.env or {}).items()))
        return (self.contender, self.workers, self.user, env)


class Bench:
    def __init__(self, profile: str, postgres: bool, out: Path, py_spy: bool = False) -> None:
        self.py_spy = py_spy
        self.profile_name = profile
        self.profile: dict[str, Any] = PROFILES[profile]
        self.postgres = postgres and self.profile["postgres"] and procs.postgres_reachable()
        if postgres and self.profile["postgres"] and not self.postgres:
            print("PostgreSQL is not reachable: its contenders are left out", flush=True)
        self.out = out
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.run_dir = out.parent / "runs" / stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.upstream_port = free_port()
        # With the profile's `reuse_servers` (the smoke's: starting a server costs
        # seconds), one server per contender and settings serves every scenario.
        self.reuse_servers = bool(self.profile.get("reuse_servers"))
        self._kept: dict[tuple[Any, ...], tuple[ServerProcess, str | None]] = {}
        self._stack = ExitStack()
        self._sqlite_template: Path | None = None
        self._template_lock = threading.Lock()
        # The token secret of our server when it runs with AUTH_MODE=jwt (the bursts).
        self.jwt_secret = secrets.token_hex(32)

    @contextmanager
    def keeping_servers(self) -> Iterator[None]:
        """The block in which servers may be kept for reuse; all stopped after it."""
        with self._stack:
            yield
        self._kept.clear()

    # --- upstream ---------------------------------------------------------------

    @contextmanager
    def running_upstream(self) -> Iterator[None]:
        command = [procs.PYTHON, "-m", "bench.upstream", "--port", str(self.upstream_port)]
        with procs.running("upstream", command, {}, self.run_dir, self.upstream_port):
            self.configure_upstream(5, 0.0)
            yield

    def configure_upstream(self, tokens: int, interval: float) -> None:
        _post_config(self.upstream_port, {"tokens": tokens, "interval": interval})

    def configure_floor(self, server: ServerProcess, tokens: int, interval: float) -> None:
        """The floor's answers as long as a ChatKit turn of `tokens` tokens: the deltas
        plus the 7 frames around them (threads.add_user_message)."""
        shape = {"frames": tokens + 7, "deltas": tokens, "interval": interval}
        _post_config(server.port, shape)

    def configure(
        self, contender: Contender, server: ServerProcess, tokens: int, interval: float
    ) -> None:
        """Answers of `tokens` tokens, `interval` s apart, from the upstream (and from
        the floor, if `contender` is the floor)."""
        self.configure_upstream(tokens, interval)
        if contender.kind == "floor":
            self.configure_floor(server, tokens, interval)

    # --- contenders -------------------------------------------------------------

    def contenders(self, *, floor: bool = True, sqlite: bool = True) -> list[Contender]:
        found = [OURS_SQLITE] if sqlite else []
        if self.postgres:
            found.append(OURS_POSTGRES)
        found.append(REFERENCE)
        if floor:
            found.append(FLOOR)
        return found

    @property
    def ours(self) -> Contender:
        """Our server on PostgreSQL where it can be had, else on SQLite."""
        return OURS_POSTGRES if self.postgres else OURS_SQLITE

    @contextmanager
    def database(self, db: str, label: str) -> Iterator[tuple[str, str | None]]:
        """A migrated, empty database: (URL, PostgreSQL database name or None)."""
        if db == "sqlite":
            path = self.run_dir / f"{label}.db"
            url = f"sqlite+aiosqlite:///{path}"
            self.migrated_sqlite(path)
            try:
                yield url, None
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            with procs.fresh_postgres_database() as url:
                self.migrate(url)
                yield url, database_name(url)

    def migrated_sqlite(self, path: Path) -> None:
        """A migrated SQLite database at `path`: a copy of one migrated once per run."""
        with self._template_lock:
            self._migrated_sqlite(path)

    def _migrated_sqlite(self, path: Path) -> None:
        template = self._sqlite_template
        if template is None:
            template = self.run_dir / "migrated-template.db"
            self.migrate(f"sqlite+aiosqlite:///{template}")
            if Path(f"{template}-wal").exists():  # not checkpointed: migrate each time
                self.migrate(f"sqlite+aiosqlite:///{path}")
                return
            self._sqlite_template = template
        shutil.copyfile(template, path)

    def migrate(self, url: str) -> None:
        done = subprocess.run(
            [procs.CLI, "migrate"],
            # Plain table names, as the servers (`ours_env`) and bench/scale.py's fill use.
            env={
                **os.environ,
                "DATABASE_URL": url,
                "TABLE_PREFIX": "",
                "PYTHONPATH": procs.PYTHONPATH,
            },
            cwd=self.run_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stdout}{done.stderr}")

    def ours_env(self, url: str, **extra: str) -> dict[str, str]:
        return {
            "ENV": "development",
            "AUTH_MODE": "none",
            "DATABASE_URL": url,
            "LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
            # The reference makes no titles: one model call per turn for both.
            "TITLES": "false",
            # All of the load comes from the one local user (AUTH_MODE=none).
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "MAX_STREAMS_PER_USER": "1000",
            "DATABASE_POOL_SIZE": str(report.POOL_SIZE),
            "TABLE_PREFIX": "",
            **extra,
        }

    @contextmanager
    def serving(
        self,
        contender: Contender,
        label: str,
        workers: int = 1,
        url: str | None = None,
        user: str = "local",
        env: dict[str, str] | None = None,
    ) -> Iterator[tuple[ServerProcess, str | None]]:
        """Start the contender (ours on a fresh database, or on `url`, with `env` added
        to its settings); yield (server, PostgreSQL database name or None). With
        `reuse_servers`, the one started earlier with the same settings, if any."""
        if not self.reuse_servers or url is not None:
            with self._serving(contender, label, workers, url, user, env) as found:
                yield found
            return
        yield self._keep(Wanted(contender, label, workers, env, user))

    def prestart(self, wanted: list[Wanted]) -> None:
        """With `reuse_servers`, start these servers all at once (most of a start is
        importing, and there are two cores); later `serving` calls find them."""
        if not self.reuse_servers:
            return
        todo = {w.key: w for w in wanted if w.key not in self._kept}
        if todo:
            with ThreadPoolExecutor(len(todo)) as pool:
                list(pool.map(self._keep, todo.values()))

    def _keep(self, wanted: Wanted) -> tuple[ServerProcess, str | None]:
        if wanted.key not in self._kept:
            serving = self._serving(
                wanted.contender, wanted.label, wanted.workers, None, wanted.user, wanted.env
            )
            self._kept[wanted.key] = self._stack.enter_context(serving)
        return self._kept[wanted.key]

    @contextmanager
    def _serving(
        self,
        contender: Contender,
        label: str,
        workers: int,
        url: str | None,
        user: str,
        env: dict[str, str] | None,
    ) -> Iterator[tuple[ServerProcess, str | None]]:
        port = free_port()
        logs = self.run_dir / "logs"
        upstream = f"http://127.0.0.1:{self.upstream_port}/v1"
        if contender.kind == "ours":
            assert contender.db is not None
            databases = self.database(contender.db, label) if url is None else _given(url)
            with databases as (db_url, pg_name):
                command = [procs.CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
                command += ["--workers", str(workers)]
                settings = self.ours_env(db_url, LOCAL_USER_ID=user, **(env or {}))
                with procs.running(label, command, settings, logs, port) as server:
                    yield server, pg_name
            return
        if contender.kind == "reference":
            env = {
                "OPENAI_BASE_URL": upstream,
                "OPENAI_API_KEY": "sk-bench",
                # The Agents SDK would export traces to OpenAI; ours does not either.
                "OPENAI_AGENTS_DISABLE_TRACING": "1",
            }
            app = "bench.reference:app"
        else:
            env = {}
            app = "bench.floor:app"
        command = [procs.UVICORN, app, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--app-dir", str(procs.ROOT)]
        with procs.running(label, command, env, logs, port) as server:
            yield server, None

    # --- load -------------------------------------------------------------------

    def load(
        self,
        config: dict[str, Any],
        server: ServerProcess,
        pg_name: str | None,
        memory: bool = False,
        cpu_pids: list[int] | None = None,
    ) -> dict[str, Any]:
        """Run the load generator on `config` against `server`; its figures. With
        `memory`, also the server's resident memory before and at its peak (MiB). CPU is
        `server`'s, or that of `cpu_pids` (the servers behind a proxy)."""
        return asyncio.run(self._load(config, server, pg_name, memory, cpu_pids))

    async def _load(
        self,
        config: dict[str, Any],
        server: ServerProcess,
        pg_name: str | None,
        memory: bool,
        cpu_pids: list[int] | None = None,
    ) -> dict[str, Any]:
        pids = cpu_pids or [server.pid]
        config = {**config, "port": server.port, "cpu_pids": pids, "pg_database": pg_name}
        rss_before = proc_stats.tree_rss_bytes([server.pid]) if memory else 0
        process = await asyncio.create_subprocess_exec(
            procs.PYTHON,
            "-m",
            "bench.loadgen",
            json.dumps(config),
            cwd=procs.ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_connections(pg_name, stop)) if pg_name else None
        rss = asyncio.create_task(watch_memory(server.pid, stop)) if memory else None
        spy = self.start_py_spy(server)
        out, err = await process.communicate()
        stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        peak = await watcher if watcher else None
        rss_peak = await rss if rss else None
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.decode()[-3000:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        if peak is not None:
            result["db_connections_peak"] = peak
        if rss_peak is not None:
            result["rss_before_mib"] = round(rss_before / 2**20, 1)
            result["rss_peak_mib"] = round(rss_peak / 2**20, 1)
        return result

    def start_py_spy(self, server: ServerProcess) -> subprocess.Popen[bytes] | None:
        """With --py-spy, sample our server while the load runs (collapsed stacks)."""
        if not self.py_spy or server.name.split("-")[1] not in ("ours", "reference"):
            return None
        output = self.run_dir / f"{server.name}.py-spy.txt"
        return subprocess.Popen(
            [
                procs.PY_SPY,
                "record",
                "--pid",
                str(server.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--subprocesses",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def log_size(server: ServerProcess) -> int:
    """Where the server's log ends now: what it writes next is after this offset."""
    try:
        return server.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def log_problems(server: ServerProcess, offset: int) -> dict[str, Any]:
    """In the server's log after `offset`: how many lines say Traceback, how many say
    any of the tests' bad-log marks (tests/support/processes.py), and a few of them."""
    try:
        with server.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    bad = [line for line in lines if any(mark in line for mark in BAD_LOG_LINES)]
    return {
        "tracebacks": sum("Traceback" in line for line in lines),
        "bad_log_lines": len(bad),
        "bad_log_samples": [line[:300] for line in bad[:5]],
    }


def refused_by_reason(server: ServerProcess) -> dict[str, float] | None:
    """Our server's chatkit_streams_refused_total by reason, from /metrics (None if it
    cannot be read)."""
    try:
        with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("chatkit_streams_refused_total{"):
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[-1].split('"', 1)[0]
            found[reason] = found.get(reason, 0.0) + float(value)
    return found


def rotated(contenders: list[Contender], round: int) -> list[Contender]:
    """A different order each round, so no contender always runs first."""
    shift = round % len(contenders)
    return contenders[shift:] + contenders[:shift]


@contextmanager
def _given(url: str) -> Iterator[tuple[str, str | None]]:
    yield url, database_name(url)


async def watch_connections(database: str, stop: asyncio.Event) -> int:
    """The most connections to `database` seen while the load ran (polled every 50 ms)."""
    peak = 0
    async with admin_connection(procs.POSTGRES_ADMIN_URL, connect_timeout=5) as conn:
        while not stop.is_set():
            peak = max(peak, await connections_to(conn, database))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    return peak


async def watch_memory(pid: int, stop: asyncio.Event) -> int:
    """The most resident memory of `pid` and its descendants seen while the load ran
    (bytes; polled every 100 ms, in a thread, so the event loop stays free)."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, await asyncio.to_thread(proc_stats.tree_rss_bytes, [pid]))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return peak


def _post_config(port: int, config: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_config", data=json.dumps(config).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per contender: the median over rounds of each figure."""
    summary = {}
    for name, results in rounds.items():
        merged: dict[str, Any] = {"rounds": len(results)}
        for key, value in results[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values = [r[key] for r in results if isinstance(r.get(key), int | float)]
                merged[key] = round(statistics.median(values), 3) if values else None
            elif isinstance(value, dict) and all(
                isinstance(v, int | float | None) for v in value.values()
            ):
                merged[key] = {
                    k: _median([r[key].get(k) for r in results if r.get(key)]) for k in value
                }
        merged["errors"] = sum(r.get("errors", 0) for r in results)
        merged["verify_problems"] = sum(r.get("verify", {}).get("problems", 0) for r in results)
        merged["error_samples"] = [s for r in results for s in r.get("error_samples", [])][:5]
        summary[name] = merged
    return summary


def _median(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(numbers), 3) if numbers else None


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def git_commit() -> str | None:
    if label := os.environ.get("BENCH_SOURCE_LABEL"):
        return label
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=procs.SOURCE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "src"],
        cwd=procs.SOURCE,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return done.stdout.strip() + ("+dirty" if dirty else "")

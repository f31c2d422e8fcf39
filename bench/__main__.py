"""Run the benchmark suite: `python -m bench [--full] [--only streaming,reads,...]`.

Starts the fake upstream, then for each scenario each contender in its own process
(ours on SQLite and on PostgreSQL, the SDK-documented reference, the bare-SSE floor),
drives it with the load generator (another process), and writes the figures to
bench/results/latest.json and as a table on stdout.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench import procs, report
from bench.profiles import PROFILES

RESULTS = procs.ROOT / "bench" / "results"
SCENARIOS = ("streaming", "reads", "concurrency", "scaleout", "scale")


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # ours | reference | floor
    db: str | None = None  # sqlite | postgres, for ours


OURS_SQLITE = Contender("ours-sqlite", "ours", "sqlite")
OURS_POSTGRES = Contender("ours-postgres", "ours", "postgres")
REFERENCE = Contender("reference", "reference")
FLOOR = Contender("floor", "floor")


class Bench:
    def __init__(self, profile: str, postgres: bool, out: Path, py_spy: bool = False) -> None:
        self.py_spy = py_spy
        self.profile_name = profile
        self.profile = PROFILES[profile]
        self.postgres = postgres and self.profile["postgres"] and procs.postgres_reachable()
        if postgres and self.profile["postgres"] and not self.postgres:
            print("PostgreSQL is not reachable: its contenders are left out", flush=True)
        self.out = out
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.run_dir = out.parent / "runs" / stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.upstream_port = procs.free_port()
        self.upstream: subprocess.Popen[bytes] | None = None

    # --- upstream ---------------------------------------------------------------

    @contextmanager
    def running_upstream(self) -> Iterator[None]:
        log = open(self.run_dir / "upstream.log", "wb")  # noqa: SIM115
        self.upstream = subprocess.Popen(
            [procs.PYTHON, "-m", "bench.upstream", "--port", str(self.upstream_port)],
            cwd=procs.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    self.configure_upstream(5, 0.0)
                    break
                except OSError:
                    if time.monotonic() > deadline or self.upstream.poll() is not None:
                        raise RuntimeError("the fake upstream did not start") from None
                    time.sleep(0.05)
            yield
        finally:
            procs.stop(self.upstream)
            log.close()

    def configure_upstream(self, tokens: int, interval: float) -> None:
        body = json.dumps({"tokens": tokens, "interval": interval}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.upstream_port}/_config", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()

    # --- contenders -------------------------------------------------------------

    def contenders(self, *, floor: bool = True, sqlite: bool = True) -> list[Contender]:
        found = [OURS_SQLITE] if sqlite else []
        if self.postgres:
            found.append(OURS_POSTGRES)
        found.append(REFERENCE)
        if floor:
            found.append(FLOOR)
        return found

    @contextmanager
    def database(self, db: str, label: str) -> Iterator[tuple[str, str | None]]:
        """A migrated, empty database: (URL, PostgreSQL database name or None)."""
        if db == "sqlite":
            path = self.run_dir / f"{label}.db"
            url = f"sqlite+aiosqlite:///{path}"
            self.migrate(url)
            try:
                yield url, None
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            with procs.fresh_postgres_database() as (url, name):
                self.migrate(url)
                yield url, name

    def migrate(self, url: str) -> None:
        done = subprocess.run(
            [procs.CLI, "migrate"],
            env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": procs.PYTHONPATH},
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
            **extra,
        }

    @contextmanager
    def serving(
        self,
        contender: Contender,
        label: str,
        workers: int = 1,
        floor_env: dict[str, str] | None = None,
        url: str | None = None,
        user: str = "local",
    ) -> Iterator[tuple[procs.Server, str | None]]:
        """Start the contender; yield (server, PostgreSQL database name or None)."""
        port = procs.free_port()
        logs = self.run_dir / "logs"
        upstream = f"http://127.0.0.1:{self.upstream_port}/v1"
        if contender.kind == "ours":
            assert contender.db is not None
            with (
                self.database(contender.db, label) if url is None else _given(url) as (
                    db_url,
                    pg_name,
                )
            ):
                command = [procs.CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
                command += ["--workers", str(workers)]
                env = self.ours_env(db_url, LOCAL_USER_ID=user)
                with procs.running(label, command, env, logs, port) as server:
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
            env = floor_env or {}
            app = "bench.floor:app"
        command = [procs.UVICORN, app, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--app-dir", str(procs.ROOT)]
        with procs.running(label, command, env, logs, port) as server:
            yield server, None

    # --- load -------------------------------------------------------------------

    async def load(
        self, config: dict[str, Any], server: procs.Server, pg_name: str | None
    ) -> dict[str, Any]:
        config = {**config, "port": server.port, "cpu_pids": [server.pid], "pg_database": pg_name}
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
        spy = self.start_py_spy(server)
        out, err = await process.communicate()
        stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        peak = await watcher if watcher else None
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.decode()[-3000:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        if peak is not None:
            result["db_connections_peak"] = peak
        return result

    def start_py_spy(self, server: procs.Server) -> subprocess.Popen[bytes] | None:
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

    # --- scenarios --------------------------------------------------------------

    def streaming(self) -> dict[str, Any]:
        cfg = self.profile["streaming"]
        self.configure_upstream(cfg["tokens"], cfg["interval"])
        rounds: dict[str, list[dict[str, Any]]] = {}
        contenders = self.contenders()
        for r in range(self.profile["rounds"]):
            # A different order each round, so no contender always runs first.
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for contender in order:
                label = f"streaming-{contender.name}-r{r}"
                print(f"  {label}", flush=True)
                floor_env = _floor_env(cfg)
                config = {"mode": "stream", **cfg, "verify": contender.kind != "floor"}
                config["floor"] = contender.kind == "floor"
                with self.serving(contender, label, floor_env=floor_env) as (server, pg):
                    result = asyncio.run(self.load(config, server, pg))
                rounds.setdefault(contender.name, []).append(result)
        return {"config": cfg, "rounds": rounds, "summary": _summarise(rounds)}

    def reads(self) -> dict[str, Any]:
        cfg = self.profile["reads"]
        rounds: dict[str, list[dict[str, Any]]] = {}
        contenders = self.contenders(floor=False)
        for r in range(self.profile["rounds"]):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for contender in order:
                label = f"reads-{contender.name}-r{r}"
                print(f"  {label}", flush=True)
                self.configure_upstream(cfg["prefill_tokens"], 0.0)
                config = {"mode": "reads", **cfg, "tokens": cfg["prefill_tokens"]}
                with self.serving(contender, label) as (server, pg):
                    result = asyncio.run(self.load(config, server, pg))
                rounds.setdefault(contender.name, []).append(result)
        return {"config": cfg, "rounds": rounds, "summary": _summarise(rounds)}

    def concurrency(self) -> dict[str, Any]:
        cfg = self.profile["concurrency"]
        self.configure_upstream(cfg["tokens"], cfg["interval"])
        results: dict[str, Any] = {}
        ours = OURS_POSTGRES if self.postgres else OURS_SQLITE
        for contender in (ours, REFERENCE):
            label = f"concurrency-{contender.name}"
            print(f"  {label}", flush=True)
            config = {"mode": "stream", **cfg, "verify": True, "timeout": 300}
            with self.serving(contender, label) as (server, pg):
                results[contender.name] = asyncio.run(self.load(config, server, pg))
        return {"config": cfg, "ours": ours.name, "pool_size": report.POOL_SIZE, "results": results}

    def scaleout(self) -> dict[str, Any]:
        cfg = self.profile["scaleout"]
        self.configure_upstream(cfg["tokens"], cfg["interval"])
        ours = OURS_POSTGRES if self.postgres else OURS_SQLITE
        rounds: dict[str, list[dict[str, Any]]] = {}
        for r in range(self.profile["rounds"]):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                label = f"scaleout-{ours.name}-{workers}w-r{r}"
                print(f"  {label}", flush=True)
                config = {"mode": "stream", **cfg, "verify": True, "timeout": 300}
                with self.serving(ours, label, workers=workers) as (server, pg):
                    result = asyncio.run(self.load(config, server, pg))
                rounds.setdefault(f"{workers} worker{'s' if workers > 1 else ''}", []).append(
                    result
                )
        return {"config": cfg, "ours": ours.name, "rounds": rounds, "summary": _summarise(rounds)}

    def scale(self) -> dict[str, Any]:
        cfg = self.profile["scale"]
        results: dict[str, Any] = {}
        for db in ("sqlite", "postgres") if self.postgres else ("sqlite",):
            label = f"scale-{db}"
            print(f"  {label}: filling to {cfg['total_items']:,} items", flush=True)
            contender = OURS_SQLITE if db == "sqlite" else OURS_POSTGRES
            with self.database(db, label) as (url, _):
                filled = _scale_step({"step": "fill", "url": url, **cfg})
                # One server per user (AUTH_MODE=none serves one local user).
                with (
                    self.serving(contender, f"{label}-small", url=url, user="small") as (small, _),
                    self.serving(contender, f"{label}-big", url=url, user="local") as (big, _),
                ):
                    measured = _scale_step(
                        {
                            "step": "measure",
                            "url": url,
                            "repeat": cfg["repeat"],
                            "ports": {"small": small.port, "local": big.port},
                        }
                    )
            results[db] = {"fill": filled, **measured}
        return {"config": cfg, "results": results}

    # --- all --------------------------------------------------------------------

    def run(self, only: list[str]) -> dict[str, Any]:
        results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": self.profile_name,
            "machine": machine(),
            "commit": _git_commit(),
            "postgres": self.postgres,
            "load_before": os.getloadavg(),
        }
        with self.running_upstream():
            for scenario in only:
                print(f"{scenario}:", flush=True)
                started = time.monotonic()
                results[scenario] = getattr(self, scenario)()
                results[scenario]["seconds"] = round(time.monotonic() - started, 1)
        results["load_after"] = os.getloadavg()
        results["targets"] = report.targets(results)
        return results


@contextmanager
def _given(url: str) -> Iterator[tuple[str, str | None]]:
    name = make_url(url).database if url.startswith("postgresql") else None
    yield url, name


def _floor_env(cfg: dict[str, Any]) -> dict[str, str]:
    # A ChatKit turn (add_user_message) is the deltas plus 7 frames around them.
    return {
        "FLOOR_FRAMES": str(cfg["tokens"] + 7),
        "FLOOR_DELTAS": str(cfg["tokens"]),
        "FLOOR_INTERVAL": str(cfg["interval"]),
    }


def _scale_step(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [procs.PYTHON, "-m", "bench.scale", json.dumps(config)],
        cwd=procs.ROOT,
        env={**os.environ, "PYTHONPATH": procs.PYTHONPATH},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scale step {config['step']} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def watch_connections(database: str, stop: asyncio.Event) -> int:
    """The most connections to `database` seen while the load ran (polled every 50 ms)."""
    url = make_url(procs.POSTGRES_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        database=url.database,
        password=url.password,
        timeout=5,
    )
    peak = 0
    try:
        while not stop.is_set():
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
            peak = max(peak, int(count))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await conn.close()
    return peak


def _summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
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


def _git_commit() -> str | None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--full", action="store_true", help="the full sizes (--profile full)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--no-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile our server under load with py-spy (pip install py-spy); "
        "collapsed stacks in the run's folder (the profiler's cost is in the figures)",
    )
    args = parser.parse_args(argv)
    profile = "full" if args.full else args.profile
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    bench = Bench(profile, not args.no_postgres, args.out, py_spy=args.py_spy)
    print(f"benchmark profile {profile}; logs in {bench.run_dir}", flush=True)
    results = bench.run(only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    (bench.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.render(results))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

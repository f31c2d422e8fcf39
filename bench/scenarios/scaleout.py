"""Scale-out: our server as replicas behind nginx, each its own process, on one database
and one Redis, as compose.replicas.yaml runs them (the nginx files are the project's,
docker/nginx/, with the bench's ports swapped in).

- `1 replica` and `2 replicas`, the limits in Redis (REDIS_URL): turns/s (two should
  nearly double one), server CPU per turn (all replicas together) and the share of the
  requests each replica served.
- `1 replica, limits in process` (no REDIS_URL): its CPU per turn against `1 replica`'s
  is what shared limits cost (target: within 5%).

The order of the three turns around each round. Every server runs AUTH_MODE=jwt and every
user sends a token of its own, as in a deployment: each request also takes (and gives
back) a failed-sign-in token, in Redis where the limits are. nginx's and Redis's own CPU
over the whole load (warm-up included) is shown apart, per turn. The Redis is a
`redis-server` of the bench's own; without the binary, the one at TEST_REDIS_URL under a
fresh prefix (its CPU not measured); without either, or without nginx, the scenario
says so and runs what it can.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import proc_stats, procs
from bench.harness import Bench, Wanted, log_problems, log_size, summarise
from tests.support.nginx import nginx_binary, nginx_command, render_nginx
from tests.support.processes import ServerProcess, free_port
from tests.support.redis import (
    REDIS_URL,
    OwnRedis,
    forget_prefix,
    fresh_prefix,
    redis_reachable,
    server_binary,
)

ONE, TWO, IN_PROCESS = "1 replica", "2 replicas", "1 replica, limits in process"
# (name, replicas, limits in Redis)
VARIANTS: list[tuple[str, int, bool]] = [(ONE, 1, True), (TWO, 2, True), (IN_PROCESS, 1, False)]
# An access line of the app for a ChatKit request (api/middleware.py).
ACCESS_LINE = "POST /chatkit "


def servers(bench: Bench) -> list[Wanted]:
    # Its own servers, started per variant behind a proxy: none to share or start early.
    return []


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["scaleout"]
    bench.configure_upstream(cfg["tokens"], cfg["interval"])
    ours = bench.ours
    found: dict[str, Any] = {"config": cfg, "ours": ours.name, "rounds": {}, "summary": {}}
    nginx = nginx_binary()
    if nginx is None:
        found["skipped"] = "nginx is not installed (apt-get install nginx)"
        print(f"  {found['skipped']}", flush=True)
        return found
    rounds: dict[str, list[dict[str, Any]]] = {}
    with redis_for_bench() as (redis_url, redis_pid, redis_note):
        variants = [v for v in VARIANTS if redis_url is not None or not v[2]]
        if redis_note:
            found["redis"] = redis_note
        for r in range(bench.profile["rounds"]):
            shift = r % len(variants)
            for name, replicas, in_redis in variants[shift:] + variants[:shift]:
                label = f"scaleout-{ours.name}-{replicas}r-{'redis' if in_redis else 'local'}-r{r}"
                print(f"  {label}", flush=True)
                redis = (redis_url, redis_pid) if in_redis else (None, None)
                result = _measure(bench, nginx, label, replicas, redis, cfg)
                rounds.setdefault(name, []).append(result)
    found["rounds"] = rounds
    found["summary"] = summarise(rounds)
    summary = found["summary"]
    for name, results in rounds.items():
        summary[name]["tracebacks"] = sum(r["tracebacks"] for r in results)
    one = summary.get(ONE, {}).get("cpu_ms_per_turn")
    local = summary.get(IN_PROCESS, {}).get("cpu_ms_per_turn")
    found["redis_vs_in_process_cpu"] = round(one / local, 3) if one and local else None
    return found


def _measure(
    bench: Bench,
    nginx: str,
    label: str,
    replicas: int,
    redis: tuple[str | None, int | None],
    cfg: dict[str, Any],
) -> dict[str, Any]:
    redis_url, redis_pid = redis
    prefix = fresh_prefix()
    # Every request is checked (and counted) as a sign-in from 127.0.0.1: a limit far
    # above the load keeps the work without the refusals.
    extra = {
        "AUTH_MODE": "jwt",
        "JWT_SECRET": bench.jwt_secret,
        "FAILED_AUTH_PER_MINUTE": "1000000",
    }
    if redis_url is not None:
        extra |= {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix}
    logs = bench.run_dir / "logs"
    with bench.database(bench.ours.db or "sqlite", label) as (url, pg_name), ExitStack() as stack:
        env = bench.ours_env(url, **extra)
        apps = [stack.enter_context(_replica(f"{label}-{n}", env, logs)) for n in range(replicas)]
        proxy = stack.enter_context(_proxy(nginx, f"{label}-nginx", [a.port for a in apps], logs))
        offsets = [log_size(app) for app in apps]
        side_pids = [proxy.pid] + ([redis_pid] if redis_pid else [])
        side_before = [proc_stats.tree_cpu_seconds([pid]) for pid in side_pids]
        config = {"mode": "stream", **cfg, "verify": True, "timeout": 300}
        config["jwt_secret"] = bench.jwt_secret
        result = bench.load(config, proxy, pg_name, cpu_pids=[app.pid for app in apps])
        side = [
            proc_stats.tree_cpu_seconds([pid]) - b
            for pid, b in zip(side_pids, side_before, strict=True)
        ]
        served = [_served(app, offset) for app, offset in zip(apps, offsets, strict=True)]
        problems = [log_problems(app, offset) for app, offset in zip(apps, offsets, strict=True)]
    if redis_url is not None and redis_pid is None:
        forget_prefix(prefix, redis_url)
    # The measured turns and the warm-up's (one each): what nginx and Redis saw.
    turns = result["turns"] + min(int(cfg["users"]), 10)
    result["proxy_cpu_ms_per_turn"] = round(side[0] * 1000 / turns, 3) if turns else None
    if redis_pid:
        result["redis_cpu_ms_per_turn"] = round(side[1] * 1000 / turns, 3) if turns else None
    total = sum(served)
    result["served_share"] = {
        f"replica {n + 1}": round(count / total, 3) if total else None
        for n, count in enumerate(served)
    }
    result["tracebacks"] = sum(p["tracebacks"] for p in problems)
    result["bad_log_samples"] = [s for p in problems for s in p["bad_log_samples"]][:5]
    return result


@contextmanager
def _replica(name: str, env: dict[str, str], logs: Path) -> Iterator[ServerProcess]:
    port = free_port()
    command = [procs.CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with procs.running(name, command, env, logs, port) as server:
        yield server


@contextmanager
def _proxy(nginx: str, name: str, app_ports: list[int], logs: Path) -> Iterator[ServerProcess]:
    folder = logs / name
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # An access line per request would be nginx's own work, not the proxying's.
    config = render_nginx(folder, app_ports, port, access_log=False)
    command = nginx_command(nginx, config)
    with procs.running(name, command, {}, logs, port) as server:
        yield server


@contextmanager
def redis_for_bench() -> Iterator[tuple[str | None, int | None, str | None]]:
    """(URL, its server's pid or None, a note or None) for the variants with Redis."""
    binary = server_binary()
    if binary is not None:
        server = OwnRedis(binary)
        try:
            server.start()
            assert server.process is not None
            yield server.url, server.process.pid, None
        finally:
            server.remove()
        return
    if redis_reachable():
        yield REDIS_URL, None, "redis-server not installed: the shared Redis, CPU not measured"
        return
    yield None, None, "no Redis: only the in-process limits ran"


def _served(server: ServerProcess, offset: int) -> int:
    """ChatKit requests `server` logged after `offset`."""
    try:
        with server.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").count(ACCESS_LINE)
    except FileNotFoundError:
        return 0

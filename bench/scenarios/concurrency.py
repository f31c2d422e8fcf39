"""Concurrency: bursts of streams on one worker of our server on PostgreSQL (default
pool), against the reference.

Each burst (the profile's `bursts`) is `users` users, each streaming `turns` turns on
one thread, started over `ramp` seconds (0: all at the same moment). Every burst gets a
fresh server, warmed up first with 10 turns answered at once (not counted). Our server
runs with `AUTH_MODE=jwt` and every user has a token of its own, so a burst is
thousands of users, not one user's thousands of streams (the per-user stream limit
cannot go past 1,000); the reference has no authentication. Afterwards: every admitted
turn of every thread is read back (its message and the whole answer), refusals (503
before the stream, with `Retry-After`) are counted apart from errors, the server's log
is searched for tracebacks, and our `/metrics` gives its refusals by reason. The
server's resident memory (all its processes) is sampled every 100 ms.
"""

import statistics
from typing import Any

from bench import report
from bench.harness import (
    REFERENCE,
    Bench,
    Wanted,
    log_problems,
    log_size,
    refused_by_reason,
    rotated,
    summarise,
)
from tests.support.processes import ServerProcess

# Summed over rounds (each must be 0), not medians.
SUMMED = ("bad_refusals", "tracebacks", "bad_log_lines")


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["concurrency"]
    bench.configure_upstream(cfg["tokens"], cfg["interval"])
    ours = bench.ours
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in range(bench.profile["rounds"]):
        for burst in cfg["bursts"]:
            contenders = [ours, REFERENCE] if burst.get("reference") else [ours]
            for contender in rotated(contenders, r):
                label = f"concurrency-{burst['name']}-{contender.name}-r{r}"
                print(f"  {label}: {burst['users']} users over {burst['ramp']:g} s", flush=True)
                config: dict[str, Any] = {
                    "mode": "stream",
                    "users": burst["users"],
                    "ramp": burst["ramp"],
                    "threads": cfg["threads"],
                    "turns": cfg["turns"],
                    "tokens": cfg["tokens"],
                    "interval": cfg["interval"],
                    "timeout": cfg["timeout"],
                    "verify": True,
                    "warmup_users": 0,
                }
                env = None
                if contender.kind == "ours":
                    config["jwt_secret"] = bench.jwt_secret
                    env = _ours_env(bench, burst)
                with bench.serving(contender, label, env=env) as (server, pg):
                    if not bench.reuse_servers:  # a kept server is warm already
                        _warm_up(bench, config, server, pg)
                    offset = log_size(server)
                    result = bench.load(config, server, pg, memory=True)
                    if contender.kind == "ours":
                        result["refused_by_reason"] = refused_by_reason(server)
                # After the server stopped (unless kept for reuse): its shutdown too.
                result.update(log_problems(server, offset))
                rounds.setdefault(burst["name"], {}).setdefault(contender.name, []).append(result)
    summary = {burst: _summary(results) for burst, results in rounds.items()}
    return {
        "config": cfg,
        "ours": ours.name,
        "pool_size": report.POOL_SIZE,
        "rounds": rounds,
        "summary": summary,
    }


def _warm_up(bench: Bench, config: dict[str, Any], server: ServerProcess, pg: str | None) -> None:
    """A few turns first, answered at once (the burst's pace would take seconds), not
    counted: the server's first requests import and connect."""
    bench.configure_upstream(config["tokens"], 0.0)
    warm = {**config, "users": min(10, config["users"]), "ramp": 0, "verify": False}
    bench.load({**warm, "threads": 1, "turns": 1}, server, pg)
    bench.configure_upstream(config["tokens"], config["interval"])


def servers(bench: Bench) -> list[Wanted]:
    bursts = bench.profile["concurrency"]["bursts"]
    wanted = [
        Wanted(bench.ours, f"concurrency-{b['name']}-{bench.ours.name}-r0", env=_ours_env(bench, b))
        for b in bursts
    ]
    return [*wanted, Wanted(REFERENCE, f"concurrency-{bursts[0]['name']}-reference-r0")]


def _ours_env(bench: Bench, burst: dict[str, Any]) -> dict[str, str]:
    return {"AUTH_MODE": "jwt", "JWT_SECRET": bench.jwt_secret, **burst.get("env", {})}


def _summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary = summarise(results)
    for name, runs in results.items():
        merged = summary[name]
        for key in SUMMED:
            merged[key] = sum(r.get(key, 0) for r in runs)
        kinds: dict[str, int] = {}
        for r in runs:
            for kind, count in r.get("error_kinds", {}).items():
                kinds[kind] = kinds.get(kind, 0) + count
        merged["error_kinds"] = kinds
        merged["refusal_samples"] = [s for r in runs for s in r.get("refusal_samples", [])][:5]
        merged["problem_samples"] = [
            s for r in runs for s in r.get("verify", {}).get("problem_samples", [])
        ][:5]
        merged["bad_log_samples"] = [s for r in runs for s in r.get("bad_log_samples", [])][:5]
        merged["verify"] = {
            key: _median([r.get("verify", {}).get(key) for r in runs])
            for key in ("threads_checked", "turns_checked", "turns_stored")
        }
        merged["refused_by_reason"] = runs[-1].get("refused_by_reason")
        merged["max_rss_peak_mib"] = max((r.get("rss_peak_mib") or 0 for r in runs), default=0)
    return summary


def _median(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return statistics.median(numbers) if numbers else None

"""Concurrency: many users streaming at once on one worker, ours against the reference;
every turn must be stored, and ours must stay within its connection pool."""

from typing import Any

from bench import report
from bench.harness import REFERENCE, Bench


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["concurrency"]
    bench.configure_upstream(cfg["tokens"], cfg["interval"])
    results: dict[str, Any] = {}
    ours = bench.ours
    for contender in (ours, REFERENCE):
        label = f"concurrency-{contender.name}"
        print(f"  {label}", flush=True)
        config = {"mode": "stream", **cfg, "verify": True, "timeout": 300}
        with bench.serving(contender, label) as (server, pg):
            results[contender.name] = bench.load(config, server, pg)
    return {"config": cfg, "ours": ours.name, "pool_size": report.POOL_SIZE, "results": results}

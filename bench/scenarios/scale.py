"""Scale: a store filled by bulk SQL (bench/scale.py), then the calls a client makes timed
for a small user and for a big one, on the store directly and over HTTP against two
servers on the database, one per user."""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from bench import procs
from bench.harness import OURS_POSTGRES, OURS_SQLITE, Bench


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["scale"]
    results: dict[str, Any] = {}
    for db in ("sqlite", "postgres") if bench.postgres else ("sqlite",):
        label = f"scale-{db}"
        print(f"  {label}: filling to {cfg['total_items']:,} items", flush=True)
        contender = OURS_SQLITE if db == "sqlite" else OURS_POSTGRES
        with bench.database(db, label) as (url, _):
            filled = _step({"step": "fill", "url": url, **cfg})
            # One server per user (AUTH_MODE=none serves one local user), started at once.
            with ExitStack() as servers:
                starting = [
                    bench.serving(contender, f"{label}-small", url=url, user="small"),
                    bench.serving(contender, f"{label}-big", url=url, user="local"),
                ]
                with ThreadPoolExecutor(len(starting)) as pool:
                    started = [pool.submit(servers.enter_context, cm) for cm in starting]
                (small, _), (big, _) = (future.result() for future in started)
                measured = _step(
                    {
                        "step": "measure",
                        "url": url,
                        "repeat": cfg["repeat"],
                        "ports": {"small": small.port, "local": big.port},
                    }
                )
        results[db] = {"fill": filled, **measured}
    return {"config": cfg, "results": results}


def _step(config: dict[str, Any]) -> dict[str, Any]:
    """One step of bench/scale.py, in a process of its own; its JSON result."""
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

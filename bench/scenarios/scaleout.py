"""Scale-out: our server with one worker and with two, in alternating order; turns/s
should nearly double."""

from typing import Any

from bench.harness import Bench, Wanted, summarise


def servers(bench: Bench) -> list[Wanted]:
    ours = bench.ours
    return [Wanted(ours, f"scaleout-{ours.name}-{n}w-r0", workers=n) for n in (1, 2)]


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["scaleout"]
    bench.configure_upstream(cfg["tokens"], cfg["interval"])
    ours = bench.ours
    rounds: dict[str, list[dict[str, Any]]] = {}
    for r in range(bench.profile["rounds"]):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            label = f"scaleout-{ours.name}-{workers}w-r{r}"
            print(f"  {label}", flush=True)
            config = {"mode": "stream", **cfg, "verify": True, "timeout": 300}
            with bench.serving(ours, label, workers=workers) as (server, pg):
                result = bench.load(config, server, pg)
            rounds.setdefault(f"{workers} worker{'s' if workers > 1 else ''}", []).append(result)
    return {"config": cfg, "ours": ours.name, "rounds": rounds, "summary": summarise(rounds)}

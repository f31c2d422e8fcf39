"""Reads: every contender but the floor, filled with threads first, then answering
`threads.list`, `threads.get_by_id` and `items.list` in turn."""

from typing import Any

from bench.harness import Bench, Wanted, rotated, summarise


def servers(bench: Bench) -> list[Wanted]:
    return [Wanted(c, f"reads-{c.name}-r0") for c in bench.contenders(floor=False)]


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["reads"]
    rounds: dict[str, list[dict[str, Any]]] = {}
    contenders = bench.contenders(floor=False)
    for r in range(bench.profile["rounds"]):
        for contender in rotated(contenders, r):
            label = f"reads-{contender.name}-r{r}"
            print(f"  {label}", flush=True)
            bench.configure_upstream(cfg["prefill_tokens"], 0.0)
            config = {"mode": "reads", **cfg, "tokens": cfg["prefill_tokens"]}
            with bench.serving(contender, label) as (server, pg):
                result = bench.load(config, server, pg)
            rounds.setdefault(contender.name, []).append(result)
    return {"config": cfg, "rounds": rounds, "summary": summarise(rounds)}

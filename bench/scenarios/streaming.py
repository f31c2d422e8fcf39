"""Streaming turns: every contender, round after round in a rotating order, streams the
same answers to the same users; CPU per turn is the figure the targets compare."""

from typing import Any

from bench.harness import Bench, Wanted, rotated, summarise


def servers(bench: Bench) -> list[Wanted]:
    return [Wanted(contender, f"streaming-{contender.name}-r0") for contender in bench.contenders()]


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["streaming"]
    rounds: dict[str, list[dict[str, Any]]] = {}
    contenders = bench.contenders()
    for r in range(bench.profile["rounds"]):
        for contender in rotated(contenders, r):
            label = f"streaming-{contender.name}-r{r}"
            print(f"  {label}", flush=True)
            config = {"mode": "stream", **cfg, "verify": contender.kind != "floor"}
            config["floor"] = contender.kind == "floor"
            with bench.serving(contender, label) as (server, pg):
                bench.configure(contender, server, cfg["tokens"], cfg["interval"])
                result = bench.load(config, server, pg)
            rounds.setdefault(contender.name, []).append(result)
    return {"config": cfg, "rounds": rounds, "summary": summarise(rounds)}

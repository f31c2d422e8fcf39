"""Streaming turns: every contender, round after round in a rotating order, streams the
same answers to the same users; CPU per turn is the figure the targets compare."""

from typing import Any

from bench.harness import Bench, rotated, summarise


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["streaming"]
    bench.configure_upstream(cfg["tokens"], cfg["interval"])
    rounds: dict[str, list[dict[str, Any]]] = {}
    contenders = bench.contenders()
    for r in range(bench.profile["rounds"]):
        for contender in rotated(contenders, r):
            label = f"streaming-{contender.name}-r{r}"
            print(f"  {label}", flush=True)
            floor_env = _floor_env(cfg)
            config = {"mode": "stream", **cfg, "verify": contender.kind != "floor"}
            config["floor"] = contender.kind == "floor"
            with bench.serving(contender, label, floor_env=floor_env) as (server, pg):
                result = bench.load(config, server, pg)
            rounds.setdefault(contender.name, []).append(result)
    return {"config": cfg, "rounds": rounds, "summary": summarise(rounds)}


def _floor_env(cfg: dict[str, Any]) -> dict[str, str]:
    # A ChatKit turn (add_user_message) is the deltas plus 7 frames around them.
    return {
        "FLOOR_FRAMES": str(cfg["tokens"] + 7),
        "FLOOR_DELTAS": str(cfg["tokens"]),
        "FLOOR_INTERVAL": str(cfg["interval"]),
    }

"""CPU per streamed token, and the time to the first delta at 1 and at 10 users: every
contender, round after round in a rotating order, one server per round.

Each server answers, in turn:
- `short` and `long`: `users` users x `threads` threads x `turns` turns, with answers of
  `short` and of `long` tokens `interval` s apart; CPU per turn of each, and the slope,
  CPU ms per extra token: (CPU/turn long - CPU/turn short) / (long - short). What a turn
  costs whatever its length cancels out; what is left is the per-token path (reading the
  model's event, converting it, serializing and writing the SSE frame);
- `latency`: for each entry of `latency_runs`, that many users (threads x turns each)
  with `latency_tokens`-token answers `latency_interval` s apart; the time from sending
  a turn to its first text delta, p50 and p99 (with few turns, p99 is the slowest).
"""

from typing import Any

from bench.harness import Bench, Contender, Wanted, rotated, summarise


def servers(bench: Bench) -> list[Wanted]:
    return [Wanted(contender, f"tokens-{contender.name}-r0") for contender in bench.contenders()]


def run(bench: Bench) -> dict[str, Any]:
    cfg = bench.profile["tokens"]
    rounds: dict[str, list[dict[str, Any]]] = {}
    contenders = bench.contenders()
    for r in range(bench.profile["rounds"]):
        for contender in rotated(contenders, r):
            label = f"tokens-{contender.name}-r{r}"
            print(f"  {label}", flush=True)
            with bench.serving(contender, label) as (server, pg):
                loads: dict[str, dict[str, Any]] = {}
                for length in ("short", "long"):
                    bench.configure(contender, server, cfg[length], cfg["interval"])
                    config = _config(contender, cfg, cfg[length], warm=not loads)
                    loads[length] = bench.load(config, server, pg)
                bench.configure(contender, server, cfg["latency_tokens"], cfg["latency_interval"])
                for run_cfg in cfg["latency_runs"]:
                    config = _config(contender, {**cfg, **run_cfg}, cfg["latency_tokens"], False)
                    loads[f"{run_cfg['users']}u"] = bench.load(config, server, pg)
            rounds.setdefault(contender.name, []).append(_figures(cfg, loads))
    return {"config": cfg, "rounds": rounds, "summary": summarise(rounds)}


def _config(contender: Contender, cfg: dict[str, Any], tokens: int, warm: bool) -> dict[str, Any]:
    """A load of `tokens`-token answers; with `warm`, the load generator's warm-up turns
    first (the server's first load; the later ones find it warm)."""
    return {
        "mode": "stream",
        "warmup_users": 10 if warm else 0,
        "users": cfg["users"],
        "threads": cfg["threads"],
        "turns": cfg["turns"],
        "tokens": tokens,
        "verify": contender.kind != "floor",
        "floor": contender.kind == "floor",
    }


def _figures(cfg: dict[str, Any], loads: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One round of one contender: the figures summarise() takes medians of."""
    short = loads["short"].get("cpu_ms_per_turn")
    long = loads["long"].get("cpu_ms_per_turn")
    slope = None
    if short is not None and long is not None:
        slope = round((long - short) / (cfg["long"] - cfg["short"]), 4)
    figures: dict[str, Any] = {
        "cpu_ms_per_turn_short": short,
        "cpu_ms_per_turn_long": long,
        "cpu_ms_per_token": slope,
        "frames_per_turn_short": loads["short"].get("frames_per_turn"),
        "frames_per_turn_long": loads["long"].get("frames_per_turn"),
    }
    for run_cfg in cfg["latency_runs"]:
        load = loads[f"{run_cfg['users']}u"]
        figures[f"first_delta_ms_{run_cfg['users']}u"] = load.get("first_delta_ms")
        figures[f"turns_{run_cfg['users']}u"] = load.get("turns")
    figures["errors"] = sum(load.get("errors", 0) for load in loads.values())
    figures["error_samples"] = [s for load in loads.values() for s in load["error_samples"]]
    figures["verify"] = {
        "problems": sum(load.get("verify", {}).get("problems", 0) for load in loads.values())
    }
    figures["loads"] = loads
    return figures

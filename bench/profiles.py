"""How big each scenario runs: `smoke` (the test suite's), `quick` (the default) and
`full` (the sizes the targets name)."""

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "rounds": 1,
        "postgres": False,
        "streaming": {"users": 2, "threads": 1, "turns": 2, "tokens": 5, "interval": 0.0},
        "reads": {
            "users": 2,
            "requests": 15,
            "prefill_threads": 3,
            "prefill_turns": 2,
            "prefill_tokens": 5,
        },
        "concurrency": {
            "users": 20,
            "threads": 1,
            "turns": 2,
            "tokens": 5,
            "interval": 0.01,
            "ramp": 0.1,
        },
        "scaleout": {"users": 4, "threads": 1, "turns": 2, "tokens": 5, "interval": 0.0},
        "scale": {
            "small_threads": 5,
            "small_items": 40,
            "threads": 50,
            "big_items": 400,
            "total_items": 1000,
            "repeat": 10,
        },
    },
    "quick": {
        "rounds": 1,
        "postgres": True,
        "streaming": {"users": 10, "threads": 2, "turns": 5, "tokens": 200, "interval": 0.01},
        "reads": {
            "users": 10,
            "requests": 300,
            "prefill_threads": 20,
            "prefill_turns": 3,
            "prefill_tokens": 20,
        },
        "concurrency": {
            "users": 1000,
            "threads": 1,
            "turns": 2,
            "tokens": 50,
            "interval": 0.1,
            "ramp": 5.0,
        },
        "scaleout": {"users": 40, "threads": 1, "turns": 5, "tokens": 200, "interval": 0.0},
        "scale": {
            "small_threads": 10,
            "small_items": 100,
            "threads": 1_000,
            "big_items": 10_000,
            "total_items": 100_000,
            "repeat": 200,
        },
    },
    "full": {
        "rounds": 3,
        "postgres": True,
        "streaming": {"users": 10, "threads": 3, "turns": 5, "tokens": 200, "interval": 0.01},
        "reads": {
            "users": 10,
            "requests": 1000,
            "prefill_threads": 20,
            "prefill_turns": 3,
            "prefill_tokens": 20,
        },
        "concurrency": {
            "users": 1000,
            "threads": 1,
            "turns": 3,
            "tokens": 50,
            "interval": 0.1,
            "ramp": 5.0,
        },
        "scaleout": {"users": 40, "threads": 2, "turns": 5, "tokens": 200, "interval": 0.0},
        "scale": {
            "small_threads": 10,
            "small_items": 100,
            "threads": 10_000,
            "big_items": 100_000,
            "total_items": 1_000_000,
            "repeat": 500,
        },
    },
}

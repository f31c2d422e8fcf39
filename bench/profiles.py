"""How big each scenario runs: `smoke` (the test suite's), `quick` (the default) and
`full` (the sizes the targets name).

`smoke` keeps one server per contender and settings for all its scenarios
(`reuse_servers`: a server takes seconds to start, the smoke's loads milliseconds)."""

from typing import Any

# The concurrency scenario's bursts on our server (PostgreSQL, default pool, one worker):
# (a) started over 5 s, (b) all at the same moment, (c) three times as many at once, past
# admission (MAX_OPEN_STREAMS 1,500, MAX_WAITING_STREAMS 1,000 by default). The reference
# has no admission: it runs (a) and (b). `memory`: the burst whose peak RSS is the target.
BURSTS: list[dict[str, Any]] = [
    {"name": "a", "users": 1000, "ramp": 5.0, "reference": True},
    {"name": "b", "users": 1000, "ramp": 0.0, "reference": True, "memory": True},
    {"name": "c", "users": 3000, "ramp": 0.0, "reference": False},
]
_SMOKE_LIMITS = {"MAX_OPEN_STREAMS": "10"}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "rounds": 1,
        "postgres": False,
        "reuse_servers": True,
        "streaming": {"users": 2, "threads": 1, "turns": 2, "tokens": 5, "interval": 0.0},
        "tokens": {
            "users": 2,
            "threads": 1,
            "turns": 2,
            "short": 5,
            "long": 25,
            "interval": 0.0,
            "latency_tokens": 5,
            "latency_interval": 0.0,
            "latency_runs": [
                {"users": 1, "threads": 1, "turns": 2},
                {"users": 2, "threads": 1, "turns": 2},
            ],
        },
        "reads": {
            "users": 2,
            "requests": 15,
            "prefill_threads": 3,
            "prefill_turns": 2,
            "prefill_tokens": 5,
        },
        "concurrency": {
            "threads": 1,
            "turns": 2,
            "tokens": 5,
            "interval": 0.05,
            "timeout": 120,
            "note": "smoke profile: tiny bursts, admission lowered to 10 open streams so (c) "
            "is refused in part",
            # Admission lowered so the small burst (c) is refused in part, as 3,000 are.
            "bursts": [
                {"name": "a", "users": 8, "ramp": 0.1, "reference": True, "env": _SMOKE_LIMITS},
                {
                    "name": "b",
                    "users": 8,
                    "ramp": 0.0,
                    "reference": True,
                    "memory": True,
                    "env": _SMOKE_LIMITS,
                },
                {"name": "c", "users": 30, "ramp": 0.0, "reference": False, "env": _SMOKE_LIMITS},
            ],
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
        "tokens": {
            "users": 10,
            "threads": 1,
            "turns": 3,
            "short": 20,
            "long": 400,
            "interval": 0.01,
            "latency_tokens": 50,
            "latency_interval": 0.01,
            "latency_runs": [
                {"users": 1, "threads": 2, "turns": 10},
                {"users": 10, "threads": 2, "turns": 5},
            ],
        },
        "reads": {
            "users": 10,
            "requests": 300,
            "prefill_threads": 20,
            "prefill_turns": 3,
            "prefill_tokens": 20,
        },
        "concurrency": {
            "threads": 1,
            "turns": 1,
            "tokens": 50,
            "interval": 0.1,
            "timeout": 600,
            "bursts": BURSTS,
            "note": "quick profile: 1 turn per user and 1 round (full: 3 turns, median of "
            "3 rounds), to keep `make bench` near 15 minutes",
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
        "tokens": {
            "users": 10,
            "threads": 1,
            "turns": 5,
            "short": 20,
            "long": 400,
            "interval": 0.01,
            "latency_tokens": 50,
            "latency_interval": 0.01,
            "latency_runs": [
                {"users": 1, "threads": 4, "turns": 10},
                {"users": 10, "threads": 3, "turns": 10},
            ],
        },
        "reads": {
            "users": 10,
            "requests": 1000,
            "prefill_threads": 20,
            "prefill_turns": 3,
            "prefill_tokens": 20,
        },
        "concurrency": {
            "threads": 1,
            "turns": 3,
            "tokens": 50,
            "interval": 0.1,
            "timeout": 600,
            "bursts": BURSTS,
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

"""The benchmark's scenarios, in the order `python -m bench` runs them: each a function
of a `Bench` (bench/harness.py) that returns its figures."""

from collections.abc import Callable
from typing import Any

from bench.harness import Bench, Wanted
from bench.scenarios import concurrency, reads, scale, scaleout, streaming, tokens

Scenario = Callable[[Bench], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "streaming": streaming.run,
    "tokens": tokens.run,
    "reads": reads.run,
    "concurrency": concurrency.run,
    "scaleout": scaleout.run,
    "scale": scale.run,
}

# The servers each scenario will ask for, started all at once up front where the profile
# reuses servers (the smoke's); scale starts its own, on the database it fills.
SERVERS: dict[str, Callable[[Bench], list[Wanted]]] = {
    "streaming": streaming.servers,
    "tokens": tokens.servers,
    "reads": reads.servers,
    "concurrency": concurrency.servers,
    "scaleout": scaleout.servers,
}

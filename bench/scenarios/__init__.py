"""The benchmark's scenarios, in the order `python -m bench` runs them: each a function
of a `Bench` (bench/harness.py) that returns its figures."""

from collections.abc import Callable
from typing import Any

from bench.harness import Bench
from bench.scenarios import concurrency, reads, scale, scaleout, streaming

Scenario = Callable[[Bench], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "streaming": streaming.run,
    "reads": reads.run,
    "concurrency": concurrency.run,
    "scaleout": scaleout.run,
    "scale": scale.run,
}

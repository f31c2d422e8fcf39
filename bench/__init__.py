"""The benchmark suite: `python -m bench` (or `make bench`); see docs/benchmarks.md.
Every piece under test runs in its own process."""

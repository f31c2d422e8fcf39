"""The benchmark suite: `python -m bench` (or `make bench`); see bench/README section in
the project README. Every piece under test runs in its own process."""

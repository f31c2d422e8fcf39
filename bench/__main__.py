"""Run the benchmark suite: `python -m bench [--full] [--only streaming,reads,...]`.

Starts the fake upstream, then for each scenario each contender in its own process
(ours on SQLite and on PostgreSQL, the SDK-documented reference, the bare-SSE floor),
drives it with the load generator (another process), and writes the figures to
bench/results/latest.json and as a table on stdout.
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.harness import Bench, git_commit, machine
from bench.profiles import PROFILES
from bench.scenarios import SCENARIOS, SERVERS

RESULTS = procs.ROOT / "bench" / "results"


def run(bench: Bench, only: list[str]) -> dict[str, Any]:
    """Run the scenarios named in `only`, in that order, on one upstream; the figures
    of all, with the machine, the commit and the targets."""
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": bench.profile_name,
        "machine": machine(),
        "commit": git_commit(),
        "postgres": bench.postgres,
        "load_before": os.getloadavg(),
    }
    with bench.running_upstream(), bench.keeping_servers():
        bench.prestart([w for name in only if name in SERVERS for w in SERVERS[name](bench)])
        for scenario in only:
            print(f"{scenario}:", flush=True)
            started = time.monotonic()
            results[scenario] = SCENARIOS[scenario](bench)
            results[scenario]["seconds"] = round(time.monotonic() - started, 1)
    results["load_after"] = os.getloadavg()
    results["targets"] = report.targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--full", action="store_true", help="the full sizes (--profile full)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--no-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile our server under load with py-spy (pip install py-spy); "
        "collapsed stacks in the run's folder (the profiler's cost is in the figures)",
    )
    args = parser.parse_args(argv)
    profile = "full" if args.full else args.profile
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    bench = Bench(profile, not args.no_postgres, args.out, py_spy=args.py_spy)
    print(f"benchmark profile {profile}; logs in {bench.run_dir}", flush=True)
    results = run(bench, only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    (bench.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.render(results))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

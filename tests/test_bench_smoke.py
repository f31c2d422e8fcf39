"""The benchmark suite (bench/) in a tiny configuration, so it cannot rot unnoticed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_the_benchmark_suite_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--profile", "smoke", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())

    streaming = results["streaming"]["summary"]
    assert set(streaming) == {"ours-sqlite", "reference", "floor"}
    for name in ("ours-sqlite", "reference"):
        assert streaming[name]["turns"] > 0
        assert streaming[name]["cpu_ms_per_turn"] > 0
        assert streaming[name]["frames_per_turn"] > 5
    reads = results["reads"]["summary"]
    assert reads["ours-sqlite"]["requests"] > 0 and reads["reference"]["requests"] > 0
    concurrency = results["concurrency"]["results"]
    assert concurrency["reference"]["verify"]["problems"] == 0
    assert concurrency["ours-sqlite"]["verify"]["threads_checked"] > 0
    assert set(results["scaleout"]["summary"]) == {"1 worker", "2 workers"}
    scale = results["scale"]["results"]["sqlite"]
    for world in ("small_world", "big_world_big_thread", "big_world_small_thread"):
        for how in ("direct", "http"):
            assert scale[world][how]["history"]["p50_ms"] > 0
    assert {target["target"] for target in results["targets"]}
    # The table docs/benchmarks.md shows is printed.
    assert "| server | turns/s | CPU ms/turn" in done.stdout

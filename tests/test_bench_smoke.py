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
    tokens = results["tokens"]["summary"]
    assert set(tokens) == {"ours-sqlite", "reference", "floor"}
    for name in ("ours-sqlite", "reference", "floor"):
        assert tokens[name]["cpu_ms_per_token"] is not None
        for users in (1, 2):
            assert tokens[name][f"first_delta_ms_{users}u"]["p99"] > 0
        assert tokens[name]["errors"] == 0 and tokens[name]["verify_problems"] == 0
    assert tokens["ours-sqlite"]["cpu_ms_per_turn_long"] > 0
    reads = results["reads"]["summary"]
    assert reads["ours-sqlite"]["requests"] > 0 and reads["reference"]["requests"] > 0
    bursts = results["concurrency"]["summary"]
    assert set(bursts) == {"a", "b", "c"}
    assert set(bursts["a"]) == set(bursts["b"]) == {"ours-sqlite", "reference"}
    for burst in bursts.values():
        for figures in burst.values():
            assert figures["errors"] == 0, figures["error_samples"]
            assert figures["verify_problems"] == 0, figures["problem_samples"]
            assert figures["tracebacks"] == 0, figures["bad_log_samples"]
            assert figures["verify"]["turns_stored"] > 0
    # 30 users at once past MAX_OPEN_STREAMS=10: some refused, each with 503 + Retry-After.
    ours_c = bursts["c"]["ours-sqlite"]
    assert ours_c["refused"] > 0 and ours_c["bad_refusals"] == 0, ours_c["refusal_samples"]
    assert ours_c["refused_by_reason"]["open"] >= ours_c["refused"]
    assert bursts["b"]["ours-sqlite"]["rss_peak_mib"] > 0
    scaleout = results["scaleout"]
    assert set(scaleout["summary"]) == {"1 replica", "2 replicas", "1 replica, limits in process"}
    for figures in scaleout["summary"].values():
        assert figures["turns"] > 0 and figures["cpu_ms_per_turn"] > 0
        assert figures["errors"] == 0 and figures["tracebacks"] == 0, figures
    # nginx sent requests to both replicas; Redis's CPU is measured apart.
    assert all(share > 0 for share in scaleout["summary"]["2 replicas"]["served_share"].values())
    assert scaleout["summary"]["1 replica"]["redis_cpu_ms_per_turn"] is not None
    assert scaleout["redis_vs_in_process_cpu"] > 0
    scale = results["scale"]["results"]["sqlite"]
    for world in ("small_world", "big_world_big_thread", "big_world_small_thread"):
        for how in ("direct", "http"):
            assert scale[world][how]["history"]["p50_ms"] > 0
    assert {target["target"] for target in results["targets"]}
    # The table docs/benchmarks.md shows is printed.
    assert "| server | turns/s | CPU ms/turn" in done.stdout
    assert "CPU ms/token" in done.stdout and "first delta p50/p99 ms" in done.stdout

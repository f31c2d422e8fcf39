"""The issue's targets, checked against one run's figures, and the tables printed."""

from typing import Any

STREAMING_CPU_RATIO = 1.0
READS_CPU_RATIO = 0.33
SCALE_RATIO = 1.5
SCALE_P50_MS = 5.0
SCALEOUT_RATIO = 1.6
POOL_SIZE = 10
SCALE_CALLS = ("list", "list_deep", "get", "history", "page_deep")


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def _target(
    name: str, measured: Any, limit: str, met: bool | None, note: str = ""
) -> dict[str, Any]:
    return {"target": name, "measured": measured, "limit": limit, "met": met, "note": note}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if "streaming" in results:
        summary = results["streaming"]["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_turn")
        for name in ("ours-postgres", "ours-sqlite"):
            if name in summary:
                ratio = _ratio(summary[name].get("cpu_ms_per_turn"), ref)
                clean = summary[name]["errors"] == 0 and summary[name]["verify_problems"] == 0
                found.append(
                    _target(
                        f"streaming CPU/turn, {name} vs reference",
                        ratio,
                        f"<= {STREAMING_CPU_RATIO}x",
                        None if ratio is None else ratio <= STREAMING_CPU_RATIO and clean,
                        ""
                        if name == "ours-postgres"
                        else "informational (the issue names PostgreSQL)",
                    )
                )
    if "reads" in results:
        summary = results["reads"]["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_request")
        for name in ("ours-postgres", "ours-sqlite"):
            if name in summary:
                ratio = _ratio(summary[name].get("cpu_ms_per_request"), ref)
                found.append(
                    _target(
                        f"reads CPU/request, {name} vs reference",
                        ratio,
                        f"<= {READS_CPU_RATIO}x",
                        None if ratio is None else ratio <= READS_CPU_RATIO,
                    )
                )
    if "scale" in results:
        for db, data in results["scale"]["results"].items():
            worst_ratio, worst_p50, worst_call = 0.0, 0.0, ""
            for how in ("direct", "http"):
                small = data["small_world"][how]
                for world in ("big_world_big_thread", "big_world_small_thread"):
                    big = data[world][how]
                    for call in SCALE_CALLS:
                        ratio = big[call]["p50_ms"] / small[call]["p50_ms"]
                        if ratio > worst_ratio:
                            worst_ratio, worst_call = ratio, f"{how} {call} ({world})"
                        worst_p50 = max(worst_p50, big[call]["p50_ms"], small[call]["p50_ms"])
            found.append(
                _target(
                    f"scale, {db}: worst big/small p50 ratio",
                    round(worst_ratio, 2),
                    f"<= {SCALE_RATIO}x",
                    worst_ratio <= SCALE_RATIO,
                    worst_call,
                )
            )
            found.append(
                _target(
                    f"scale, {db}: slowest p50 (ms)",
                    round(worst_p50, 2),
                    f"< {SCALE_P50_MS} ms",
                    worst_p50 < SCALE_P50_MS,
                )
            )
    if "concurrency" in results:
        data = results["concurrency"]
        ours = data["results"][data["ours"]]
        ref = data["results"].get("reference", {})
        verify = ours.get("verify", {})
        peak = ours.get("db_connections_peak")
        clean = ours["errors"] == 0 and verify.get("problems", 1) == 0
        pool_ok = peak is None or peak <= data["pool_size"]
        found.append(
            _target(
                f"{data['config']['users']} streams, {data['ours']}: errors / stored / peak "
                "DB connections",
                f"{ours['errors']} errors, {verify.get('problems')} missing, peak {peak} "
                f"connections",
                f"0, 0, <= {data['pool_size']}",
                clean and pool_ok,
                f"p99 first delta {ours['first_delta_ms']['p99']} ms vs reference "
                f"{ref.get('first_delta_ms', {}).get('p99')} ms",
            )
        )
    if "scaleout" in results:
        summary = results["scaleout"]["summary"]
        one = summary.get("1 worker", {}).get("turns_per_s")
        two = summary.get("2 workers", {}).get("turns_per_s")
        ratio = _ratio(two, one)
        found.append(
            _target(
                f"scale-out, {results['scaleout']['ours']}: turns/s 2 workers vs 1",
                ratio,
                f">= {SCALEOUT_RATIO}x",
                None if ratio is None else ratio >= SCALEOUT_RATIO,
            )
        )
    return found


# --- Tables -----------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pair(figures: dict[str, Any] | None, a: str = "p50", b: str = "p99") -> str:
    if not figures or figures.get(a) is None:
        return "-"
    return f"{figures[a]:,.0f} / {figures[b]:,.0f}"


def _rounds(summary: dict[str, Any]) -> int:
    return next(iter(summary.values()))["rounds"] if summary else 0


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    parts = [
        f"Benchmark {results['date']} (profile {results['profile']}, commit "
        f"{results['commit']}), {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}; "
        f"load average before {results['load_before'][0]:.2f}, after "
        f"{results['load_after'][0]:.2f}."
    ]
    if "streaming" in results:
        data = results["streaming"]
        cfg = data["config"]
        summary = data["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_turn")
        rows = []
        for name, s in summary.items():
            stored = "-" if name == "floor" else ("all" if s["verify_problems"] == 0 else "NO")
            rows.append(
                [
                    name,
                    s.get("turns_per_s"),
                    s.get("cpu_ms_per_turn"),
                    _ratio(s.get("cpu_ms_per_turn"), ref),
                    s.get("db_cpu_ms_per_turn"),
                    _pair(s.get("latency_ms")),
                    _pair(s.get("first_delta_ms")),
                    s.get("frames_per_turn"),
                    s["errors"],
                    stored,
                ]
            )
        parts.append(
            f"**Streaming turns**: {cfg['users']} users, {cfg['tokens']}-token answers, "
            f"{cfg['interval'] * 1000:g} ms between tokens, {cfg['threads']} threads x "
            f"{cfg['turns']} turns each; median of {_rounds(summary)} round(s).\n\n"
            + _table(
                [
                    "server",
                    "turns/s",
                    "CPU ms/turn",
                    "vs reference",
                    "DB CPU ms/turn",
                    "latency p50/p99 ms",
                    "first delta p50/p99 ms",
                    "frames/turn",
                    "errors",
                    "stored",
                ],
                rows,
            )
        )
    if "reads" in results:
        data = results["reads"]
        cfg = data["config"]
        summary = data["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_request")
        rows = []
        for name, s in summary.items():
            by_kind = s.get("latency_p50_ms_by_kind") or {}
            rows.append(
                [
                    name,
                    s.get("requests_per_s"),
                    s.get("cpu_ms_per_request"),
                    _ratio(s.get("cpu_ms_per_request"), ref),
                    s.get("db_cpu_ms_per_request"),
                    _pair(s.get("latency_ms")),
                    " / ".join(
                        f"{by_kind.get(k):.1f}" if by_kind.get(k) is not None else "-"
                        for k in ("threads.list", "threads.get_by_id", "items.list")
                    ),
                    s["errors"],
                ]
            )
        parts.append(
            f"**Reads**: {cfg['users']} users x {cfg['requests']} requests, "
            "`threads.list` / `threads.get_by_id` / `items.list` in turn, over "
            f"{cfg['prefill_threads']} threads of {cfg['prefill_turns'] * 2} items.\n\n"
            + _table(
                [
                    "server",
                    "requests/s",
                    "CPU ms/request",
                    "vs reference",
                    "DB CPU ms/request",
                    "latency p50/p99 ms",
                    "p50 ms list / get / items",
                    "errors",
                ],
                rows,
            )
        )
    if "concurrency" in results:
        data = results["concurrency"]
        cfg = data["config"]
        rows = []
        for name, s in data["results"].items():
            verify = s.get("verify", {})
            rows.append(
                [
                    name,
                    s.get("turns"),
                    s.get("peak_streams"),
                    s.get("errors"),
                    "all" if verify.get("problems") == 0 else f"{verify.get('problems')} missing",
                    _pair(s.get("first_delta_ms")),
                    _pair(s.get("latency_ms")),
                    s.get("cpu_ms_per_turn"),
                    s.get("db_connections_peak"),
                ]
            )
        parts.append(
            f"**Concurrency**: {cfg['users']} users streaming at once on one worker, "
            f"{cfg['tokens']}-token answers at {1 / cfg['interval']:g} tokens/s, "
            f"{cfg['turns']} turns each, started over {cfg['ramp']:g} s; pool size "
            f"{data['pool_size']}.\n\n"
            + _table(
                [
                    "server",
                    "turns",
                    "peak streams",
                    "errors",
                    "stored",
                    "first delta p50/p99 ms",
                    "latency p50/p99 ms",
                    "CPU ms/turn",
                    "peak DB connections",
                ],
                rows,
            )
        )
    if "scaleout" in results:
        data = results["scaleout"]
        cfg = data["config"]
        summary = data["summary"]
        one = summary.get("1 worker", {}).get("turns_per_s")
        rows = [
            [
                name,
                s.get("turns_per_s"),
                _ratio(s.get("turns_per_s"), one),
                s.get("cpu_ms_per_turn"),
                _pair(s.get("first_delta_ms")),
                s["errors"],
            ]
            for name, s in summary.items()
        ]
        parts.append(
            f"**Scale-out** ({data['ours']}): {cfg['users']} users, {cfg['tokens']}-token "
            f"answers, {cfg['interval'] * 1000:g} ms between tokens.\n\n"
            + _table(
                [
                    "workers",
                    "turns/s",
                    "vs 1 worker",
                    "CPU ms/turn",
                    "first delta p50/p99 ms",
                    "errors",
                ],
                rows,
            )
        )
    if "scale" in results:
        data = results["scale"]
        cfg = data["config"]
        rows = []
        for db, r in data["results"].items():
            for call in SCALE_CALLS:
                small = r["small_world"]
                big = r["big_world_big_thread"]
                other = r["big_world_small_thread"]
                rows.append(
                    [
                        db,
                        call,
                        small["direct"][call]["p50_ms"],
                        big["direct"][call]["p50_ms"],
                        other["direct"][call]["p50_ms"],
                        small["http"][call]["p50_ms"],
                        big["http"][call]["p50_ms"],
                        other["http"][call]["p50_ms"],
                    ]
                )
        parts.append(
            f"**Scale**: p50 ms of each call, for a user with {cfg['small_threads']} threads "
            f"on its {cfg['small_items']}-item thread (small), and for a user with "
            f"{cfg['threads']:,} threads on its {cfg['big_items']:,}-item thread (big) and on "
            f"its {cfg['small_items']}-item thread (big user, small thread); "
            f"{cfg['total_items']:,} items in the store. Calls interleaved, {cfg['repeat']} "
            "of each. list: first page of 20 threads; list_deep: 20 threads after one in the "
            "middle of the list; get: the thread and its first 20 items; history: the newest "
            "30 items; page_deep: 20 items after one in the middle of the thread.\n\n"
            + _table(
                [
                    "db",
                    "call",
                    "store: small",
                    "store: big",
                    "store: big user, small thread",
                    "HTTP: small",
                    "HTTP: big",
                    "HTTP: big user, small thread",
                ],
                rows,
            )
        )
    if results.get("targets"):
        rows = [
            [
                t["target"],
                t["measured"],
                t["limit"],
                {True: "met", False: "NOT met", None: "-"}[t["met"]],
                t["note"],
            ]
            for t in results["targets"]
        ]
        parts.append("**Targets**\n\n" + _table(["target", "measured", "limit", "", "note"], rows))
    return "\n\n".join(parts)

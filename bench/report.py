"""The issue's targets, checked against one run's figures, and the tables printed."""

from typing import Any

STREAMING_CPU_RATIO = 1.0
STREAMING_CPU_MOONSHOT = 0.5
READS_CPU_RATIO = 0.33
TOKEN_CPU_RATIO = 0.3
FIRST_DELTA_RATIO = 1.0
BURST_FIRST_DELTA_RATIO = 0.5
RSS_LIMIT_MIB = 400.0
SCALE_RATIO = 1.5
SCALE_P50_MS = 5.0
SCALEOUT_RATIO = 1.6
# CPU per turn with the limits in Redis, against in the process.
REDIS_LIMITS_CPU_RATIO = 1.05
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


OURS = ("ours-postgres", "ours-sqlite")
MET = {True: "met", False: "NOT met", None: "-"}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if "streaming" in results:
        summary = results["streaming"]["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_turn")
        for name in OURS:
            if name in summary:
                ratio = _ratio(summary[name].get("cpu_ms_per_turn"), ref)
                clean = summary[name]["errors"] == 0 and summary[name]["verify_problems"] == 0
                for limit, kind in (
                    (STREAMING_CPU_RATIO, "must"),
                    (STREAMING_CPU_MOONSHOT, "moonshot"),
                ):
                    found.append(
                        _target(
                            f"streaming CPU/turn, {name} vs reference ({kind})",
                            ratio,
                            f"<= {limit}x",
                            None if ratio is None else ratio <= limit and clean,
                            "" if clean else "errors or turns not stored",
                        )
                    )
    if "tokens" in results:
        found += _token_targets(results["tokens"])
    if "reads" in results:
        summary = results["reads"]["summary"]
        ref = summary.get("reference", {}).get("cpu_ms_per_request")
        for name in OURS:
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
        found += _burst_targets(results["concurrency"])
    if "scaleout" in results:
        summary = results["scaleout"]["summary"]
        ours = results["scaleout"]["ours"]
        one = summary.get("1 replica", {}).get("turns_per_s")
        two = summary.get("2 replicas", {}).get("turns_per_s")
        ratio = _ratio(two, one)
        found.append(
            _target(
                f"scale-out, {ours}: turns/s 2 replicas vs 1 (behind nginx)",
                ratio,
                f">= {SCALEOUT_RATIO}x",
                None if ratio is None else ratio >= SCALEOUT_RATIO,
            )
        )
        redis = results["scaleout"].get("redis_vs_in_process_cpu")
        found.append(
            _target(
                f"scale-out, {ours}: CPU/turn, limits in Redis vs in the process",
                redis,
                f"<= {REDIS_LIMITS_CPU_RATIO}x",
                None if redis is None else redis <= REDIS_LIMITS_CPU_RATIO,
            )
        )
    return found


def _token_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    summary = data["summary"]
    ref = summary.get("reference", {})
    for name in OURS:
        if name not in summary:
            continue
        ours = summary[name]
        clean = ours["errors"] == 0 and ours["verify_problems"] == 0
        ratio = _ratio(ours.get("cpu_ms_per_token"), ref.get("cpu_ms_per_token"))
        found.append(
            _target(
                f"CPU per streamed token, {name} vs reference",
                ratio,
                f"<= {TOKEN_CPU_RATIO}x",
                None if ratio is None else ratio <= TOKEN_CPU_RATIO and clean,
                f"{_ms(ours.get('cpu_ms_per_token'), 4)} vs "
                f"{_ms(ref.get('cpu_ms_per_token'), 4)} ms/token",
            )
        )
        for run in data["config"]["latency_runs"]:
            key = f"first_delta_ms_{run['users']}u"
            mine = (ours.get(key) or {}).get("p99")
            theirs = (ref.get(key) or {}).get("p99")
            ratio = _ratio(mine, theirs)
            users = f"{run['users']} user{'s' if run['users'] != 1 else ''}"
            found.append(
                _target(
                    f"first delta p99 at {users}, {name} vs reference",
                    ratio,
                    f"<= {FIRST_DELTA_RATIO}x",
                    None if ratio is None else ratio <= FIRST_DELTA_RATIO,
                    f"{_ms(mine)} vs {_ms(theirs)} ms",
                )
            )
    return found


def _burst_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    cfg, summary, name = data["config"], data["summary"], data["ours"]
    bursts = {burst["name"]: burst for burst in cfg["bursts"]}
    tracebacks = 0
    peaks: list[int] = []
    for burst_name, burst in bursts.items():
        ours = summary.get(burst_name, {}).get(name)
        if ours is None:
            continue
        tracebacks += ours["tracebacks"]
        verify = ours.get("verify", {})
        missing = ours["verify_problems"]
        what = _burst_label(burst)
        if burst.get("reference"):
            found.append(
                _target(
                    f"burst ({burst_name}) {what}, {name}: errors / threads missing turns",
                    f"{ours['errors']} errors, {missing} threads missing turns",
                    "0, 0",
                    ours["errors"] == 0 and missing == 0,
                    f"{ours.get('refused')} refused before the stream"
                    + _kinds(ours.get("error_kinds")),
                )
            )
            mine = (ours.get("first_delta_ms") or {}).get("p99")
            ref = summary[burst_name].get("reference", {})
            theirs = (ref.get("first_delta_ms") or {}).get("p99")
            ratio = _ratio(mine, theirs)
            found.append(
                _target(
                    f"burst ({burst_name}) first delta p99, {name} vs reference",
                    ratio,
                    f"<= {BURST_FIRST_DELTA_RATIO}x",
                    None if ratio is None else ratio <= BURST_FIRST_DELTA_RATIO,
                    f"{_ms(mine)} vs {_ms(theirs)} ms",
                )
            )
        else:
            clean = ours["errors"] == 0 and ours["bad_refusals"] == 0 and missing == 0
            found.append(
                _target(
                    f"burst ({burst_name}) {what}, {name}: excess refused cleanly, all "
                    "admitted stored",
                    f"{ours.get('refused')} refused ({ours['bad_refusals']} badly), "
                    f"{ours['errors']} errors, {_stored(verify)} admitted turns stored",
                    "503 + Retry-After, 0 errors, all stored",
                    clean,
                    f"{ours.get('turns')} turns streamed" + _kinds(ours.get("error_kinds")),
                )
            )
        if burst.get("memory"):
            rss = ours.get("rss_peak_mib")
            found.append(
                _target(
                    f"resident memory at the peak of burst ({burst_name}), {name}",
                    f"{_ms(rss)} MiB",
                    f"<= {RSS_LIMIT_MIB:g} MiB",
                    None if rss is None else rss <= RSS_LIMIT_MIB,
                    f"{ours.get('peak_streams')} streams open at once",
                )
            )
        if ours.get("db_connections_peak") is not None:
            peaks.append(ours["db_connections_peak"])
    if peaks:
        found.append(
            _target(
                f"peak DB connections of {name} during the bursts",
                max(peaks),
                f"<= {data['pool_size']} (the pool)",
                max(peaks) <= data["pool_size"],
            )
        )
    found.append(
        _target(
            f"tracebacks in {name}'s log during the bursts",
            tracebacks,
            "0",
            tracebacks == 0,
        )
    )
    return found


def _burst_label(burst: dict[str, Any]) -> str:
    if burst["ramp"]:
        return f"{burst['users']:,} streams over {burst['ramp']:g} s"
    return f"{burst['users']:,} streams at once"


def _kinds(kinds: dict[str, int] | None) -> str:
    if not kinds:
        return ""
    return " (" + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")"


def _stored(verify: dict[str, Any]) -> str:
    stored, checked = verify.get("turns_stored"), verify.get("turns_checked")
    if stored is None or checked is None:
        return "-"
    return f"{stored:,.0f} / {checked:,.0f}"


def _ms(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


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
    if "tokens" in results:
        parts += _token_tables(results["tokens"])
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
        parts.append(_burst_table(results["concurrency"]))
    if "scaleout" in results:
        data = results["scaleout"]
        cfg = data["config"]
        summary = data["summary"]
        one = summary.get("1 replica", {}).get("turns_per_s")
        rows = [
            [
                name,
                s.get("turns_per_s"),
                _ratio(s.get("turns_per_s"), one),
                s.get("cpu_ms_per_turn"),
                s.get("proxy_cpu_ms_per_turn"),
                s.get("redis_cpu_ms_per_turn"),
                " / ".join(f"{v:.0%}" for v in (s.get("served_share") or {}).values() if v),
                _pair(s.get("first_delta_ms")),
                s["errors"],
            ]
            for name, s in summary.items()
        ]
        parts.append(
            f"**Scale-out** ({data['ours']}): {cfg['users']} users, {cfg['tokens']}-token "
            f"answers, {cfg['interval'] * 1000:g} ms between tokens."
            + "".join(f" {data[k]}." for k in ("skipped", "redis") if data.get(k))
            + "\n\n"
            + _table(
                [
                    "behind nginx",
                    "turns/s",
                    "vs 1 replica",
                    "CPU ms/turn",
                    "nginx CPU ms/turn",
                    "Redis CPU ms/turn",
                    "requests per replica",
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
            [t["target"], t["measured"], t["limit"], MET[t["met"]], t["note"]]
            for t in results["targets"]
        ]
        parts.append("**Targets**\n\n" + _table(["target", "measured", "limit", "", "note"], rows))
    return "\n\n".join(parts)


def _token_tables(data: dict[str, Any]) -> list[str]:
    cfg, summary = data["config"], data["summary"]
    ref = summary.get("reference", {})
    rows = []
    for name, s in summary.items():
        stored = "-" if name == "floor" else ("all" if s["verify_problems"] == 0 else "NO")
        rows.append(
            [
                name,
                s.get("cpu_ms_per_turn_short"),
                s.get("cpu_ms_per_turn_long"),
                _ms(s.get("cpu_ms_per_token"), 4),
                _ratio(s.get("cpu_ms_per_token"), ref.get("cpu_ms_per_token")),
                f"{_ms(s.get('frames_per_turn_short'))} / {_ms(s.get('frames_per_turn_long'))}",
                s["errors"],
                stored,
            ]
        )
    tables = [
        f"**CPU per streamed token**: {cfg['users']} users x {cfg['threads']} thread(s) x "
        f"{cfg['turns']} turns with {cfg['short']}-token answers, then the same with "
        f"{cfg['long']}-token answers, {cfg['interval'] * 1000:g} ms between tokens, on one "
        f"server; CPU ms per extra token = (CPU/turn {cfg['long']} - CPU/turn "
        f"{cfg['short']}) / {cfg['long'] - cfg['short']}; median of {_rounds(summary)} "
        "round(s).\n\n"
        + _table(
            [
                "server",
                f"CPU ms/turn, {cfg['short']} tokens",
                f"CPU ms/turn, {cfg['long']} tokens",
                "CPU ms/token",
                "vs reference",
                "frames/turn",
                "errors",
                "stored",
            ],
            rows,
        )
    ]
    runs = cfg["latency_runs"]
    rows = []
    for name, s in summary.items():
        row: list[Any] = [name]
        for run in runs:
            key = f"first_delta_ms_{run['users']}u"
            row.append(_pair(s.get(key)))
            mine = (s.get(key) or {}).get("p99")
            row.append(_ratio(mine, (ref.get(key) or {}).get("p99")))
            row.append(s.get(f"turns_{run['users']}u"))
        rows.append(row)
    header = ["server"]
    described = []
    for run in runs:
        users = f"{run['users']} user{'s' if run['users'] != 1 else ''}"
        header += [f"{users}: first delta p50/p99 ms", "p99 vs reference", "turns"]
        described.append(f"{users} x {run['threads']} threads x {run['turns']} turns")
    tables.append(
        f"**First delta**: time from sending a turn to its first text delta, "
        f"{cfg['latency_tokens']}-token answers, {cfg['latency_interval'] * 1000:g} ms "
        f"between tokens; {'; '.join(described)}; median of {_rounds(summary)} round(s) "
        "(with few turns, p99 is the slowest).\n\n" + _table(header, rows)
    )
    return tables


def _burst_table(data: dict[str, Any]) -> str:
    cfg, summary = data["config"], data["summary"]
    rows = []
    rounds = 0
    for burst in cfg["bursts"]:
        for name, s in summary.get(burst["name"], {}).items():
            rounds = max(rounds, s["rounds"])
            rows.append(
                [
                    f"({burst['name']}) {_burst_label(burst)}",
                    name,
                    s.get("turns"),
                    f"{_ms(s.get('refused'))} ({s['bad_refusals']} bad)",
                    f"{s['errors']}{_kinds(s.get('error_kinds'))}",
                    _stored(s.get("verify", {})),
                    _pair(s.get("first_delta_ms")),
                    _pair(s.get("latency_ms")),
                    s.get("peak_streams"),
                    s.get("rss_peak_mib"),
                    s.get("cpu_ms_per_turn"),
                    s.get("db_connections_peak"),
                    s["tracebacks"],
                ]
            )
    return (
        f"**Bursts** on one worker, {data['ours']} with its default pool "
        f"({data['pool_size']}) and admission: each user streams {cfg['turns']} turn(s) on "
        f"one thread, {cfg['tokens']}-token answers at {1 / cfg['interval']:g} tokens/s; ours "
        "with a token per user (AUTH_MODE=jwt). refused: 503 + Retry-After before the "
        "stream (bad: without Retry-After, or with a stream); errors: error events, lost "
        "connections, timeouts, other statuses; stored: admitted turns read back whole; "
        f"median of {rounds} round(s), errors and tracebacks "
        f"summed.{' Note: ' + cfg['note'] + '.' if cfg.get('note') else ''}\n\n"
        + _table(
            [
                "burst",
                "server",
                "turns done",
                "refused",
                "errors",
                "stored / admitted",
                "first delta p50/p99 ms",
                "latency p50/p99 ms",
                "peak streams",
                "peak RSS MiB",
                "CPU ms/turn",
                "peak DB connections",
                "tracebacks",
            ],
            rows,
        )
    )

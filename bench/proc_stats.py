"""CPU time and resident memory of processes, from /proc; nothing heavy imported, so
the load generator starts quickly.

CPU time comes from /proc/<pid>/stat (utime + stime, every thread of the process),
summed over the process and its descendants, so a multi-worker uvicorn counts all
its workers; memory likewise from /proc/<pid>/status (VmRSS).
"""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _all_stats() -> dict[int, tuple[int, float]]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    return stats


def _tree(roots: list[int], stats: dict[int, tuple[int, float]]) -> set[int]:
    """`roots` and all their descendants that are alive in `stats`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds used so far by `roots` and all their descendants."""
    stats = _all_stats()
    return sum(stats[pid][1] for pid in _tree(roots, stats))


def _rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # in kB
    return 0


def tree_rss_bytes(roots: list[int]) -> int:
    """Resident memory of `roots` and all their descendants, in bytes, now."""
    return sum(_rss_bytes(pid) for pid in _tree(roots, _all_stats()))


def postgres_backend_cpu_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (0 if not local)."""
    total = 0.0
    marker = f" {database} ".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"postgres: ") and marker in cmdline.replace(b"\0", b" "):
            stat = _stat(int(entry))
            total += stat[1] if stat else 0.0
    return total

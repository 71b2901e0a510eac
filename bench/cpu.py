"""CPU seconds of process trees, from /proc (pure reads, no sampling thread)."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_stats() -> dict[int, list[int]]:
    """Every process's /proc/<pid>/stat fields after the command name (ppid first)."""
    stats = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stats[int(proc.name)] = [int(f) for f in (proc / "stat").read_text().rsplit(")", 1)[1].split()[1:15]]
            except (OSError, ValueError):
                continue
    return stats


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU (user + system) of ``pids`` and their live descendants, each with what it has reaped (gunicorn's
    workers or PostgreSQL's backends that exited: the parent's ``cutime``/``cstime``)."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(fields[0], []).append(pid)
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        fields = stats[pid]  # fields[10:14]: utime, stime, and cutime, cstime (its reaped children's)
        total += fields[10] + fields[11] + fields[12] + fields[13]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU (user + system) of each live child of ``pid`` by pid (e.g. each gunicorn worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    return {child: (fields[10] + fields[11]) / tick for child, fields in _proc_stats().items() if fields[0] == pid}

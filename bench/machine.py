"""The whole machine's CPU between two moments (/proc/stat), for benches whose figures are bound by two cores
shared between the load generator, the servers and PostgreSQL: a figure beside "how busy the machine was" says
whether more parallelism could have helped."""

from __future__ import annotations

import os


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (idle and iowait count as not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How much of every core was busy between two ``cpu_times`` readings: 100 means no idle core was left."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100 * busy / total, 1) if total else float("nan")


def cpu_seconds(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Busy CPU seconds of the whole machine (every core, every process) between two ``cpu_times`` readings."""
    return (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")

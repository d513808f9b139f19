"""How many threads PyTorch trains with: no more than the CPUs this process may really use.

PyTorch's default is every core of the machine.  Where another process keeps a core busy,
its spinning worker threads fight that process for the core and a small model trains several
times slower than on one thread; in a container the machine's cores are not this process's.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

__all__ = ["usable_cpus", "busy_elsewhere", "training_threads"]


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup quota and by
    ``OMP_NUM_THREADS`` when set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cpus = min(cpus, int(omp))
    return max(1, cpus)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks so far of the given CPUs, from their ``cpuN`` lines in /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
            total += sum(ticks)
    return busy, total


def busy_elsewhere(window_s: float = 0.1) -> int:
    """Cores that other processes kept busy over a short window: the busy time of the CPUs this
    process may run on, less this process's own CPU time, in whole cores."""
    if not hasattr(os, "sched_getaffinity"):
        return 0
    cpus = os.sched_getaffinity(0)
    try:
        busy0, total0 = _cpu_ticks(cpus)
        own0 = sum(os.times()[:2])
        time.sleep(window_s)
        busy1, total1 = _cpu_ticks(cpus)
        own1 = sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        return 0
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    wall = (total1 - total0) * tick / len(cpus)  # the window as the CPUs counted it, in seconds
    if wall <= 0:
        return 0
    others = (busy1 - busy0) * tick - (own1 - own0)  # CPU-seconds spent outside this process
    return max(0, round(others / wall))


def training_threads(setting: int | None) -> int:
    """``train.threads`` if set; else the usable CPUs less those other processes keep busy, at
    least one.  The trainer asks again at every epoch (0.1 s), so a job that starts later is seen."""
    if setting is not None:
        return setting
    usable = usable_cpus()
    return max(1, usable - min(busy_elsewhere(), usable))

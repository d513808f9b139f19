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


def _own_running() -> int:
    """This process's threads that are running or runnable now (state R)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            count += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return count


def busy_elsewhere(samples: int = 5, interval_s: float = 0.01) -> int:
    """Runnable threads of other processes right now: the median, over a few samples, of the
    running count in ``/proc/loadavg`` less this process's own running threads."""
    counts = []
    for _ in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            counts.append(max(0, running - _own_running()))
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def training_threads(setting: int | None) -> int:
    """``train.threads`` if set; else the usable CPUs less those other processes keep busy, at
    least one.  The trainer asks again at every epoch, so a job that starts later is seen."""
    if setting is not None:
        return setting
    usable = usable_cpus()
    return max(1, usable - min(busy_elsewhere(), usable))

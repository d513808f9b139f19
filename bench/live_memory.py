"""What a live index of random vectors holds in memory, per index kind, and how long it takes to build.

    python bench/live_memory.py [--items 1000000] [--dim 64] [--kinds flat ivf_sq8]

Each kind is measured in its own process (RSS growth while building, then a search's time).
To compare with another tree: PYTHONPATH=<tree>/src python bench/live_memory.py.  Data: random.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_ONE = """
import sys, time
import numpy as np
from embrecall.config import IndexConfig
from embrecall.index.live import LiveIndex
kind, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
v = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
ids = [f"i{i}" for i in range(n)]
base = rss()
t = time.perf_counter()
live = LiveIndex(ids, v, None, IndexConfig(kind=kind))
built = time.perf_counter() - t
t = time.perf_counter()
for q in v[:64] + 0.01:
    live.search(q, 100)
print(f"| {kind} | {rss() - base:.0f} | {built:.1f} | {(time.perf_counter() - t) / 64 * 1e3:.2f} |")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivf_sq8"])
    args = ap.parse_args()
    print("| kind | index memory MB | built in s | search ms |\n| --- | --- | --- | --- |")
    for kind in args.kinds:
        out = subprocess.run(
            [sys.executable, "-c", _ONE, kind, str(args.items), str(args.dim)], capture_output=True, text=True
        )
        print(out.stdout.strip() or f"| {kind} | failed: {out.stderr.strip()[-200:]} | | |")


if __name__ == "__main__":
    main()

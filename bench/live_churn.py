"""Memory of the live index under endless updates of the same items (the service's change feed).

    python bench/live_churn.py [--items 20000] [--updates 1000000] [--kinds flat hnsw ivf_sq8]

For each index kind: a LiveIndex over ``--items`` random 64-d vectors with a category attribute,
then ``--updates`` upserts of items drawn from the same catalog (new vector, new category).
Prints the process RSS and the index's own slots before and after, and the upserts per second.
A flat index overwrites in place; HNSW and IVF write a new slot and compact once retired slots
outnumber live ones, so their slots stay between 1x and 2x the catalog.  Data: synthetic.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from embrecall.config import IndexConfig
from embrecall.index.live import LiveIndex

D = 64


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def churn(kind: str, n: int, updates: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ids = [f"i{j}" for j in range(n)]
    vectors = rng.standard_normal((n, D)).astype(np.float32)
    attrs = pd.DataFrame({"category": [f"c{j % 50}" for j in range(n)]}, index=pd.Index(ids, dtype=object))
    index = LiveIndex(ids, vectors, attrs, IndexConfig(kind=kind), ["category"])
    gc.collect()
    start_rss, start_slots = _rss_mb(), len(index._alive)
    picks = rng.integers(0, n, updates)
    fresh = rng.standard_normal((4096, D)).astype(np.float32)
    t = time.perf_counter()
    for u, j in enumerate(picks):
        index.upsert(ids[j], fresh[u % 4096], {"category": f"c{u % 50}"})
    seconds = time.perf_counter() - t
    gc.collect()
    end_rss = _rss_mb()
    return {
        "start_rss": start_rss,
        "end_rss": end_rss,
        "ratio": end_rss / start_rss,
        "start_slots": start_slots,
        "end_slots": len(index._alive),
        "upserts_per_s": updates / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf_sq8"])
    args = parser.parse_args()
    table = Table(
        title=f"live index: {args.updates:,} upserts of {args.items:,} items (d={D}), "
        f"{os.cpu_count()} cores, process RSS in MB"
    )
    for column in ("kind", "RSS at start", "RSS after", "after / start", "slots at start", "slots after", "upserts/s"):
        table.add_column(column, justify="right")
    for kind in args.kinds:  # each kind in a fresh process would isolate RSS best; run one kind per call for that
        r = churn(kind, args.items, args.updates)
        table.add_row(
            kind,
            f"{r['start_rss']:.0f}",
            f"{r['end_rss']:.0f}",
            f"{r['ratio']:.3f}",
            f"{r['start_slots']:,}",
            f"{r['end_slots']:,}",
            f"{r['upserts_per_s']:,.0f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()

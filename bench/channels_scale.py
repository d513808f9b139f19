"""item2vec and ItemCF fitted on 10M synthetic events (1M items): time and peak memory.

    python bench/channels_scale.py [--events 10000000 --items 1000000 --users 200000]
                                   [--channels itemcf] [--window 10]

The log is generated to Parquet first; each channel is then fitted in its own process, so the
peak RSS reported is that channel's alone (reading the Parquet log included).
Data: synthetic (power-law popularity inside categories, sessions), not a quality figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from synthetic_scale import (  # bench/ is on sys.path when run as a script
    generate,
    size_args,
)

FIT = """
import resource, sys, time, pandas as pd
from embrecall.config import Item2VecConfig, ItemCFConfig
from embrecall.models.item2vec import Item2Vec
from embrecall.models.itemcf import ItemCF
from embrecall.data.log import MemoryLog
events = pd.read_parquet(sys.argv[2])
started = time.perf_counter()
if sys.argv[1] == "item2vec":
    Item2Vec(Item2VecConfig(epochs=3, window=5, session_gap=1800)).fit(MemoryLog(events))
else:
    ItemCF(ItemCFConfig(window=int(sys.argv[3]))).fit(MemoryLog(events))
print(f"{time.perf_counter() - started:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", nargs="+", default=["item2vec", "itemcf"], choices=["item2vec", "itemcf"])
    parser.add_argument("--window", type=int, default=5, help="ItemCF's window")
    args = size_args(__doc__, parser)
    table = Table(
        title=f"channel fitting on {args.events:,} synthetic events, {args.items:,} items, {os.cpu_count()} cores"
    )
    for col in ("channel", "settings", "fit s", "wall s (incl. reading)", "peak RSS MB"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        generate(args, tmp)
        settings = {
            "item2vec": "skip-gram, 64-d, window 5, 3 epochs, 2 workers",
            "itemcf": f"window {args.window}, top-200, float32 blocks",
        }
        for name in args.channels:
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", FIT, name, str(Path(tmp) / "events.parquet"), str(args.window)],
                check=True,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            fit_s, peak_mb = proc.stdout.strip().splitlines()[-1].split()
            table.add_row(name, settings[name], fit_s, f"{wall:.1f}", peak_mb)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

"""item2vec and ItemCF fitted on 10M synthetic events (1M items) from the log in memory and from
the same log read into user shards: time and peak memory of each, in one run.

    python bench/channels_scale.py [--events 10000000 --items 1000000 --users 200000]
                                   [--channels item2vec itemcf] [--window 5] [--shards 16]

The log is generated to Parquet first and read into ``--shards`` user shards (``data.shards``,
as `embrecall train` reads a log larger than memory; not timed here); each channel is then
fitted in its own process, once on the whole log read into memory and once on the shards'
train + validation events (each user's last event, the test target, left out), so the peak
RSS reported is that fit's alone (reading included).
Data: synthetic (power-law popularity inside categories, sessions), not a quality figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from synthetic_scale import (  # bench/ is on sys.path when run as a script
    generate,
    size_args,
)

CONFIG = """
[data]
format = "table"
path = "{folder}/events.parquet"
[data.shards]
count = {shards}
folder = "{folder}/shards"
[channels.item2vec]
epochs = 3
window = 5
session_gap = 1800
[channels.itemcf]
window = {window}
"""

FIT = """
import resource, sys, time, pandas as pd
from embrecall.config import load_config
from embrecall.data.log import MemoryLog
from embrecall.data.shards import prepare_shards
from embrecall.models.fitting import fit_channel
name, where, config = sys.argv[1:4]
cfg = load_config(config)
started = time.perf_counter()
log = prepare_shards(cfg).log("train_full") if where == "shards" else MemoryLog(pd.read_parquet(cfg.data.path))
fit_channel(name, cfg, log, None, show_progress=False)
print(f"{len(log)} {time.perf_counter() - started:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", nargs="+", default=["item2vec", "itemcf"], choices=["item2vec", "itemcf"])
    parser.add_argument("--window", type=int, default=5, help="ItemCF's window")
    parser.add_argument("--shards", type=int, default=16)
    args = size_args(__doc__, parser)
    table = Table(
        title=f"channel fitting on {args.events:,} synthetic events, {args.items:,} items, {os.cpu_count()} cores"
    )
    for col in ("channel", "settings", "log", "events", "wall s (incl. reading)", "peak RSS MB"):
        table.add_column(col, justify="right")
    settings = {
        "item2vec": "skip-gram, 64-d, window 5, 3 epochs, 2 workers",
        "itemcf": f"window {args.window}, top-200, float32 blocks",
    }
    with tempfile.TemporaryDirectory() as tmp:
        generate(args, tmp)
        config = Path(tmp) / "channels.toml"
        config.write_text(CONFIG.format(folder=tmp, shards=args.shards, window=args.window))
        fit = [sys.executable, "-c", FIT]
        subprocess.run([*fit, "popular", "shards", str(config)], check=True, capture_output=True)  # shards written
        for name in args.channels:
            for where in ("memory", "shards"):
                proc = subprocess.run([*fit, name, where, str(config)], check=True, capture_output=True, text=True)
                events, wall, peak_mb = proc.stdout.strip().splitlines()[-1].split()
                log = "in memory" if where == "memory" else f"{args.shards} shards"
                table.add_row(name, settings[name], log, f"{int(events):,}", wall, peak_mb)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

"""Scale of the synthetic generator: 10M events over 1M items written as Parquet.

    python bench/synthetic_scale.py [--events 10000000 --items 1000000 --users 200000]

Runs the generation in a child process so the peak RSS is that of generation alone, and prints
time, peak memory and what was written.  Data: synthetic (power-law popularity, sessions).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table


def size_args(doc: str | None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The synthetic log's size from the command line (shared by the scale benchmarks), beside
    the options a benchmark adds to ``parser``."""
    parser = parser or argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    return parser.parse_args()


def generate(args: argparse.Namespace, out: str) -> float:
    """Write the synthetic log into ``out`` with `embrecall generate` in a child process; seconds taken."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "embrecall.cli",
            "generate",
            "--out",
            out,
            "--events",
            str(args.events),
            "--items",
            str(args.items),
            "--users",
            str(args.users),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    args = size_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = generate(args, tmp)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        events = pq.ParquetFile(Path(tmp) / "events.parquet").metadata.num_rows
        items = pq.ParquetFile(Path(tmp) / "items.parquet").metadata.num_rows
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    table = Table(title=f"synthetic generator, {os.cpu_count()} cores")
    for col in ("events", "items", "users", "seconds", "peak RSS MB", "Parquet MB"):
        table.add_column(col, justify="right")
    table.add_row(f"{events:,}", f"{items:,}", f"{args.users:,}", f"{seconds:.1f}", f"{peak_mb:.0f}", f"{size_mb:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

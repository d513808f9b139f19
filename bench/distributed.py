"""One rank against two (torchrun, gloo on CPU) on the same data and seed: loss curves and speed.

    python bench/distributed.py [--events 120000] [--epochs 3]

Trains the synthetic log three ways with `embrecall train` (validation each epoch, no refit):
one process with batch 2B, two ranks with batch B each (`torchrun --standalone --nproc-per-node 2`),
and one process with batch B.  Prints each epoch's training loss and validation HR@50, the
examples (pairs) per second over all ranks, and the wall time of the whole command.  Two ranks with
B should match one with 2B up to summation order; on a 2-core machine they share the cores, so
little speed-up is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

BATCH = 256


def _train(out: Path, nproc: int, batch: int, args: argparse.Namespace) -> tuple[dict, float]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "embrecall.cli",
        "train",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"train.batch_size={batch}",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        f"train.patience={args.epochs}",
        "--set",
        "train.refit=false",
        "--set",
        f"data.synthetic.events={args.events}",
        "--set",
        f"data.synthetic.users={args.events // 30}",
        "--set",
        f"data.synthetic.items={args.events // 60}",
        "--set",
        "channels.serve={two_tower: 1.0}",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(2 // nproc)})
    seconds = time.perf_counter() - started
    manifest = next(out.glob("*/manifest.json"))
    return json.loads(manifest.read_text())["training"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ways = {
        f"1 rank, batch {2 * BATCH}": (1, 2 * BATCH),
        f"2 ranks, batch {BATCH} each": (2, BATCH),
        f"1 rank, batch {BATCH}": (1, BATCH),
    }
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (nproc, batch)) in enumerate(ways.items()):
            runs[name] = _train(Path(tmp) / str(i), nproc, batch, args)
    table = Table(title=f"synthetic log, {args.events:,} events: 1 rank vs 2 ranks (gloo, this machine)")
    table.add_column("epoch")
    for name in ways:
        table.add_column(f"{name}: loss / valid HR@50", justify="right")
    for e in range(args.epochs):
        table.add_row(
            str(e + 1), *(f"{r['log'][e]['loss']:.5f} / {r['log'][e]['HR@50']:.4f}" for r, _ in runs.values())
        )
    table.add_row(
        "pairs/s (all ranks)",
        *(f"{sum(x['pairs_per_s'] for x in r['log']) / len(r['log']):,.0f}" for r, _ in runs.values()),
    )
    table.add_row("command wall time (s)", *(f"{s:.1f}" for _, s in runs.values()))
    Console().print(table)


if __name__ == "__main__":
    main()

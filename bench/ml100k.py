"""MovieLens 100K under BENCHMARK.md: the two-tower model over several seeds, and popularity.

    python bench/ml100k.py [--seeds 0 1 2] [--config configs/ml100k.toml]

Prints one metric row per channel (mean ± spread over seeds for the two-tower model), with
training time and the process's peak RSS, on this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from seeded import cell  # bench/ is on sys.path when run as a script

from embrecall import evaluate, load_config

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["HR@10", "NDCG@10", "HR@20", "HR@50", "HR@100", "NDCG@100", "MRR", "coverage@100"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ml100k.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"two_tower": [], "popular": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = load_config(args.config, [f"train.seed={seed}", f"out={tmp}"])
            result = evaluate(cfg, ["two_tower"], show_progress=False)
            rows["two_tower"].append(result["two_tower"])
            Console().print(f"seed {seed}: " + ", ".join(f"{m} {result['two_tower'][m]:.4f}" for m in METRICS[:5]))
        cfg = load_config(args.config, [f"out={tmp}"])
        rows["popular"].append(evaluate(cfg, ["popular"], show_progress=False)["popular"])
    table = Table(
        title=f"ml-100k, BENCHMARK.md protocol, {os.cpu_count()} cores "
        f"(two-tower: mean ± half-range over seeds {args.seeds})"
    )
    table.add_column("channel")
    for m in METRICS + ["train s", "peak RSS MB"]:
        table.add_column(m, justify="right")
    for name, runs in rows.items():
        cells = [
            cell([r[m] for r in runs], "{:.4f}" if m in METRICS else "{:.0f}")
            for m in METRICS + ["train_seconds", "peak_rss_mb"]
        ]
        table.add_row(name, *cells)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()

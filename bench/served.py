"""What a new user serves: `init`, every channel and the served list on test, then the served list
chosen on validation (`tune --channel served`) and measured on test.

    python bench/served.py LOG [LOG ...] [--out bench/out/served] [--trials 60] [--seed 0]

For each log: the config `embrecall init` writes (untouched), `evaluate` with its default channels
on test (every channel that can run, and `served` as init wrote it), then `tune --channel served`
on validation only and `evaluate --channel served` of the chosen list on test.  Prints one table
per log: HR@10 / NDCG@10 / HR@100 / HR@500 of each row, and the served rows' ratio to the best
single channel.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from embrecall.config import load_config
from embrecall.pipeline import evaluate, read_split
from embrecall.served_tuning import tune_served
from embrecall.starter import starter_config

SHOWN = ["HR@10", "NDCG@10", "HR@100", "HR@500"]


def run(log: Path, out: Path, trials: int, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "init.toml"
    path.write_text(starter_config(log, out).toml)
    cfg = load_config(path, [f"out={out / 'runs'}", f"train.seed={seed}", f"tune.trials={trials}"])
    started = time.perf_counter()
    rows = evaluate(cfg, show_progress=False)
    rows["served (init)"] = rows.pop("served", {})
    data, split = read_split(cfg, show_progress=False)
    result = tune_served(cfg, data, split, out / "tune-served", show_progress=False)
    chosen = load_config(result.config_path)
    rows["served (tuned)"] = evaluate(chosen, ["served"], show_progress=False)["served"]
    minutes = (time.perf_counter() - started) / 60
    singles = {n: r for n, r in rows.items() if not n.startswith("served") and r}
    best = {m: max(r[m] for r in singles.values()) for m in SHOWN}
    table = Table(
        title=f"{log.name}: init config, seed {seed}, test (BENCHMARK.md); served (tuned): "
        f"{chosen.channels.merge_mode} {dict(chosen.channels.serve)} offset {chosen.channels.rrf_offset} "
        f"depth {chosen.channels.merge_depth}; {minutes:.1f} min on {os.cpu_count()} cores"
    )
    table.add_column("channel")
    for m in SHOWN:
        table.add_column(m, justify="right")
    for name, row in rows.items():
        if not row:
            continue
        ratio = name.startswith("served")
        table.add_row(name, *[f"{row[m]:.4f}" + (f" ({row[m] / best[m]:.2f}×)" if ratio else "") for m in SHOWN])
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("bench/out/served"))
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for log in args.logs:
        run(log, args.out / log.stem, args.trials, args.seed)


if __name__ == "__main__":
    main()

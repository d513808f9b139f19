"""Every recall channel on ml-100k under BENCHMARK.md, the served merge, and mixed negatives
against in-batch only; writes the comparison report (Markdown + PNG plots).

    python bench/channels.py [--seeds 0 1 2] [--report bench/out/channels]

Channels that do not depend on the seed (popular, itemcf, item2vec with its fixed seed) are
fitted once; the two-tower rows and the served row (which contains the two-tower model) are
averaged over seeds, with the half-range as spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from seeded import cell  # bench/ is on sys.path when run as a script

from embrecall import evaluate, load_config
from embrecall.evaluation.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ["HR@10", "NDCG@10", "HR@50", "HR@100", "MRR", "coverage@100", "long_tail@100", "train_seconds"]
MIXED = ["train.negatives.global_count=256", "train.negatives.hard_count=5", "train.negatives.hard_column=genres"]


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ml100k.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "out" / "channels")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"out={tmp}"])
        for name, row in evaluate(cfg, ["popular", "itemcf", "item2vec"], show_progress=False).items():
            runs[name] = [row]
        for seed in args.seeds:
            cfg = load_config(args.config, [f"out={tmp}", f"train.seed={seed}"])
            for name, row in evaluate(cfg, ["two_tower", "served"], show_progress=False).items():
                runs.setdefault(name, []).append(row)
            mixed = load_config(args.config, [f"out={tmp}", f"train.seed={seed}", *MIXED])
            runs.setdefault("two_tower_mixed_neg", []).append(
                evaluate(mixed, ["two_tower"], show_progress=False)["two_tower"]
            )
            Console().print(
                f"seed {seed} done: two_tower HR@100 {runs['two_tower'][-1]['HR@100']:.4f}, "
                f"served {runs['served'][-1]['HR@100']:.4f}, "
                f"mixed {runs['two_tower_mixed_neg'][-1]['HR@100']:.4f}"
            )
    table = Table(
        title=f"ml-100k channels, BENCHMARK.md, {os.cpu_count()} cores; seeded rows: mean ± half-range "
        f"over seeds {args.seeds}"
    )
    table.add_column("channel")
    for m in SHOWN:
        table.add_column(m.replace("_seconds", " s"), justify="right")
    for name, rows in runs.items():
        cells = [cell([r[m] for r in rows], "{:.1f}" if m == "train_seconds" else "{:.4f}") for m in SHOWN]
        table.add_row(name, *cells)
    Console(width=220).print(table)
    paired = [m["HR@100"] - t["HR@100"] for m, t in zip(runs["served"], runs["two_tower"])]
    Console().print(f"served - two_tower HR@100 per seed: {[round(x, 4) for x in paired]}")
    cfg = load_config(args.config)
    path = write_report(
        args.report,
        {n: _mean(r) for n, r in runs.items()},
        cfg.evaluate.ks,
        title="embrecall channels on MovieLens 100K",
        context=f"BENCHMARK.md protocol on ml-100k; seeded rows averaged over seeds {args.seeds}; "
        f"served = {cfg.channels.merge_mode} {dict(cfg.channels.serve)}; "
        f"two_tower_mixed_neg = {' '.join(MIXED)}; {os.cpu_count()} cores.",
    )
    Console().print(f"report: {path}")


if __name__ == "__main__":
    main()

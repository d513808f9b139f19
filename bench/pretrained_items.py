"""item2vec vectors as the start of the item-id table, against a random start, on shared logs.

    python bench/pretrained_items.py [--logs ml100k ciaodvd] [--seeds 0 1]

Runs each log's config three ways, everything else equal: ``model.pretrained_items`` = none
(random start), fine_tune (item2vec of the training events, trained further) and frozen (item2vec
kept as is; the rest of the towers learn around it).  Prints test HR@10, NDCG@10 and HR@100 of the
two-tower model under the protocol (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from embrecall import load_config
from embrecall.pipeline import evaluate

ROOT = Path(__file__).resolve().parents[1]
LOGS = {"ml100k": "ml100k.toml", "ciaodvd": "ciaodvd.toml"}
WAYS = ("none", "fine_tune", "frozen")
METRICS = ("HR@10", "NDCG@10", "HR@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="+", default=list(LOGS), choices=list(LOGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    table = Table(title=f"two-tower test metrics by item-table start (seeds {args.seeds})")
    for col in ("log", "model.pretrained_items", *METRICS):
        table.add_column(col, justify="right")
    for log in args.logs:
        for way in WAYS:
            runs = [
                evaluate(
                    load_config(ROOT / "configs" / LOGS[log], [f"model.pretrained_items={way}", f"train.seed={seed}"]),
                    ["two_tower"],
                    show_progress=False,
                )["two_tower"]
                for seed in args.seeds
            ]
            cells = []
            for metric in METRICS:
                values = [r[metric] for r in runs]
                cells.append(f"{np.mean(values):.4f}" + (f" ± {np.std(values):.4f}" if len(runs) > 1 else ""))
            table.add_row(log, way, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()

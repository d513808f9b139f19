"""Cold items on ml-100k: does the title text let the two-tower model retrieve items nobody
clicked before the test period?  Compares an id-only item tower, id + genres, and
id + genres + title text (MiniLM, the `text` extra).

    python bench/cold_items.py [--seeds 0 1 2]

Events before the median timestamp train the model; each user's first interaction with an item
new after it is a target, ranked among the training catalog plus the new items (see
``embrecall.pipeline.evaluate_cold_items``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from embrecall import load_config
from embrecall.pipeline import evaluate_cold_items

ROOT = Path(__file__).resolve().parents[1]
ITEM_TOWERS = {
    "id only": "features.item=[{kind: item_id}]",
    "id + genres": "features.item=[{kind: item_id}, {kind: multi, name: genres, dim: 16}]",
    "id + genres + title text": "features.item=[{kind: item_id}, {kind: multi, name: genres, dim: 16}, "
    "{kind: text, name: title, dim: 32}]",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ml100k.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    table = Table(title=f"ml-100k cold items, mean ± half-range over seeds {args.seeds}, {os.cpu_count()} cores")
    for col in ("item tower", "targets", "new items", "HR@10", "HR@50", "HR@100", "NDCG@50"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for label, tower in ITEM_TOWERS.items():
            rows = []
            for seed in args.seeds:
                cfg = load_config(
                    args.config, [f"out={tmp}", f"train.seed={seed}", f"train.epochs={args.epochs}", tower]
                )
                rows.append(evaluate_cold_items(cfg, show_progress=False))
            cells = []
            for m in ("HR@10", "HR@50", "HR@100", "NDCG@50"):
                v = [r[m] for r in rows]
                cells.append(f"{statistics.fmean(v):.4f} ± {(max(v) - min(v)) / 2:.4f}")
            table.add_row(label, str(rows[0]["targets"]), str(rows[0]["new_items"]), *cells)
            Console().print(f"{label}: done")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

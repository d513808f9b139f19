"""Entity recall (u2c) and category-parallel recall on shared logs with item categories.

    python bench/entities.py [--logs ml100k ciaodvd]

For each log, trains its config's bundle (seed 0) and measures, on the test targets:

1. entity recall of the category attribute (ml-100k: genres; CiaoDVD: its genre column), HR@K of the
   held-out item's value: the two-tower model as served (``target = "category"``) beside the
   user's own recent values and the most clicked ones;
2. the served item list, plain and category-parallel (the user's top 3 values, equal shares):
   HR@10, HR@100, coverage@100 and the distinct values among the top 10.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from embrecall import load_config, train
from embrecall.evaluation import evaluate_channel
from embrecall.evaluation.protocol import build_queries
from embrecall.models.entities import entity_values
from embrecall.pipeline import evaluate_entity_recall, read_split
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServedChannel, ServingVersion

ROOT = Path(__file__).resolve().parents[1]
LOGS = {"ml100k": ("ml100k.toml", "genres"), "ciaodvd": ("ciaodvd.toml", "2")}
KS = [1, 3, 5, 10]


def _distinct_values(channel, split, items, attribute: str, k: int = 10) -> float:
    """Mean number of distinct attribute values among each test user's top k."""
    queries, exclude = build_queries(split.train_full, split.test)
    lists = [c.item_ids for c in channel.recommend(queries, k, exclude)]
    values = entity_values(items, attribute, sorted({i for items_ in lists for i in items_}))
    of = values.groupby(level=0).agg(set).to_dict()
    return float(np.mean([len(set().union(*(of.get(i, set()) for i in found))) for found in lists]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="+", default=list(LOGS), choices=list(LOGS))
    args = parser.parse_args()
    console = Console()
    for log in args.logs:
        config, attribute = LOGS[log]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(ROOT / "configs" / config, [f"out={tmp}", f"evaluate.ks={KS}"])
            bundle = train(cfg, show_progress=False).bundle
            rows = evaluate_entity_recall(cfg, attribute, bundle, show_progress=False)
            table = Table(
                title=f"{log}: entity recall of '{attribute}' (test, {rows['two_tower']['targets']:,.0f} "
                f"targets, {rows['two_tower']['values']:,.0f} values)"
            )
            table.add_column("channel")
            for metric in [*(f"HR@{k}" for k in KS), "NDCG@10", "MRR"]:
                table.add_column(metric, justify="right")
            for name, m in rows.items():
                table.add_row(name, *(f"{m[c]:.4f}" for c in [*(f"HR@{k}" for k in KS), "NDCG@10", "MRR"]))
            console.print(table)

            data, split = read_split(cfg, show_progress=False)
            version = ServingVersion(bundle, VectorCache(size=0))
            ways = {
                "served": ServedChannel(version, version.quotas, "served"),
                "served, category-parallel (3)": ServedChannel(
                    version, version.quotas, "parallel", parallel=(attribute, 3)
                ),
            }
            table = Table(title=f"{log}: served items, plain and category-parallel (test)")
            for col in ("list", "HR@10", "HR@100", "coverage@100", f"distinct {attribute} in top 10"):
                table.add_column(col, justify="right")
            for name, channel in ways.items():
                m = evaluate_channel(channel, split, [10, 100])
                table.add_row(
                    name,
                    f"{m['HR@10']:.4f}",
                    f"{m['HR@100']:.4f}",
                    f"{m['coverage@100']:.4f}",
                    f"{_distinct_values(channel, split, data.items, attribute):.2f}",
                )
            console.print(table)


if __name__ == "__main__":
    main()

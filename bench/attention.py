"""Attention pooling against mean pooling over a multi-valued user feature (interest tags).

    python bench/attention.py [--seeds 0 1]

The synthetic log with ``interests``: each user's favourite categories mixed with 0..5 generic
tags that say nothing (none of the shared logs has a multi-valued user feature).  The user tower
reads the tags and the recent history, without a user-id embedding (which would learn the same
thing per user): without the tags, tags mean-pooled, tags attention-pooled.  Prints test HR@10,
NDCG@10 and HR@100 (mean ± std over seeds).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from embrecall import load_config
from embrecall.pipeline import evaluate

DATA = [
    "data.synthetic.users=4000",
    "data.synthetic.items=2000",
    "data.synthetic.events=120000",
    "data.synthetic.interests=true",
]
HISTORY = "{kind: history, name: history, max_len: 20}"
WAYS = {
    "history only": f"[{HISTORY}]",
    "history + tags (mean)": f"[{{kind: multi, name: interests, pool: mean}}, {HISTORY}]",
    "history + tags (attention)": f"[{{kind: multi, name: interests, pool: attention}}, {HISTORY}]",
}
METRICS = ("HR@10", "NDCG@10", "HR@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    table = Table(title=f"synthetic log with interest tags: two-tower test metrics (seeds {args.seeds})")
    for col in ("user tower", *METRICS):
        table.add_column(col, justify="right")
    for way, user in WAYS.items():
        runs = [
            evaluate(
                load_config(None, [*DATA, f"features.user={user}", f"train.seed={seed}"]),
                ["two_tower"],
                show_progress=False,
            )["two_tower"]
            for seed in args.seeds
        ]
        table.add_row(
            way, *(f"{np.mean([r[m] for r in runs]):.4f} ± {np.std([r[m] for r in runs]):.4f}" for m in METRICS)
        )
    Console().print(table)


if __name__ == "__main__":
    main()

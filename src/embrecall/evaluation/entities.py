"""BENCHMARK.md's protocol for entity recall: the held-out item's category (or brand) is the target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embrecall.data.split import Split
from embrecall.evaluation.metrics import MRR_CUTOFF, ranking_metrics
from embrecall.evaluation.protocol import build_queries
from embrecall.models.entities import EntityRanker, entity_values

__all__ = ["evaluate_entities"]


def evaluate_entities(
    channel: EntityRanker,
    split: Split,
    items: pd.DataFrame | None,
    attribute: str,
    ks: list[int],
    *,
    on: str = "test",
    batch_size: int = 1024,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR and coverage@K of an entity channel: a hit is any value of the target
    item's ``attribute`` in the top K (a multi-valued attribute counts its best-placed value).
    Nothing is excluded: a user's own categories are fair answers.  Targets whose item has no
    value are left out (``targets`` says how many remain)."""
    history = split.train_full if on == "test" else split.train
    targets = split.test if on == "test" else split.valid
    wanted = entity_values(items, attribute, targets["item_id"].unique().tolist()).groupby(level=0).agg(set)
    known = targets["item_id"].isin(wanted.index).to_numpy()
    targets = targets[known].reset_index(drop=True)
    queries, _ = build_queries(history, targets)
    depth = max(max(ks), MRR_CUTOFF)
    lists: list[list[str]] = []
    for start in range(0, len(queries), batch_size):
        lists.extend(c.item_ids for c in channel.recommend(queries[start : start + batch_size], depth))
    ranks = np.full(len(lists), -1, dtype=np.int64)
    for row, (found, item) in enumerate(zip(lists, targets["item_id"].to_numpy())):
        hits = [r for r, value in enumerate(found) if value in wanted[item]]
        ranks[row] = hits[0] if hits else -1
    n_values = entity_values(items, attribute, history["item_id"].unique().tolist()).nunique()
    return {**ranking_metrics(ranks, lists, n_values, ks), "targets": float(len(targets)), "values": float(n_values)}

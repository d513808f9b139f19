"""Where a channel finds its targets and where it misses them: hits per group of targets.

Three groupings of the test (or validation) targets, each read from the history alone:
``popularity``: the target item's decile by training events (1 = the most popular tenth of the
catalog's events, "unseen" = never in training); ``history``: the user's number of training
events, in buckets; ``basket``: whether the target shares its timestamp with the user's last
history event (a line of the same basket or session), the case where co-occurrence is the signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from embrecall.data.split import Split

__all__ = ["target_groups", "hits_by_group", "HISTORY_BUCKETS"]

HISTORY_BUCKETS = (1, 5, 10, 20, 50, 100, 200)  # lower edges of the history-length buckets


def _popularity_decile(history: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """Each item's decile of the training events: the most clicked items that hold the first tenth
    of all events are decile 1, and so on; an item never clicked is "unseen"."""
    counts = history["item_id"].value_counts()
    share = counts.cumsum().to_numpy() / max(counts.sum(), 1)
    decile = pd.Series(np.minimum(np.ceil(share * 10 - 1e-9), 10).astype(int), index=counts.index)
    found = decile.reindex(items)
    return np.where(found.isna(), "unseen", found.fillna(0).astype(int).map("{:02d}".format)).astype(object)


def _history_bucket(lengths: np.ndarray) -> np.ndarray:
    edges = np.asarray(HISTORY_BUCKETS)
    at = np.searchsorted(edges, lengths, side="right") - 1
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    return np.asarray(["0" if a < 0 else names[a] for a in at], dtype=object)


def target_groups(split: Split, on: str = "test") -> dict[str, np.ndarray]:
    """Each grouping's label for every target row of ``split`` (test or validation targets)."""
    history = split.train_full if on == "test" else split.train
    targets = split.test if on == "test" else split.valid
    users = targets["user_id"].to_numpy()
    per_user = history.groupby("user_id")
    lengths = per_user.size().reindex(users).fillna(0).to_numpy()
    last = per_user["timestamp"].max().reindex(users).to_numpy()
    return {
        "popularity": _popularity_decile(history, targets["item_id"].to_numpy()),
        "history": _history_bucket(lengths),
        "basket": np.where(targets["timestamp"].to_numpy() == last, "same time as the last event", "later"),
    }


def _order(label: str) -> tuple[float, str]:
    """Groups in their natural order: by the number they start with (deciles, history lengths)."""
    lead = label.split("-")[0].rstrip("+")
    return (float(lead) if lead.isdigit() else float("inf"), label)


def hits_by_group(ranks: np.ndarray, groups: Mapping[str, np.ndarray], ks: list[int]) -> dict[str, dict[str, dict]]:
    """HR@K of each group of targets: grouping -> label -> {"targets": n, "HR@K": ...}."""
    out: dict[str, dict[str, dict]] = {}
    for grouping, labels in groups.items():
        out[grouping] = {}
        for label in sorted(set(labels), key=_order):
            rows = labels == label
            hit = ranks[rows]
            out[grouping][label] = {
                "targets": int(rows.sum()),
                **{f"HR@{k}": float(((hit >= 0) & (hit < k)).mean()) for k in ks},
            }
    return out

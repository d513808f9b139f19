"""Run BENCHMARK.md's protocol on a channel: full-catalog ranking, own items removed, one target per user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from embrecall.data.split import Split
from embrecall.errors import DataError
from embrecall.evaluation.breakdown import hits_by_group, target_groups
from embrecall.evaluation.metrics import MRR_CUTOFF, auc_against, ranking_metrics
from embrecall.models.channel import Channel, Scorer, UserQuery, user_histories

__all__ = [
    "build_queries",
    "evaluate_channel",
    "profile_depth",
    "sampled_auc",
    "shown_auc",
    "split_by",
    "AUC_NEGATIVES",
]

AUC_NEGATIVES = 100  # items drawn per target for AUC


def build_queries(history: pd.DataFrame, targets: pd.DataFrame) -> tuple[list[UserQuery], list[set[str]]]:
    """Queries for each target row: the user's events in ``history`` (time order) and the target
    event's own context (its timestamp and context columns, as a request would carry them).
    Returns the queries and each user's exclusion set (everything in its history)."""
    seqs = user_histories(history)
    context_cols = [c for c in targets.columns if c not in ("user_id", "item_id", "weight", "event")]
    contexts = targets[context_cols].to_dict("records")
    queries, exclude = [], []
    for user, ctx in zip(targets["user_id"].to_numpy(), contexts):
        items = seqs.get(str(user), ())
        queries.append(UserQuery(str(user), items, ctx))
        exclude.append(set(items))
    return queries, exclude


def evaluate_channel(
    channel: Channel,
    split: Split,
    ks: list[int],
    *,
    on: str = "test",
    batch_size: int = 1024,
    cold_items: bool = False,
    exposures: pd.DataFrame | None = None,
    breakdown: bool = False,
) -> dict[str, Any]:
    """HR@K, NDCG@K, MRR, average position and coverage@K of ``channel`` on the test (or
    validation) targets, and AUC against sampled negatives when the channel can score items
    (with ``exposures``, also ``AUC_shown``: against the items shown to the user and not clicked).

    On ``test`` the user's history and the catalog are train + validation; on ``valid``, train.
    ``cold_items``: the targets' items (new in the test period) join the catalog, for
    ``cold_item_split`` evaluations.  ``breakdown``: also HR@K per group of targets (by the
    target's popularity, the user's history length, baskets), under ``"breakdown"``.
    """
    history = split.train_full if on == "test" else split.train
    targets = split.test if on == "test" else split.valid
    ranked = split.ranked_items("train_full" if on == "test" else "train")
    catalog = set(ranked)
    if cold_items:
        catalog |= set(targets["item_id"].unique())
    queries, exclude = build_queries(history, targets)
    depth = max(max(ks), MRR_CUTOFF)
    ranks = np.full(len(queries), -1, dtype=np.int64)
    top_lists: list[list[str]] = []
    for start in range(0, len(queries), batch_size):
        batch = channel.recommend(queries[start : start + batch_size], depth, exclude[start : start + batch_size])
        top_lists.extend([i for i in c.item_ids if i in catalog] for c in batch)
    target_items = targets["item_id"].to_numpy()
    for row, (items, target) in enumerate(zip(top_lists, target_items)):
        if target in catalog and target in items:
            ranks[row] = items.index(target)
    auc: dict[str, float] = {}
    if isinstance(channel, Scorer):
        auc["AUC"] = sampled_auc(channel, queries, exclude, target_items, catalog)
        shown = None if exposures is None else shown_items(history, targets, exposures, exclude)
        if shown is not None and any(shown):
            auc["AUC_shown"] = shown_auc(channel, queries, target_items, shown)
    groups = {"breakdown": hits_by_group(ranks, target_groups(split, on), ks)} if breakdown else {}
    return {
        **ranking_metrics(ranks, top_lists, len(catalog), ks),
        **auc,
        **popularity_profile(top_lists, ranked, profile_depth(ks)),
        **reachability(target_items, exclude, catalog),
        **groups,
    }


def sampled_auc(
    channel: Scorer,
    queries: list[UserQuery],
    exclude: list[set[str]],
    targets: np.ndarray,
    catalog: set[str],
    negatives: int = AUC_NEGATIVES,
    seed: int = 0,
    batch_size: int = 1024,
) -> float:
    """Mean over targets in the catalog of the AUC of the held-out item against ``negatives``
    catalog items drawn uniformly (never the user's own items or the target): the share of them
    it outscores, ties counting half (for one user, what ``roc_auc_score`` gives)."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(sorted(catalog), dtype=object)
    rows = [r for r, t in enumerate(targets) if t in catalog]
    aucs = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        drawn = []
        for r in batch:
            picks: list[str] = []
            while len(picks) < negatives and len(pool) > len(exclude[r]) + 1:
                picks += [
                    i
                    for i in pool[rng.integers(0, len(pool), 2 * negatives)]
                    if i != targets[r] and i not in exclude[r]
                ]
            drawn.append([targets[r], *picks[:negatives]])
        for scores in channel.score([queries[r] for r in batch], drawn):
            if len(scores) > 1:
                aucs.append(auc_against(scores[0], scores[1:]))
    return float(np.mean(aucs)) if aucs else 0.0


def shown_items(
    history: pd.DataFrame, targets: pd.DataFrame, exposures: pd.DataFrame, exclude: list[set[str]]
) -> list[list[str]]:
    """Per target row, the items shown to its user after their last history event and up to the
    target (the impressions the target click was chosen from), less the target and the user's items."""
    last = history.groupby("user_id")["timestamp"].max()
    rows = pd.DataFrame(
        {
            "row": np.arange(len(targets)),
            "user_id": targets["user_id"].to_numpy(),
            "until": targets["timestamp"].to_numpy(),
            "since": last.reindex(targets["user_id"]).fillna(-1).to_numpy(),
        }
    )
    seen = rows.merge(exposures[["user_id", "item_id", "timestamp"]], on="user_id")
    seen = seen[(seen["timestamp"] > seen["since"]) & (seen["timestamp"] <= seen["until"])]
    out: list[list[str]] = [[] for _ in range(len(targets))]
    target_items = targets["item_id"].to_numpy()
    for row, item in zip(seen["row"].to_numpy(), seen["item_id"].to_numpy()):
        if item != target_items[row] and item not in exclude[row] and item not in out[row]:
            out[row].append(item)
    return out


def shown_auc(
    channel: Scorer, queries: list[UserQuery], targets: np.ndarray, shown: list[list[str]], batch_size: int = 1024
) -> float:
    """Mean over targets with shown-but-not-clicked items of the AUC of the target against them
    (what the seeds' offline AUC on impressions measures); items the channel does not know score -inf."""
    rows = [r for r, items in enumerate(shown) if items]
    aucs = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        for scores in channel.score([queries[r] for r in batch], [[targets[r], *shown[r]] for r in batch]):
            aucs.append(auc_against(scores[0], scores[1:]))
    return float(np.mean(aucs)) if aucs else 0.0


def split_by(split: Split, column: str) -> dict[str, Split]:
    """The split once per value of a target's event ``column`` (a scene): the same histories and
    catalog, only that value's targets (a target without the value counts under "")."""
    if column not in split.test.columns:
        have = [c for c in split.test.columns if c not in ("user_id", "item_id", "timestamp")]
        raise DataError(
            f"evaluate.per names '{column}', which the interactions lack (event columns: {have})", column=column
        )
    values = split.test[column].astype(object).where(split.test[column].notna(), "").astype(str)
    return {
        value: Split(
            split.train,
            split.valid,
            split.train_full,
            split.test[(values == value).to_numpy()].reset_index(drop=True),
            split.item_counts,
        )
        for value in sorted(values.unique())
    }


def reachability(targets: np.ndarray, exclude: list[set[str]], catalog: set[str]) -> dict[str, float]:
    """What the protocol lets a channel hit: targets outside the catalog, and targets the user
    already had (their own items are removed from the ranking), are misses for every channel;
    ``hit_ceiling`` is the share of targets left, the most any HR@K can reach."""
    outside = sum(t not in catalog for t in targets)
    seen = sum(t in ex for t, ex in zip(targets, exclude))
    n = max(len(targets), 1)
    return {
        "targets": float(len(targets)),
        "catalog_items": float(len(catalog)),
        "targets_outside_catalog": float(outside),
        "targets_already_seen": float(seen),
        "hit_ceiling": 1.0 - (outside + seen) / n,
    }


def profile_depth(ks: Sequence[int]) -> int:
    """The cut-off a popularity profile is read at: the deepest up to 100 (what a ranker is given)."""
    return max([k for k in ks if k <= 100] or [min(ks)])


def popularity_profile(top_lists: list[list[str]], ranked: Sequence[str], k: int) -> dict[str, float]:
    """How popular recommended items are, given the catalog ``ranked`` most popular first:
    ``long_tail@k`` is the share of recommended slots outside the head (the most popular items
    that make up 20 % of the catalog); ``popularity_pct@k`` the mean popularity percentile of
    recommended items (1 = most popular)."""
    n = len(ranked)
    pct = pd.Series(1.0 - np.arange(n) / max(n - 1, 1), index=pd.Index(ranked, dtype=object))
    head = set(ranked[: max(1, int(0.2 * n))])
    slots = [item for items in top_lists for item in items[:k]]
    if not slots:
        return {f"long_tail@{k}": 0.0, f"popularity_pct@{k}": 0.0}
    return {
        f"long_tail@{k}": float(np.mean([item not in head for item in slots])),
        f"popularity_pct@{k}": float(pct.reindex(slots).fillna(0.0).mean()),
    }

"""Ranking metrics with one held-out item per user (BENCHMARK.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ranking_metrics", "auc_against", "MRR_CUTOFF"]

MRR_CUTOFF = 100  # MRR is computed over the top 100 (a miss beyond it scores 0)


def ranking_metrics(
    ranks: np.ndarray, top_lists: Sequence[Sequence[str]], catalog_size: int, ks: Sequence[int]
) -> dict[str, float]:
    """Metrics averaged over users.

    ranks: (U,) 0-based rank of each user's held-out item in its list, -1 if absent (a miss).
    top_lists: each user's recommended item ids, best first (for coverage).
    HR@K = share of users whose item is in the top K; NDCG@K = mean of 1/log2(rank + 2) over those;
    MRR = mean of 1/(rank + 1) for ranks below MRR_CUTOFF; avg_position@MRR_CUTOFF = mean 1-based
    position of the held-out item among the users who have it in their top MRR_CUTOFF (58.com's
    "average position": where in the list a hit lands; 0 when nobody has one); coverage@K =
    distinct items in all top-K lists / catalog size.
    """
    ranks = np.asarray(ranks)
    hit = ranks >= 0
    out: dict[str, float] = {}
    for k in ks:
        in_k = hit & (ranks < k)
        out[f"HR@{k}"] = float(in_k.mean()) if len(ranks) else 0.0
        gains = np.where(in_k, 1.0 / np.log2(np.where(in_k, ranks, 0) + 2.0), 0.0)
        out[f"NDCG@{k}"] = float(gains.mean()) if len(ranks) else 0.0
    in_cut = hit & (ranks < MRR_CUTOFF)
    out["MRR"] = float(np.where(in_cut, 1.0 / (np.where(in_cut, ranks, 0) + 1.0), 0.0).mean()) if len(ranks) else 0.0
    out[f"avg_position@{MRR_CUTOFF}"] = float(ranks[in_cut].mean() + 1.0) if in_cut.any() else 0.0
    for k in ks:
        distinct = {item for items in top_lists for item in items[:k]}
        out[f"coverage@{k}"] = len(distinct) / catalog_size if catalog_size else 0.0
    return out


def auc_against(target: float, negatives: np.ndarray) -> float:
    """AUC of one positive against negatives: the share it outscores, ties counting half."""
    negatives = np.asarray(negatives)
    return float((negatives < target).mean() + 0.5 * (negatives == target).mean())

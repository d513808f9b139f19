"""How far a candidate version's answers move from the active version's.

Vectors of two trainings live in different spaces and cannot be compared one by one (Jike's
"semantic drift of vector dimensions"), so the report compares what the versions *do*: the
served top-k lists of a sample of users known to both (each answered from its own stored
history, as the service would), the nearest neighbours of a sample of items in each version's
item-vector space, and how broad and how popular the recommendations are.  ``embrecall publish``
prints it and keeps it with the version; a low overlap tells an operator that a swap changes
what users see, whatever the offline metrics say.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from embrecall.evaluation.protocol import popularity_profile
from embrecall.export import Bundle
from embrecall.models.channel import UserQuery
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServedChannel, ServingVersion

__all__ = ["drift_report", "describe_drift"]

NEIGHBOURS = 10  # an item's neighbourhood: its 10 nearest items by item vector


def _lists(version: ServingVersion, users: list[str], k: int) -> list[list[str]]:
    now = int(time.time())
    queries = [UserQuery(u, version.history(u, events=()), {"timestamp": now}) for u in users]
    served = ServedChannel(version, version.quotas, "served")
    return [c.item_ids for c in served.recommend(queries, k, [set(q.history) for q in queries])]


def _neighbours(version: ServingVersion, items: list[str], chunk: int = 32) -> list[set[str]]:
    """Each item's nearest items by inner product of item-tower vectors (itself left out), scored
    ``chunk`` items at a time against the whole catalog."""
    catalog = np.asarray(version.bundle.encoders.catalog, dtype=object)
    vectors = version.bundle.item_vectors()
    out: list[set[str]] = []
    for start in range(0, len(items), chunk):
        rows = version.bundle.encoders.catalog.get_indexer(items[start : start + chunk])
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
        out += [set(catalog[t]) for t in top]
    return out


def _coverage(lists: list[list[str]], version: ServingVersion) -> float:
    return len({i for items in lists for i in items}) / max(len(version.index), 1)


def _popularity(version: ServingVersion, lists: list[list[str]], k: int) -> float | None:
    """Mean popularity percentile (1 = most popular) of the recommended items, by this version's counts."""
    popular = version.bundle.channels.get("popular")
    if popular is None:
        return None
    return popularity_profile(lists, popular.item_ids_, k)[f"popularity_pct@{k}"]  # type: ignore[attr-defined]


def drift_report(
    candidate: Bundle | Path | str,
    active: Bundle | Path | str,
    users: int = 500,
    items: int = 500,
    k: int = 100,
    seed: int = 0,
) -> dict[str, float | int | str | None]:
    """Overlap of the served top-``k`` for up to ``users`` sampled users known to both versions,
    the share of up to ``items`` sampled items whose nearest neighbours changed by more than half,
    and coverage and popularity of the recommendations in each version."""
    new, old = ServingVersion(candidate, VectorCache(size=0)), ServingVersion(active, VectorCache(size=0))
    rng = np.random.default_rng(seed)
    both = sorted(set(new.profiles.row) & set(old.profiles.row))
    sample = [both[i] for i in rng.choice(len(both), min(users, len(both)), replace=False)] if both else []
    new_lists, old_lists = _lists(new, sample, k), _lists(old, sample, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(new_lists, old_lists)]
    shared = sorted(set(new.bundle.encoders.catalog) & set(old.bundle.encoders.catalog))
    picked = [shared[i] for i in rng.choice(len(shared), min(items, len(shared)), replace=False)] if shared else []
    changed = [len(a & b) < NEIGHBOURS / 2 for a, b in zip(_neighbours(new, picked), _neighbours(old, picked))]
    return {
        "active": old.version,
        "users": len(sample),
        "k": k,
        f"top{k}_overlap": float(np.mean(overlap)) if overlap else None,
        "items": len(picked),
        "neighbours_changed": float(np.mean(changed)) if changed else None,
        f"coverage@{k}_active": _coverage(old_lists, old),
        f"coverage@{k}_candidate": _coverage(new_lists, new),
        f"popularity_pct@{k}_active": _popularity(old, old_lists, k),
        f"popularity_pct@{k}_candidate": _popularity(new, new_lists, k),
    }


def describe_drift(report: dict) -> str:
    """One line for an operator."""
    k = report["k"]

    def num(key: str) -> str:
        v = report.get(key)
        return "-" if v is None else f"{v:.3f}"

    return (
        f"drift vs {report['active']}: top-{k} overlap {num(f'top{k}_overlap')} ({report['users']} users); "
        f"items whose {NEIGHBOURS} nearest items changed by more than half {num('neighbours_changed')} "
        f"({report['items']} items); coverage@{k} {num(f'coverage@{k}_active')} -> {num(f'coverage@{k}_candidate')}; "
        f"popularity percentile {num(f'popularity_pct@{k}_active')} -> {num(f'popularity_pct@{k}_candidate')}"
    )

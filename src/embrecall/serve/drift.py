"""How far a candidate version's answers move from the active version's.

Vectors of two independent trainings live in different spaces and cannot be compared one by
one (Jike's "semantic drift of vector dimensions"), so the report compares what the versions
*do*: the served top-k lists of a sample of users known to both (each answered from its own
stored history, as the service would), the nearest neighbours of a sample of items in each
version's item-vector space, and how broad and how popular the recommendations are.  It also
says how comparable the two spaces are (the same items' vectors; the candidate's items scored
by either version's user vectors): a version trained on from the active one, or aligned onto it
(``training.warm_start``), is.  ``embrecall publish`` prints it and keeps it with the version;
a low overlap tells an operator that a swap changes what users see, whatever the offline
metrics say.
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


def _neighbours(version: ServingVersion, vectors: np.ndarray, items: list[str], chunk: int = 32) -> list[set[str]]:
    """Each item's nearest items by inner product of item-tower vectors (itself left out), scored
    ``chunk`` items at a time against the whole catalog."""
    catalog = np.asarray(version.bundle.encoders.catalog, dtype=object)
    out: list[set[str]] = []
    for start in range(0, len(items), chunk):
        rows = version.bundle.encoders.catalog.get_indexer(items[start : start + chunk])
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
        out += [set(catalog[t]) for t in top]
    return out


def _cross_overlap(
    new: ServingVersion, old: ServingVersion, vectors: np.ndarray, users: list[str], k: int
) -> float | None:
    """Overlap of each user's top-``k`` of the candidate's items scored by the candidate's user
    vector and by the active version's (a vector cached before a swap): near 1 only when the two
    spaces are comparable (a warm update, or a retrain aligned onto the active version)."""
    if not users or new.tower.interests > 1 or old.tower.interests > 1:
        return None
    now = int(time.time())
    queries = [UserQuery(u, new.history(u, events=()), {"timestamp": now}) for u in users]
    own, cached = new.tower.user_vectors(queries), old.tower.user_vectors(queries)
    if own.shape[-1] != cached.shape[-1]:
        return None
    top = min(k, len(vectors))

    def best(u: np.ndarray) -> np.ndarray:
        return np.argpartition(-(u @ vectors.T), top - 1, axis=1)[:, :top]

    return float(np.mean([len(set(a) & set(b)) / top for a, b in zip(best(own), best(cached))]))


def _vector_cosine(
    new: ServingVersion, old: ServingVersion, vectors: tuple[np.ndarray, np.ndarray], items: list[str]
) -> float | None:
    """Mean cosine of the same items' vectors in the two versions (about 0 between unaligned spaces)."""
    a = vectors[0][new.bundle.encoders.catalog.get_indexer(items)]
    b = vectors[1][old.bundle.encoders.catalog.get_indexer(items)]
    if not items or a.shape[1] != b.shape[1]:
        return None
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))


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
    and coverage and popularity of the recommendations in each version; across the two spaces,
    the sampled items' vector cosine and the top-``k`` overlap of the candidate's items scored by
    either version's user vector (``_cross_overlap``)."""
    new, old = ServingVersion(candidate, VectorCache(size=0)), ServingVersion(active, VectorCache(size=0))
    rng = np.random.default_rng(seed)
    both = sorted(set(new.profiles.row) & set(old.profiles.row))
    sample = [both[i] for i in rng.choice(len(both), min(users, len(both)), replace=False)] if both else []
    new_lists, old_lists = _lists(new, sample, k), _lists(old, sample, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(new_lists, old_lists)]
    shared = sorted(set(new.bundle.encoders.catalog) & set(old.bundle.encoders.catalog))
    picked = [shared[i] for i in rng.choice(len(shared), min(items, len(shared)), replace=False)] if shared else []
    vectors = new.bundle.item_vectors(), old.bundle.item_vectors()  # read once: they are large
    near = zip(_neighbours(new, vectors[0], picked), _neighbours(old, vectors[1], picked))
    changed = [len(a & b) < NEIGHBOURS / 2 for a, b in near]
    return {
        "active": old.version,
        "users": len(sample),
        "k": k,
        f"top{k}_overlap": float(np.mean(overlap)) if overlap else None,
        "items": len(picked),
        "neighbours_changed": float(np.mean(changed)) if changed else None,
        "vector_cosine": _vector_cosine(new, old, vectors, picked),
        f"cross_top{k}_overlap": _cross_overlap(new, old, vectors[0], sample, k),
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
        f"({report['items']} items); across the spaces: item-vector cosine {num('vector_cosine')}, top-{k} "
        f"overlap with the active version's user vectors {num(f'cross_top{k}_overlap')}; "
        f"coverage@{k} {num(f'coverage@{k}_active')} -> {num(f'coverage@{k}_candidate')}; "
        f"popularity percentile {num(f'popularity_pct@{k}_active')} -> {num(f'popularity_pct@{k}_candidate')}"
    )

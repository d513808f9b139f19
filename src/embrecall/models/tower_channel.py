"""The two-tower channel: a user tower embeds each query, an item index returns its nearest items.

One class for every path: while training (the PyTorch tower, an index built from the freshly
computed item vectors), in evaluation, and in the service (the ONNX tower, the version's live
index, a user-vector cache), so a figure measured anywhere is the figure the service answers with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np

from embrecall.channel_table import TWO_TOWER
from embrecall.features.profiles import UserProfiles
from embrecall.index.protocol import Filters, ItemIndex
from embrecall.models.channel import Candidates, Timings, UserQuery

__all__ = ["TowerChannel", "UserEmbedder", "VectorStore"]

UserEmbedder = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Encoded user-tower inputs -> (B, D) user vectors, or (B, K, D) for a multi-interest tower: the
PyTorch tower or its ONNX export."""


class VectorStore(Protocol):
    """Where computed user vectors are kept between requests (the service's cache)."""

    def get(self, key: tuple) -> np.ndarray | None: ...

    def put(self, key: tuple, vector: np.ndarray) -> None: ...


def _best(lists: list[tuple[list[str], np.ndarray]], k: int) -> tuple[list[str], np.ndarray]:
    """The top ``k`` of several best-first (ids, scores) lists, each item at its best score."""
    if len(lists) == 1:
        return lists[0]
    best: dict[str, float] = {}
    for ids, scores in lists:
        for item, score in zip(ids, scores.tolist()):
            if score > best.get(item, -np.inf):
                best[item] = score
    top = sorted(best, key=best.__getitem__, reverse=True)[:k]
    return top, np.asarray([best[i] for i in top], dtype=np.float32)


class TowerChannel:
    name = TWO_TOWER

    def __init__(
        self,
        profiles: UserProfiles,
        embed_users: UserEmbedder,
        index: ItemIndex,
        cache: VectorStore | None = None,
        version: str = "",
        interests: int = 1,
    ):
        """``version``: part of every cache key, so that a cache shared by versions never mixes them.
        ``interests``: the user tower's vectors per user (``model.interests``); each is searched
        and each item keeps its best score."""
        self.profiles, self.embed_users, self.index, self.cache, self.version = (
            profiles,
            embed_users,
            index,
            cache,
            version,
        )
        self.history_len = profiles.encoders.history_len()  # what the tower reads: all the cache key needs
        self.interests = interests

    def key(self, q: UserQuery) -> tuple:
        """The user-vector cache key: everything the tower reads of the query."""
        recent = q.history[-self.history_len :] if self.history_len else ()
        return (self.version, q.user_id, recent, tuple(sorted(q.context.items())))

    def user_vectors(self, queries: Sequence[UserQuery]) -> np.ndarray:
        """(B, D) user vectors, or (B, K, D): from the cache where it has them, the rest in one
        tower run."""
        keys = [self.key(q) for q in queries] if self.cache is not None else []
        found: list[np.ndarray | None] = (
            [self.cache.get(key) for key in keys] if self.cache is not None else [None] * len(queries)
        )
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            fresh = self.embed_users(
                self.profiles.inputs(
                    [queries[i].user_id for i in todo],
                    [queries[i].history for i in todo],
                    [queries[i].context for i in todo],
                )
            )
            for i, vector in zip(todo, fresh):
                found[i] = vector
                if self.cache is not None:
                    self.cache.put(keys[i], vector)
        if not found:
            return np.zeros((0, 0), np.float32)
        flat = np.stack([np.ravel(v) for v in found])  # type: ignore[arg-type]  # a cache may keep them flat
        return flat if self.interests == 1 else flat.reshape(len(found), self.interests, -1)

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each user's best inner product with its items' vectors (-inf for items the index lacks)."""
        out = []
        for user, wanted in zip(self.user_vectors(queries), items):
            scores = (self.index.vectors(list(wanted)) @ np.atleast_2d(user).T).max(axis=1)
            out.append(np.where(np.isnan(scores), -np.inf, scores).astype(np.float32))
        return out

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        """One index search for the unfiltered queries together, one per filtered query."""
        if not queries:
            return []
        timings = timings if timings is not None else {}
        t = time.perf_counter()
        vectors = self.user_vectors(queries)
        timings["embed"] = timings.get("embed", 0.0) + (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        excluded: list[Collection[str]] = list(exclude) if exclude is not None else [()] * len(queries)
        wants: list[Filters] = list(filters) if filters is not None else [{}] * len(queries)
        each = 1 if vectors.ndim == 2 else vectors.shape[1]  # interests per user, searched alike
        flat = vectors.reshape(len(queries) * each, -1)
        plain = [i for i, f in enumerate(wants) if not f]
        rows = [i * each + j for i in plain for j in range(each)]
        lists: dict[int, tuple[list[str], np.ndarray]] = {}
        if rows:
            lists.update(
                zip(rows, self.index.search_many(flat[rows], [k] * len(rows), [excluded[r // each] for r in rows]))
            )
        for i, f in enumerate(wants):
            for r in range(i * each, (i + 1) * each) if f else ():
                lists[r] = self.index.search(flat[r], k, f, excluded[i])
        found = {i: _best([lists[i * each + j] for j in range(each)], k) for i in range(len(queries))}
        timings["search"] = timings.get("search", 0.0) + (time.perf_counter() - t) * 1000
        return [
            Candidates(ids, scores, [self.name] * len(ids)) for ids, scores in (found[i] for i in range(len(queries)))
        ]

"""Several recall channels as one list: the served list, offline and in the service alike.

``quota``: each channel fills about its share of the k slots; lists are interleaved so each
channel's best items come early (the channel furthest behind its share goes next), an item
found by several channels appears once (credited to the first), and slots a short list leaves
empty go to the others.
``rrf``: weighted reciprocal-rank fusion, score(j) = sum over channels of w_c / (offset + rank_c(j));
items that several channels agree on rise, credited to the channel that ranks them best.
A fallback channel fills the slots the merged channels leave empty (a strict filter, a cold user).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from embrecall.config import ChannelsConfig
from embrecall.errors import ConfigError
from embrecall.index.protocol import Filters
from embrecall.models.channel import Candidates, Channel, Timings, UserQuery

__all__ = ["Merged", "MergeRule", "fill", "merge_by_quota", "merge_by_rrf"]


@dataclass(frozen=True)
class MergeRule:
    """How channels' lists become one: ``mode`` quota or rrf, the rrf ``offset``, and ``depth``:
    with rrf each channel gives its top ``depth * k`` (fusion needs the overlap)."""

    mode: str = "rrf"
    offset: float = 60.0
    depth: int = 2

    @classmethod
    def of(cls, channels: ChannelsConfig) -> MergeRule:
        return cls(channels.merge_mode, channels.rrf_offset, channels.merge_depth)

    def fetch(self, k: int) -> int:
        """How many items to ask each channel for, for a merged list of ``k``."""
        return k * self.depth if self.mode == "rrf" else k

    def merge(self, lists: Sequence[Candidates], weights: Sequence[float], k: int) -> Candidates:
        if self.mode == "quota":
            return merge_by_quota(lists, weights, k)
        return merge_by_rrf(lists, weights, k, self.offset)


def fill(merged: Candidates, extra: Candidates, k: int) -> Candidates:
    """``merged`` with ``extra``'s items it lacks appended, up to ``k`` (the fallback's place)."""
    if len(merged.item_ids) >= k:
        return merged
    have = set(merged.item_ids)
    more = [i for i, item in enumerate(extra.item_ids) if item not in have][: k - len(merged.item_ids)]
    return Candidates(
        [*merged.item_ids, *(extra.item_ids[i] for i in more)],
        np.concatenate([merged.scores, extra.scores[more]]).astype(np.float32),
        [*merged.channels, *(extra.channels[i] for i in more)],
    )


class Merged:
    """Channels merged by weight under one rule, the fallback filling what they leave: the served
    list, in the service (``ServingVersion.answer``), in ``evaluate`` and in ``tune``."""

    name = "served"

    def __init__(
        self,
        channels: Mapping[str, Channel],
        weights: Mapping[str, float],
        rule: MergeRule = MergeRule(),
        fallback: Channel | None = None,
    ):
        missing = [c for c, w in weights.items() if w > 0 and c not in channels]
        if missing:
            raise ConfigError(f"channels.serve names {missing}, which are not available; have {list(channels)}")
        self.channels = {name: channels[name] for name, w in weights.items() if w > 0}
        self.weights = [float(weights[name]) for name in self.channels]
        self.rule = rule
        self.fallback = fallback

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        fetch = self.rule.fetch(k)
        per_channel = [c.recommend(queries, fetch, exclude, filters, timings) for c in self.channels.values()]
        t = time.perf_counter()
        merged = [self.rule.merge([lists[i] for lists in per_channel], self.weights, k) for i in range(len(queries))]
        if timings is not None:
            timings["merge"] = timings.get("merge", 0.0) + (time.perf_counter() - t) * 1000
        short = [i for i, m in enumerate(merged) if len(m.item_ids) < k] if self.fallback is not None else []
        if short:
            found = self.fallback.recommend(  # type: ignore[union-attr]
                [queries[i] for i in short],
                k,
                [exclude[i] for i in short] if exclude is not None else None,
                [filters[i] for i in short] if filters is not None else None,
                timings,
            )
            for i, extra in zip(short, found):
                merged[i] = fill(merged[i], extra, k)
        return merged


def merge_by_quota(lists: Sequence[Candidates], quotas: Sequence[float], k: int) -> Candidates:
    """Interleave best-first lists so list i gets about quotas[i] of the slots; duplicates once;
    the slots a short list leaves empty go to the others."""
    if not lists:
        return Candidates([], np.zeros(0, dtype=np.float32), [])
    if len(lists) == 1:  # nothing to interleave (a channel's own list holds no duplicates)
        c = lists[0]
        return Candidates(c.item_ids[:k], c.scores[:k], c.channels[:k])
    total = max(sum(quotas), 1)
    share = tuple(float(q) / total for q in quotas)
    turns = _turns(share, k)  # who fills each slot while no list has run out (this runs per request)
    ids: list[str] = []
    scores: list[float] = []
    channels: list[str] = []
    taken: set[str] = set()
    cursor = [0] * len(lists)
    given = [0] * len(lists)
    items = [c.item_ids for c in lists]
    sizes = [len(i) for i in items]
    listed = [c.scores.tolist() for c in lists]
    open_ = [j for j, size in enumerate(sizes) if size]
    n = 0
    while n < k and open_:
        i = turns[n] if len(open_) == len(lists) else _behind(share, given, n + 1, open_)
        mine, at, size = items[i], cursor[i], sizes[i]
        while at < size and mine[at] in taken:  # found by a list merged earlier
            at += 1
        cursor[i] = at + 1
        if at == size:
            open_.remove(i)
            continue
        taken.add(mine[at])
        given[i] += 1
        ids.append(mine[at])
        scores.append(listed[i][at])
        channels.append(lists[i].channels[at])
        n += 1
    return Candidates(ids, np.asarray(scores, dtype=np.float32), channels)


def _behind(share: Sequence[float], given: Sequence[int], slot: int, lists: Iterable[int]) -> int:
    """Of ``lists``, the one furthest behind its share after ``slot`` slots (the first on ties)."""
    return max(lists, key=lambda j: share[j] * slot - given[j])


@lru_cache(maxsize=256)
def _turns(share: tuple[float, ...], k: int) -> tuple[int, ...]:
    """The list that fills each of k slots when every list has items enough."""
    given = [0] * len(share)
    turns = []
    for slot in range(1, k + 1):
        i = _behind(share, given, slot, range(len(share)))
        given[i] += 1
        turns.append(i)
    return tuple(turns)


def merge_by_rrf(lists: Sequence[Candidates], weights: Sequence[float], k: int, offset: float = 60.0) -> Candidates:
    """Weighted reciprocal-rank fusion of best-first lists (Cormack et al., 2009); returns the fused
    scores, each item credited to the channel that gives it the largest part (the first on ties)."""
    score: dict[str, float] = {}
    best: dict[str, float] = {}
    owner: dict[str, str] = {}
    for c, w in zip(lists, weights):
        parts = (w / (offset + np.arange(1, len(c.item_ids) + 1))).tolist()
        for item, part, channel in zip(c.item_ids, parts, c.channels):
            had = score.get(item)
            if had is None:
                score[item], best[item], owner[item] = part, part, channel
            else:
                score[item] = had + part
                if part > best[item]:
                    best[item], owner[item] = part, channel
    top = heapq.nlargest(k, score, key=score.__getitem__)  # stable: ties keep their first-seen order
    return Candidates(top, np.asarray([score[i] for i in top], dtype=np.float32), [owner[i] for i in top])

"""Several recall channels as one list.

``quota``: each channel fills about its share of the k slots; lists are interleaved so each
channel's best items come early (the channel furthest behind its share goes next), an item
found by several channels appears once (credited to the first), and slots a short list leaves
empty go to the others.
``rrf``: weighted reciprocal-rank fusion, score(j) = sum over channels of w_c / (60 + rank_c(j));
items that several channels agree on rise, credited to the channel that ranks them best.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from embrecall.errors import ConfigError
from embrecall.index.protocol import Filters
from embrecall.models.channel import Candidates, Channel, Timings, UserQuery

__all__ = ["Merged", "merge_by_quota"]


class Merged:
    name = "merged"

    def __init__(
        self, channels: Mapping[str, Channel], shares: Mapping[str, float], mode: str = "quota", depth: int = 2
    ):
        """``depth``: with rrf, each channel contributes its top ``depth * k`` (fusion needs the overlap)."""
        missing = [c for c in shares if c not in channels]
        if missing:
            raise ConfigError(f"channels.merge names {missing}, which are not available; have {list(channels)}")
        self.channels = {name: channels[name] for name in shares}
        self.shares = [float(v) for v in shares.values()]
        self.mode = mode
        self.depth = depth if mode == "rrf" else 1

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        per_channel = [c.recommend(queries, k * self.depth, exclude, filters, timings) for c in self.channels.values()]
        merge = merge_by_quota if self.mode == "quota" else merge_by_rrf
        return [merge([lists[i] for lists in per_channel], self.shares, k) for i in range(len(queries))]


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
    """Weighted reciprocal-rank fusion of best-first lists (Cormack et al., 2009); returns the fused scores."""
    score: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for c, w in zip(lists, weights):
        for rank, (item, channel) in enumerate(zip(c.item_ids, c.channels)):
            part = w / (offset + rank + 1)
            score[item] = score.get(item, 0.0) + part
            if part > best.get(item, (0.0, ""))[0]:
                best[item] = (part, channel)
    top = sorted(score, key=lambda i: -score[i])[:k]
    return Candidates(top, np.asarray([score[i] for i in top], dtype=np.float32), [best[i][1] for i in top])

"""A served version's channels over its one live item index.

Each channel answers ``Ask``s (a query, k, filters, exclusions) with lists that hold only items
the live index holds and that pass the filters, so an item deleted or changed under traffic
drops out of every channel at once.  The two-tower channel searches the index itself; every
other channel's list is cut down to such items (``ItemIndex.select``), asking the channel again
for four times as many when too few survive, up to ``MAX_DEPTH_FACTOR * k`` items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from embrecall.export.onnx_runtime import OnnxTower
from embrecall.index.protocol import Filters, ItemIndex
from embrecall.models.channel import Candidates, Channel, UserQuery, fetch_depth
from embrecall.serve.cache import VectorCache
from embrecall.serve.profiles import UserProfiles

__all__ = ["Ask", "LiveChannel", "TowerChannel", "ListedChannel", "MAX_DEPTH_FACTOR"]

MAX_DEPTH_FACTOR = 16  # a listed channel is asked for at most this many times k (it is not the exact path)


@dataclass
class Ask:
    """One request as every channel sees it; ``parallel``: (attribute, groups) for category-parallel
    recall, which the version turns into one filtered ask per group before any channel runs."""
    query: UserQuery
    k: int
    filters: Filters = field(default_factory=dict)
    exclude: set[str] = field(default_factory=set)
    parallel: tuple[str, int] | None = None


class LiveChannel(Protocol):
    name: str

    def recall(self, asks: Sequence[Ask], timings: dict[str, float]) -> list[Candidates]:
        """Each ask's top k eligible items, best first; adds its stage times (ms) to ``timings``."""
        ...


class TowerChannel:
    """The two-tower model: user vectors (from the cache, or one ONNX run for the batch), then one
    index search for the unfiltered asks and one per filtered ask."""

    name = "two_tower"

    def __init__(self, version: str, profiles: UserProfiles, user_tower: OnnxTower, index: ItemIndex,
                 cache: VectorCache):
        self.version, self.profiles, self.user_tower, self.index, self.cache = version, profiles, user_tower, index, cache
        self.history_len = profiles.encoders.history_len()  # what the tower reads: all the cache key needs

    def key(self, q: UserQuery) -> tuple:
        """The user-vector cache key: everything the tower reads of the query."""
        recent = q.history[-self.history_len:] if self.history_len else ()
        return (self.version, q.user_id, recent, tuple(sorted(q.context.items())))

    def vectors(self, queries: Sequence[UserQuery]) -> np.ndarray:
        keys = [self.key(q) for q in queries]
        found = [self.cache.get(key) for key in keys]
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            fresh = self.user_tower(self.profiles.inputs([queries[i].user_id for i in todo],
                                                         [queries[i].history for i in todo],
                                                         [queries[i].context for i in todo]))
            for i, vector in zip(todo, fresh):
                found[i] = vector
                self.cache.put(keys[i], vector)
        return np.stack(found)  # type: ignore[arg-type]

    def recall(self, asks: Sequence[Ask], timings: dict[str, float]) -> list[Candidates]:
        if not asks:
            return []
        t = time.perf_counter()
        vectors = self.vectors([a.query for a in asks])
        timings["embed"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        plain = [i for i, a in enumerate(asks) if not a.filters]
        found: dict[int, tuple[list[str], np.ndarray]] = {}
        if plain:
            found.update(zip(plain, self.index.search_many(vectors[plain], [asks[i].k for i in plain],
                                                           [asks[i].exclude for i in plain])))
        for i, a in enumerate(asks):
            if a.filters:
                found[i] = self.index.search(vectors[i], a.k, a.filters, a.exclude)
        timings["search"] = (time.perf_counter() - t) * 1000
        return [Candidates(ids, scores, [self.name] * len(ids)) for ids, scores in (found[i] for i in range(len(asks)))]


class ListedChannel:
    """Any other channel (popularity, ItemCF, item2vec, EASE): its own best-first list, kept to
    the items the live index holds and the filters accept."""

    def __init__(self, name: str, channel: Channel, index: ItemIndex):
        self.name, self.channel, self.index = name, channel, index

    def _listed(self, asks: Sequence[Ask], depth: int) -> list[Candidates]:
        return self.channel.recommend([a.query for a in asks], depth, [a.exclude for a in asks])

    def _kept(self, ask: Ask, found: Candidates) -> Candidates:
        keep = self.index.select(found.item_ids, ask.filters)[:ask.k]
        return Candidates([found.item_ids[i] for i in keep], found.scores[keep], [self.name] * len(keep))

    def recall(self, asks: Sequence[Ask], timings: dict[str, float]) -> list[Candidates]:
        t = time.perf_counter()
        out: list[Candidates | None] = [None] * len(asks)
        for filtered in (False, True):  # one call per kind: the channel takes one k for all its queries
            group = [i for i, a in enumerate(asks) if bool(a.filters) == filtered]
            if not group:
                continue
            depth = fetch_depth(max(asks[i].k for i in group), 0, filtered)
            for i, found in zip(group, self._listed([asks[i] for i in group], depth)):
                kept, asked = self._kept(asks[i], found), depth
                while len(kept.item_ids) < asks[i].k and len(found.item_ids) == asked \
                        and asked < MAX_DEPTH_FACTOR * asks[i].k:  # too few survived, and more exist
                    asked *= 4
                    found = self._listed([asks[i]], asked)[0]
                    kept = self._kept(asks[i], found)
                out[i] = kept
        timings[self.name] = timings.get(self.name, 0.0) + (time.perf_counter() - t) * 1000
        return out  # type: ignore[return-value]

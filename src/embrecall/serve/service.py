"""One bundle made live: the ONNX user tower, a live index and the popularity list, answering
recall requests one at a time or in batches (one tower run and one index search for a batch).
A request keeps the version it started with, so a swap never mixes a user tower of one version
with an index of another."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.errors import DataError
from embrecall.export import Bundle
from embrecall.index.live import LiveIndex
from embrecall.index.milvus_index import MilvusIndex
from embrecall.index.protocol import ItemIndex
from embrecall.models.channel import Candidates, UserQuery
from embrecall.models.merge import merge_by_quota
from embrecall.serve.cache import VectorCache
from embrecall.serve.profiles import UserProfiles
from embrecall.serve.schemas import RecallRequest, RecallResponse

__all__ = ["ServingVersion"]


@dataclass
class _Plan:
    """One request on its way through a batch."""
    req: RecallRequest
    quotas: dict[str, float]
    history: tuple[str, ...]
    exclude: set[str]
    key: tuple  # of the user-vector cache
    vector: np.ndarray | None = None  # the user's, from the cache or the tower (the embed stage)
    lists: list[tuple[Candidates, float]] = field(default_factory=list)  # (channel's list, its share)


def _filterable(items: pd.DataFrame) -> list[str]:
    """Text attribute columns with few enough values to filter on (not titles)."""
    cols = []
    for c in items.columns:
        values = items[c].dropna().astype(str)
        if c != "title" and not pd.api.types.is_numeric_dtype(items[c]) and values.nunique() <= max(1000, len(items) // 10):
            cols.append(c)
    return cols


class ServingVersion:
    def __init__(self, bundle_path: Path | str, cache: VectorCache | None = None,
                 quotas: Mapping[str, float] | None = None, milvus_uri: str | None = None):
        """``milvus_uri``: serve from a Milvus collection of this version's items (created on first use)
        instead of the in-process FAISS index."""
        self.bundle = Bundle.load(bundle_path)
        self.version = self.bundle.version
        self.profiles = UserProfiles(self.bundle.encoders, self.bundle.users)
        catalog = list(self.bundle.encoders.catalog_)
        filterable = _filterable(self.bundle.items)
        self.index: ItemIndex
        if milvus_uri:
            collection = "embrecall_" + re.sub(r"\W", "_", self.version)
            self.index = MilvusIndex.build(milvus_uri, collection, catalog, self.bundle.item_vectors(),
                                           self.bundle.items, filterable, self.bundle.config.index)
        else:
            self.index = LiveIndex(catalog, self.bundle.item_vectors(), self.bundle.items, self.bundle.config.index,
                                   filterable, index=self.bundle.index.index)
        counts = self.bundle.item_counts()
        order = np.argsort(-counts, kind="stable")
        self.popular = (np.asarray(catalog, dtype=object)[order], counts[order].astype(np.float32))
        self.channels = ("two_tower", "itemcf", "popular") if self.bundle.itemcf else ("two_tower", "popular")
        self.quotas = dict(quotas or self.bundle.config.channels.serve)
        self.cache = cache or VectorCache()

    # ------------------------------------------------------------------ items

    def embed_items(self, changes: Mapping[str, Mapping[str, object]]) -> np.ndarray:
        """The item tower's vectors for items described by their attributes (new or changed), in one
        run; attributes the item tower reads but a change leaves out count as missing."""
        columns = [f.input_column for f in self.bundle.config.features.item if f.input_column != "item_id"]
        ids = pd.Index(list(changes), dtype=object)
        table = pd.DataFrame([dict(a) for a in changes.values()], index=ids)
        table = table.reindex(columns=list(dict.fromkeys([*table.columns, *columns])))
        return self.bundle.item_tower(self.bundle.encoders.encode_items(table, ids))

    def upsert_items(self, changes: Mapping[str, Mapping[str, object]]) -> None:
        """Add or replace items (embedded together, 4096 at a time); every vector is checked before
        any is indexed."""
        pairs = list(changes.items())
        chunks = [dict(pairs[i:i + 4096]) for i in range(0, len(pairs), 4096)]
        vectors = np.concatenate([self.embed_items(c) for c in chunks]) if chunks else np.zeros((0, 0), np.float32)
        bad = [item for item, v in zip(changes, vectors) if not np.isfinite(v).all()]
        if bad:  # a NaN vector would be scored NaN and answered as null
            raise DataError(f"items {bad[:5]}: their attributes give non-finite vectors; check their values")
        for (item_id, attributes), vector in zip(changes.items(), vectors):
            self.index.upsert(item_id, vector, attributes)

    # ------------------------------------------------------------------ recall

    def _popular(self, k: int, filters: Mapping[str, list[str]], exclude: set[str]) -> Candidates:
        """The most popular eligible items (looking at the head of the list only: it is a fallback)."""
        ids, counts = self.popular
        chosen: list[np.ndarray] = []
        found, step = 0, max(2 * k, 200)
        for start in range(0, max(4 * k, 1000), step):  # a chunk at a time: most requests need one
            chosen.append(start + self.index.select(ids[start:start + step], filters, exclude))
            found += len(chosen[-1])
            if found >= k:
                break
        positions = np.concatenate(chosen)[:k]
        return Candidates(ids[positions].tolist(), counts[positions], ["popular"] * len(positions))

    def _itemcf(self, history: tuple[str, ...], k: int, filters: Mapping[str, list[str]],
                exclude: set[str]) -> Candidates:
        """ItemCF's top k among items in the live index that pass the filters."""
        depth = (4 if filters else 1) * k + 10  # over-fetch what filters and deletions may drop
        found = self.bundle.itemcf.recommend([UserQuery("", history)], depth, [exclude])[0]  # type: ignore[union-attr]
        keep = self.index.select(found.item_ids, filters)[:k]
        return Candidates([found.item_ids[i] for i in keep], found.scores[keep], ["itemcf"] * len(keep))

    def _plan(self, req: RecallRequest) -> _Plan:
        """What a request asks for, checked against this version (a DataError says what is wrong)."""
        unknown = [f for f in req.filters if f not in self.index.filterable]
        if unknown:
            raise DataError(f"cannot filter on {unknown}; filterable attributes: {self.index.filterable}")
        quotas = dict(req.quotas or self.quotas)
        missing = [c for c, share in quotas.items() if share > 0 and c not in self.channels]
        if missing:
            raise DataError(f"quotas name {missing}; version {self.version} serves {list(self.channels)}")
        history = self.profiles.history(req.user_id) + tuple(req.recent_items)
        key = (self.version, req.user_id, history[-50:], tuple(sorted(req.context.items())))
        return _Plan(req, quotas, history, set(history) | set(req.exclude), key)

    def recall(self, req: RecallRequest) -> RecallResponse:
        answer = self.recall_many([req])[0]
        if isinstance(answer, DataError):
            raise answer
        return answer

    def recall_many(self, reqs: Sequence[RecallRequest]) -> list[RecallResponse | DataError]:
        """Answer several requests with one user-tower run and one index search; each request's
        error (an unknown filter, a quota for a channel this version lacks) is its own answer.
        Stage timings are the batch's: what each of its requests waited for."""
        t0 = time.perf_counter()
        plans: list[_Plan | DataError] = []
        for req in reqs:
            try:
                plans.append(self._plan(req))
            except DataError as err:
                plans.append(err)
        tower = [p for p in plans if isinstance(p, _Plan) and p.quotas.get("two_tower", 0) > 0]
        timings = {"profile": (time.perf_counter() - t0) * 1000}
        if tower:
            t = time.perf_counter()
            for p in tower:
                p.vector = self.cache.get(p.key)
            todo = [p for p in tower if p.vector is None]
            if todo:
                vectors = self.bundle.user_tower(self.profiles.inputs(
                    [p.req.user_id for p in todo], [p.history for p in todo], [p.req.context for p in todo]))
                for p, vector in zip(todo, vectors):
                    p.vector = vector
                    self.cache.put(p.key, vector)
            timings["embed"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            together = [p for p in tower if not p.req.filters]  # searched in one call; filtered ones alone
            found = iter(self.index.search_many(np.stack([p.vector for p in together]), [p.req.k for p in together],
                                                [p.exclude for p in together]) if together else [])
            for p in tower:
                ids, scores = self.index.search(p.vector, p.req.k, p.req.filters, p.exclude) if p.req.filters \
                    else next(found)
                p.lists.append((Candidates(ids, scores, ["two_tower"] * len(ids)), p.quotas["two_tower"]))
            timings["search"] = (time.perf_counter() - t) * 1000
        return [p if isinstance(p, DataError) else self._answer(p, dict(timings), t0) for p in plans]

    def _answer(self, p: _Plan, timings: dict[str, float], t0: float) -> RecallResponse:
        """The request's own channels (ItemCF, popularity) merged with what the batch found for it."""
        req = p.req
        if p.quotas.get("itemcf", 0) > 0:
            t = time.perf_counter()
            p.lists.append((self._itemcf(p.history, req.k, req.filters, p.exclude), p.quotas["itemcf"]))
            timings["itemcf"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        # Popularity always back-fills: with a zero quota it still gets a vanishing share, so it fills
        # only the slots the other lists leave empty (a strict filter, a cold user).
        p.lists.append((self._popular(req.k, req.filters, p.exclude), max(p.quotas.get("popular", 0.0), 1e-9)))
        merged = merge_by_quota([c for c, _ in p.lists], [share for _, share in p.lists], req.k)
        timings["merge"] = (time.perf_counter() - t) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        items = [{"item_id": i, "score": s, "channel": c}
                 for i, s, c in zip(merged.item_ids, merged.scores.tolist(), merged.channels)]
        known = req.user_id in self.profiles or bool(req.recent_items)
        # Built from values this method made: validating them again would cost ~20 µs per 100 items.
        return RecallResponse.model_construct(user_id=req.user_id, items=items, version=self.version,
                                              cold_start=not known, timings_ms=timings)

"""One bundle made live: the ONNX user tower, a live index and the popularity list, answering
recall requests.  A request keeps the version it started with, so a swap never mixes a user
tower of one version with an index of another."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
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

    def embed_item(self, item_id: str, attributes: Mapping[str, object]) -> np.ndarray:
        """The item tower's vector for an item described by ``attributes`` (new or changed);
        attributes the item tower reads but the change leaves out count as missing."""
        columns = [f.input_column for f in self.bundle.config.features.item if f.input_column != "item_id"]
        table = pd.DataFrame([dict(attributes)], index=pd.Index([item_id], dtype=object))
        table = table.reindex(columns=list(dict.fromkeys([*table.columns, *columns])))
        inputs = self.bundle.encoders.encode_items(table, pd.Index([item_id], dtype=object))
        return self.bundle.item_tower(inputs)[0]

    def upsert_item(self, item_id: str, attributes: Mapping[str, object]) -> None:
        self.index.upsert(item_id, self.embed_item(item_id, attributes), attributes)

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

    def recall(self, req: RecallRequest) -> RecallResponse:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        unknown = [f for f in req.filters if f not in self.index.filterable]
        if unknown:
            raise DataError(f"cannot filter on {unknown}; filterable attributes: {self.index.filterable}")
        quotas = dict(req.quotas or self.quotas)
        missing = [c for c, share in quotas.items() if share > 0 and c not in self.channels]
        if missing:
            raise DataError(f"quotas name {missing}; version {self.version} serves {list(self.channels)}")
        history = self.profiles.history(req.user_id) + tuple(req.recent_items)
        known = req.user_id in self.profiles or bool(req.recent_items)
        exclude = set(history) | set(req.exclude)
        timings["profile"] = (time.perf_counter() - t0) * 1000
        lists: list[Candidates] = []
        shares: list[float] = []
        if quotas.get("two_tower", 0) > 0:
            t = time.perf_counter()
            key = (self.version, req.user_id, history[-50:], tuple(sorted(req.context.items())))
            vector = self.cache.get(key)
            if vector is None:
                vector = self.bundle.user_tower(self.profiles.inputs(req.user_id, history, req.context))[0]
                self.cache.put(key, vector)
            timings["embed"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            ids, scores = self.index.search(vector, req.k, req.filters, exclude)
            lists.append(Candidates(ids, scores, ["two_tower"] * len(ids)))
            shares.append(quotas["two_tower"])
            timings["search"] = (time.perf_counter() - t) * 1000
        if quotas.get("itemcf", 0) > 0:
            t = time.perf_counter()
            lists.append(self._itemcf(history, req.k, req.filters, exclude))
            shares.append(quotas["itemcf"])
            timings["itemcf"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        lists.append(self._popular(req.k, req.filters, exclude))
        # Popularity always back-fills: with a zero quota it still gets a vanishing share, so it fills
        # only the slots the other lists leave empty (a strict filter, a cold user).
        shares.append(max(quotas.get("popular", 0.0), 1e-9))
        merged = merge_by_quota(lists, shares, req.k)
        timings["merge"] = (time.perf_counter() - t) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        items = [{"item_id": i, "score": s, "channel": c}
                 for i, s, c in zip(merged.item_ids, merged.scores.tolist(), merged.channels)]
        # Built from values this method made: validating them again would cost ~20 µs per 100 items.
        return RecallResponse.model_construct(user_id=req.user_id, items=items, version=self.version,
                                              cold_start=not known, timings_ms=timings)

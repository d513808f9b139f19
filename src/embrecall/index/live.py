"""The item index while serving: vectors and attributes that change under traffic.

Each item occupies a slot; an update writes a new slot and retires the old one, a delete
retires it (tombstones), so the same code works for flat, HNSW and IVF indexes (HNSW cannot
remove vectors); a flat index overwrites an updated item's vector in place instead.  Once
retired slots outnumber live ones, the index is compacted: live slots packed, the FAISS index
rebuilt over them (under the lock: a pause of one build, amortised over as many changes as
there are items), so memory follows the catalog, not the number of changes.

Unfiltered queries are searched together, skipping retired slots by a shared ID selector and
fetching more to drop each query's excluded items.  Attribute filters (or many exclusions)
become one bitmap per query, handed to FAISS as an ID selector; when the approximate search
returns fewer than k although k eligible items exist (a very selective filter), the eligible
slots are scored exactly instead, so k results come back whenever k eligible items exist.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import pandas as pd
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from embrecall.config import IndexConfig
from embrecall.errors import BundleError
from embrecall.index.faiss_index import FaissIndex
from embrecall.index.protocol import Filters, attribute_values, fetch_depth

__all__ = ["LiveIndex"]

EXACT_BELOW = 20_000  # eligible items below which exact scoring beats an ANN search with a selector
_MAX_LISTED = 50_000  # retired slots up to which an unfiltered search lists them instead of using a bitmap
_MAX_FETCHED = 1_000  # excluded items up to which an unfiltered search fetches more instead of using a bitmap
EXACT_BLOCK = 1 << 24  # scores (queries x slots) held at a time when several queries are scored exactly
FILL_ROWS = 65_536  # rows of the given vectors copied into the index's own at a time
COMPACT_ABOVE = 1_024  # retired slots below which no compaction runs (rebuilding a tiny index each change is waste)


class _Attribute:
    """One filterable column: (slots, width) codes of its values, -1 padded; multi-valued columns use '|'."""

    def __init__(self, values: Sequence[object], capacity: int):
        self.vocab: dict[str, int] = {}
        tokens = [attribute_values(v) for v in values]
        width = max([len(t) for t in tokens] + [1])
        self.codes = np.full((capacity, width), -1, dtype=np.int32)
        for slot, toks in enumerate(tokens):
            self.set(slot, toks)

    def set(self, slot: int, tokens: list[str]) -> None:
        if len(tokens) > self.codes.shape[1]:
            pad = np.full((self.codes.shape[0], len(tokens) - self.codes.shape[1]), -1, dtype=np.int32)
            self.codes = np.hstack([self.codes, pad])
        row = [self.vocab.setdefault(t, len(self.vocab)) for t in tokens]
        self.codes[slot] = -1
        self.codes[slot, : len(row)] = row

    def grow(self, capacity: int) -> None:
        extra = np.full((capacity - self.codes.shape[0], self.codes.shape[1]), -1, dtype=np.int32)
        self.codes = np.vstack([self.codes, extra])

    def keep(self, slots: np.ndarray, capacity: int) -> None:
        """Only ``slots``, in that order, at the front of ``capacity`` slots (values no slot holds dropped)."""
        kept = self.codes[slots]
        used = np.unique(kept[kept >= 0])
        names = sorted(self.vocab, key=self.vocab.__getitem__)
        remap = np.full(len(names) + 1, -1, dtype=np.int32)  # old code -> new code; index -1 stays -1
        remap[used] = np.arange(len(used), dtype=np.int32)
        self.vocab = {names[c]: i for i, c in enumerate(used.tolist())}
        self.codes = np.full((capacity, kept.shape[1]), -1, dtype=np.int32)
        self.codes[: len(slots)] = remap[kept]

    def values(self, n: int) -> list[str]:
        """The first ``n`` slots' values, '|'-joined as they came in."""
        names = np.array([*sorted(self.vocab, key=self.vocab.__getitem__), ""], dtype=object)  # code -1 -> ""
        return ["|".join(v for v in row if v) for row in names[self.codes[:n]].tolist()]

    def matches(self, wanted: Collection[str], rows: slice | np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` (slots) holds any wanted value."""
        accepted = np.zeros(len(self.vocab) + 1, dtype=bool)  # by code; the last entry is -1 (no value)
        accepted[[self.vocab[w] for w in wanted if w in self.vocab]] = True
        return np.asarray(accepted[self.codes[rows]].any(axis=1))  # a gather: np.isin sorts, ~10x slower at 1M slots


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest ``scores``, best first (ties in position order)."""
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]


def _without(slots: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """``slots`` less those in the sorted ``dropped`` (a binary search: np.isin costs 4x more here)."""
    if not len(dropped):
        return slots
    at = np.minimum(np.searchsorted(dropped, slots), len(dropped) - 1)
    return slots[dropped[at] != slots]


class Rows(Protocol):
    """(n, D) vectors that can be read a block of rows at a time: an array, or a bundle's file."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, rows: slice) -> np.ndarray: ...


def _unless_flat(index: faiss.Index) -> faiss.Index | None:
    return None if isinstance(index, faiss.IndexFlat) else index


class LiveIndex:
    def __init__(
        self,
        item_ids: Sequence[str],
        vectors: Rows,
        attributes: pd.DataFrame | None,
        cfg: IndexConfig,
        filterable: Sequence[str] = (),
        index: faiss.Index | None = None,
        exact_below: int = EXACT_BELOW,
        compact_above: int = COMPACT_ABOVE,
    ):
        """``vectors``: copied in ``FILL_ROWS`` rows at a time, so a file's never all in memory twice;
        ``index``: an index already holding ``vectors`` in order (a bundle's), else one is built;
        a flat one is not kept: exact search is a matrix product over these vectors, so a second
        copy of them in FAISS would only cost memory;
        ``exact_below``: with fewer eligible items than this, a query scores them exactly;
        ``compact_above``: retired slots tolerated before compaction, however small the catalog."""
        self.exact_below, self.compact_above = exact_below, compact_above
        n, self.dim = vectors.shape
        if len(item_ids) != n:
            raise BundleError(f"{len(item_ids)} item ids for {n} item vectors; they must pair up")
        self.cfg = cfg
        self._lock = threading.Lock()
        capacity = max(16, 2 * n)
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        for start in range(0, n, FILL_ROWS):
            end = min(n, start + FILL_ROWS)
            self._vectors[start:end] = vectors[start:end]
        self._ids = np.empty(capacity, dtype=object)
        self._ids[:n] = list(item_ids)
        self._alive = np.zeros(capacity, dtype=bool)
        self._alive[:n] = True
        self._n = n
        self._slot = {item: slot for slot, item in enumerate(item_ids)}
        self._dead: set[int] = set()  # retired slots, which searches must skip
        if index is not None and (index.ntotal != n or index.d != self.dim):
            raise BundleError(f"index holds {index.ntotal} vectors of dim={index.d}, expected {n} of dim={self.dim}")
        self._index = self._ann(self._vectors[:n], cfg) if index is None else _unless_flat(index)
        table = attributes.reindex(pd.Index(list(item_ids), dtype=object)) if attributes is not None else None
        self._attrs = {
            c: _Attribute(table[c].tolist() if table is not None and c in table else [None] * n, capacity)
            for c in filterable
        }

    # ------------------------------------------------------------------ changes

    def upsert(self, item_id: str, vector: np.ndarray, attributes: Mapping[str, object] | None = None) -> None:
        """Add or replace an item; it is searchable when this returns."""
        v = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if v.shape[1] != self.dim:
            raise BundleError(f"item vector has dim={v.shape[1]}, the index holds dim={self.dim}")
        with self._lock:
            old = self._slot.get(item_id)
            if old is not None and self._index is None:  # exact search: overwritten in place, no retired slot
                self._vectors[old] = v[0]
                self._set_attributes(old, attributes)
                return
            if self._n == len(self._alive):
                self._grow(2 * len(self._alive))
            if old is not None:
                self._alive[old] = False
                self._dead.add(old)
            slot = self._n
            self._vectors[slot] = v[0]
            self._ids[slot] = item_id
            self._set_attributes(slot, attributes)
            if self._index is not None:
                self._index.add(v)
            self._alive[slot] = True
            self._slot[item_id] = slot
            self._n += 1
            if len(self._dead) > max(self.compact_above, len(self._slot)):
                self._compact()

    def _set_attributes(self, slot: int, attributes: Mapping[str, object] | None) -> None:
        for name, attr in self._attrs.items():
            attr.set(slot, attribute_values((attributes or {}).get(name)))

    def delete(self, item_id: str) -> bool:
        """Retire an item; False if it was not there."""
        with self._lock:
            slot = self._slot.pop(item_id, None)
            if slot is None:
                return False
            self._alive[slot] = False
            self._dead.add(slot)
            if len(self._dead) > max(self.compact_above, len(self._slot)):
                self._compact()
            return True

    def _compact(self) -> None:
        """Pack the live slots at the front and rebuild the ANN index over them (the lock is held)."""
        live = np.flatnonzero(self._alive[: self._n])
        capacity = max(16, 2 * len(live))
        vectors = self._vectors[live]
        cfg = self.cfg
        if cfg.kind.startswith("ivf") and len(live) < max(39, cfg.ivf_nlist or 0):
            cfg = cfg.model_copy(update={"kind": "flat"})  # too few items left to cluster: exact search
        self._index = self._ann(vectors, cfg)
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self._vectors[: len(live)] = vectors
        ids = self._ids[live]
        self._ids = np.empty(capacity, dtype=object)
        self._ids[: len(live)] = ids
        self._alive = np.zeros(capacity, dtype=bool)
        self._alive[: len(live)] = True
        for attr in self._attrs.values():
            attr.keep(live, capacity)
        self._slot = {item: slot for slot, item in enumerate(ids.tolist())}
        self._dead = set()
        self._n = len(live)

    def save(self, folder: Path) -> None:
        """Write every slot (index, vectors, ids, liveness, attributes); ``load`` reopens it."""
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            n = self._n
            if self._index is not None:
                faiss.write_index(self._index, str(folder / "index.faiss"))
            save_numpy({"vectors": self._vectors[:n]}, str(folder / "vectors.safetensors"))
            table = pd.DataFrame(
                {
                    "item_id": self._ids[:n],
                    "alive": self._alive[:n],
                    **{name: attr.values(n) for name, attr in self._attrs.items()},
                }
            )
        table.to_parquet(folder / "slots.parquet", index=False)
        (folder / "live.json").write_text(json.dumps({"index": self.cfg.model_dump(), "filterable": self.filterable}))

    @classmethod
    def load(cls, folder: Path) -> LiveIndex:
        meta = json.loads((folder / "live.json").read_text())
        table = pd.read_parquet(folder / "slots.parquet")
        alive = table["alive"].to_numpy(dtype=bool)
        attributes = table[alive].set_index("item_id")  # one live slot per item: a unique index
        live = cls(
            table["item_id"].tolist(),
            load_numpy(str(folder / "vectors.safetensors"))["vectors"],
            attributes,
            IndexConfig(**meta["index"]),
            meta["filterable"],
            index=faiss.read_index(str(folder / "index.faiss")) if (folder / "index.faiss").is_file() else None,
        )
        live._alive[: len(alive)] = alive
        live._dead = set(np.flatnonzero(~alive).tolist())
        live._slot = {item: slot for slot, item in enumerate(table["item_id"]) if alive[slot]}
        return live

    def _grow(self, capacity: int) -> None:
        extra = capacity - len(self._alive)
        self._vectors = np.vstack([self._vectors, np.zeros((extra, self.dim), dtype=np.float32)])
        self._ids = np.concatenate([self._ids, np.empty(extra, dtype=object)])
        self._alive = np.concatenate([self._alive, np.zeros(extra, dtype=bool)])
        for attr in self._attrs.values():
            attr.grow(capacity)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._slot

    @property
    def filterable(self) -> list[str]:
        return list(self._attrs)

    def _eligible(self, filters: Filters | None, exclude: Collection[str]) -> np.ndarray:
        """(n_slots,) mask of live items that pass every filter (any listed value matches) and are not excluded."""
        with self._lock:
            n = self._n
            mask = self._alive[:n].copy()
            for name, wanted in (filters or {}).items():
                mask &= self._attrs[name].matches(wanted, slice(0, n))
            slots = [s for s in (self._slot.get(i) for i in exclude) if s is not None]
        mask[slots] = False
        return mask

    def vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """(n, D) vectors of ``item_ids`` (NaN rows for items not in the index)."""
        with self._lock:
            slots = np.fromiter((self._slot.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
            out = self._vectors[np.maximum(slots, 0)] if len(slots) else np.zeros((0, self.dim), np.float32)
        out[slots < 0] = np.nan
        return out

    def select(
        self, item_ids: Sequence[str], filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> np.ndarray:
        """Positions in ``item_ids`` of the items in the index that pass the filters and are not excluded."""
        dropped = set(exclude)
        with self._lock:  # one pass over the ids (this runs per request for the popularity list)
            slots = np.array([-1 if i in dropped else self._slot.get(i, -1) for i in item_ids], dtype=np.int64)
            keep = slots >= 0
            for name, wanted in (filters or {}).items():
                keep &= self._attrs[name].matches(wanted, np.maximum(slots, 0))
        return np.flatnonzero(keep)

    def search(
        self, query: np.ndarray, k: int, filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> tuple[list[str], np.ndarray]:
        """Top-k eligible items for one (D,) query, best first."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if not filters:
            return self.search_many(q[None], [k], [exclude])[0]
        return self._search_masked(q, k, filters, exclude)

    def search_many(
        self, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[Collection[str]]
    ) -> list[tuple[list[str], np.ndarray]]:
        """Unfiltered top-k for each of (n, D) queries, in one FAISS call where it can: retired
        slots are skipped by a selector the batch shares, each query's exclusions by fetching
        that many more and dropping them.  A query that this leaves short gets the bitmap path."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(len(ks), self.dim)
        with self._lock:
            skipped = [
                np.sort(np.fromiter({s for s in (self._slot.get(i) for i in ex) if s is not None}, np.int64))
                for ex in excludes
            ]
            live = len(self._slot)
            dead = np.fromiter(self._dead, dtype=np.int64) if len(self._dead) <= _MAX_LISTED else None
        ks = [min(k, live - len(skip)) for k, skip in zip(ks, skipped)]
        ann = (
            [
                i
                for i, skip in enumerate(skipped)
                if ks[i] > 0 and not self._exact(live - len(skip)) and len(skip) <= _MAX_FETCHED
            ]
            if dead is not None
            else []
        )
        found: dict[int, np.ndarray] = {}
        if ann and dead is not None:
            fetch = fetch_depth(self._fetch(max(ks[i] for i in ann)), max(len(skipped[i]) for i in ann))
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead)) if len(dead) else None
            slots = self._ann_search(q[ann], fetch, selector)
            for i, row in zip(ann, slots):
                row = row[row >= 0]
                found[i] = _without(row, skipped[i])
        results: list[tuple[list[str], np.ndarray]] = [([], np.zeros(0, np.float32))] * len(ks)
        short = []
        for i, k in enumerate(ks):
            if k > 0 and i in found and len(found[i]) >= k:
                results[i] = self._rerank(q[i], found[i], k)
            elif k > 0:
                short.append(i)
        exact = [i for i in short if self._exact(live - len(skipped[i]))]
        if exact:
            for i, got in zip(exact, self._best_many(q[exact], [ks[i] for i in exact], [skipped[i] for i in exact])):
                results[i] = got
        for i in sorted(set(short) - set(exact)):  # the ANN search came up short: a bitmap of the eligible
            results[i] = self._search_masked(q[i], ks[i], None, excludes[i])
        return results

    def _best_many(
        self, q: np.ndarray, ks: Sequence[int], skipped: Sequence[np.ndarray]
    ) -> list[tuple[list[str], np.ndarray]]:
        """Exact top-k of unfiltered queries: one matrix product per block of queries (what a flat
        index or an evaluation of thousands of users needs), retired and excluded slots scored -inf.
        ``ks`` never exceed the eligible items."""
        with self._lock:  # compaction replaces these arrays: keep the ones of one moment
            vectors, ids, n = self._vectors, self._ids, self._n
            dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))  # retired: few, not a scan
        rows = max(1, EXACT_BLOCK // max(n, 1))
        out = []
        for start in range(0, len(ks), rows):
            scores = q[start : start + rows] @ vectors[:n].T  # (b, n)
            scores[:, dead] = -np.inf
            for j, row in enumerate(scores, start):
                row[skipped[j]] = -np.inf
                top = _best(row, ks[j])
                out.append((ids[top].tolist(), row[top].astype(np.float32)))
        return out

    def _search_masked(
        self, q: np.ndarray, k: int, filters: Filters | None, exclude: Collection[str]
    ) -> tuple[list[str], np.ndarray]:
        """Top k by a bitmap of eligible slots: exactly when few are eligible, else an ANN search
        with the bitmap as selector (exactly after all, if that finds fewer than k)."""
        mask = self._eligible(filters, exclude)
        count = int(np.count_nonzero(mask))
        k = min(k, count)
        if k == 0:
            return [], np.zeros(0, np.float32)
        if not self._exact(count):
            fetch = self._fetch(k)
            # faiss's Python layer takes the packed bitmap alone (its stub names the C++ (n, bitmap) form)
            selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # type: ignore[call-arg, arg-type]
            slots = self._ann_search(q[None], fetch, selector)
            row = slots[0][slots[0] >= 0]
            if len(row) >= k:
                return self._rerank(q, row, k)
        return self._best_of(q, mask, k)

    def _exact(self, eligible: int) -> bool:
        """Whether to score every slot exactly: when few are eligible, and always without an ANN
        index (a flat one: a FAISS flat scan with an ID selector costs several times one
        matrix-vector product)."""
        return eligible < self.exact_below or self._index is None

    def _best_of(self, q: np.ndarray, mask: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """The k best of the eligible slots, scored exactly: one product over every slot is cheaper
        than gathering the eligible vectors first (a copy of them all)."""
        scores = self._vectors[: len(mask)] @ q
        scores[~mask] = -np.inf
        top = _best(scores, k)
        return self._ids[top].tolist(), scores[top].astype(np.float32)

    def _fetch(self, k: int) -> int:
        return 2 * k if self.cfg.kind == "ivf_sq8" else k  # quantised scores: fetch more, re-rank exactly

    def _rerank(self, q: np.ndarray, slots: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """The k of ``slots`` with the best exact scores, best first."""
        scores = self._vectors[slots] @ q
        top = _best(scores, k)
        return self._ids[slots[top]].tolist(), scores[top].astype(np.float32)

    @staticmethod
    def _ann(vectors: np.ndarray, cfg: IndexConfig) -> faiss.Index | None:
        """The ANN index ``cfg`` asks for over ``vectors``; none for ``flat`` (exact search)."""
        return None if cfg.kind == "flat" else FaissIndex.build(vectors, cfg).index

    def _ann_search(self, q: np.ndarray, fetch: int, selector: faiss.IDSelector | None) -> np.ndarray:
        """Slots the ANN index finds for each query (-1 past the end); none if a compaction left
        too few items for one since the caller looked (its queries then go exact)."""
        with self._lock:
            if self._index is None:
                return np.full((len(q), fetch), -1, dtype=np.int64)
            return self._index.search(q, fetch, params=self._params(selector, fetch))[1]

    def _params(self, selector: faiss.IDSelector | None, k: int) -> faiss.SearchParameters:
        given = {"sel": selector} if selector is not None else {}
        if isinstance(self._index, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=max(self.cfg.ef_search, k), **given)  # type: ignore[attr-defined]
        if isinstance(self._index, faiss.IndexIVF):
            return faiss.SearchParametersIVF(nprobe=self.cfg.nprobe, **given)  # type: ignore[call-arg]
        return faiss.SearchParameters(**given)

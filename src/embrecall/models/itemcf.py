"""The ItemCF channel: items that users interact with close together are similar.

Co-occurrence counts pairs up to ``window`` steps apart in each user's time-ordered history
(a pair d steps apart counts ``pair_decay**(d-1)``), normalised by popularity:
``sim(i, j) = c_ij / (n_i**alpha * n_j**(1 - alpha))`` (alpha = 0.5 is cosine).  Only the top
``neighbours`` of each item are kept, as inverted lists; a user's candidates are scored by
summing the neighbour lists of the last ``history`` items, weighted ``decay**p`` by recency.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy

from embrecall.config import Config, ItemCFConfig
from embrecall.data.split import sort_events
from embrecall.errors import NotFittedError
from embrecall.models.channel import Candidates, UserQuery, fetch_depth, recent_first, take_top

__all__ = ["ItemCF"]


class ItemCF:
    name = "itemcf"

    def __init__(self, cfg: ItemCFConfig | None = None):
        self.cfg = cfg or ItemCFConfig()
        self.item_ids_: np.ndarray | None = None
        self.neighbours_: sp.csr_matrix | None = None  # row i: the kept neighbours of item i and their sims

    def fit(self, events: pd.DataFrame) -> "ItemCF":
        c = self.cfg
        ev = sort_events(events)
        codes, catalog = pd.factorize(ev["item_id"])
        n = len(catalog)
        user = ev["user_id"].to_numpy()
        counts = np.bincount(codes, minlength=n).astype(np.float64)
        co = sp.csr_matrix((n, n), dtype=np.float64)
        for d in range(1, c.window + 1):
            same = user[d:] == user[:-d]
            a, b = codes[:-d][same], codes[d:][same]
            keep = a != b
            a, b = a[keep], b[keep]
            w = np.full(len(a), c.pair_decay ** (d - 1))
            co = co + sp.csr_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n, n))
        co = co.tocoo()
        sim = co.data / (counts[co.row] ** c.alpha * counts[co.col] ** (1.0 - c.alpha))
        # Keep the top `neighbours` per row: sort by (row, -sim) and cut each row's run.
        order = np.lexsort((-sim, co.row))
        rows, cols, sim = co.row[order], co.col[order], sim[order]
        starts = np.searchsorted(rows, np.arange(n))
        rank = np.arange(len(rows)) - starts[rows]
        kept = rank < c.neighbours
        self._set(np.asarray(catalog, dtype=object),
                  sp.csr_matrix((sim[kept], (rows[kept], cols[kept])), shape=(n, n)))
        return self

    def _set(self, item_ids: np.ndarray, neighbours: sp.csr_matrix) -> None:
        self.item_ids_, self.neighbours_ = item_ids, neighbours
        self._position = {item: i for i, item in enumerate(item_ids)}  # per-request lookups: no pandas

    def save(self, folder: Path) -> list[str]:
        """The inverted lists as CSR arrays (safetensors) and the item ids (Parquet)."""
        nb = self._fitted()
        save_numpy({"indptr": nb.indptr.astype(np.int64), "indices": nb.indices.astype(np.int64),
                    "sims": nb.data.astype(np.float32)}, str(folder / "itemcf.safetensors"))
        pd.DataFrame({"item_id": self.item_ids_}).to_parquet(folder / "itemcf_items.parquet", index=False)
        return ["itemcf.safetensors", "itemcf_items.parquet"]

    @classmethod
    def load(cls, folder: Path, cfg: Config) -> "ItemCF":
        arrays = load_numpy(str(folder / "itemcf.safetensors"))
        item_ids = pd.read_parquet(folder / "itemcf_items.parquet")["item_id"].to_numpy(dtype=object)
        n = len(item_ids)
        model = cls(cfg.channels.itemcf)
        model._set(item_ids, sp.csr_matrix((arrays["sims"], arrays["indices"], arrays["indptr"]), shape=(n, n)))
        return model

    def similar(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most similar items to one item (the inverted list), best first."""
        nb = self._fitted()
        pos = self._position.get(item_id, -1)
        if pos < 0:
            return []
        row = nb.getrow(pos)
        top = np.argsort(-row.data, kind="stable")[:k]
        return [(self.item_ids_[row.indices[t]], float(row.data[t])) for t in top]  # type: ignore[index]

    def _fitted(self) -> sp.csr_matrix:
        if self.neighbours_ is None:
            raise NotFittedError("ItemCF is not fitted yet. Call 'fit' with training events first.")
        return self.neighbours_

    def _scores(self, q: UserQuery) -> sp.coo_matrix:
        """(1, n) summed neighbour lists of the user's recent items, weighted by recency."""
        nb = self._fitted()
        recent = recent_first(q.history, self.cfg.history)
        pos = np.fromiter((self._position.get(i, -1) for i in recent), dtype=np.int64, count=len(recent))
        weights = self.cfg.decay ** np.arange(len(recent))
        known = pos >= 0
        return (sp.csr_matrix((weights[known], (np.zeros(known.sum(), int), pos[known])),
                              shape=(1, nb.shape[0])) @ nb).tocoo()

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each item's summed similarity to the user's recent items (0 when none is a neighbour; -inf
        for an item ItemCF never saw)."""
        out = []
        for q, wanted in zip(queries, items):
            row = self._scores(q)
            dense = np.zeros(self._fitted().shape[0], dtype=np.float32)
            dense[row.col] = row.data
            pos = np.fromiter((self._position.get(i, -1) for i in wanted), dtype=np.int64, count=len(wanted))
            out.append(np.where(pos >= 0, dense[np.maximum(pos, 0)], -np.inf).astype(np.float32))
        return out

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        out = []
        for i, q in enumerate(queries):
            scores = self._scores(q)
            ex = exclude[i] if exclude is not None else ()
            order = np.argsort(-scores.data, kind="stable")[: fetch_depth(k, len(ex))]
            out.append(take_top(self.item_ids_[scores.col[order]], scores.data[order], k, ex, self.name))
        return out

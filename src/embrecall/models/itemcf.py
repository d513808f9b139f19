"""The ItemCF channel: items that users interact with close together are similar.

Co-occurrence counts pairs up to ``window`` steps apart in each user's time-ordered history
(a pair d steps apart counts ``pair_decay**(d-1)``), normalised by popularity:
``sim(i, j) = c_ij / (n_i**alpha * n_j**(1 - alpha))`` (alpha = 0.5 is cosine).  Only the top
``neighbours`` of each item are kept, as inverted lists; a user's candidates are scored by
summing the neighbour lists of the last ``history`` items, weighted ``decay**p`` by recency.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embrecall.config import ItemCFConfig
from embrecall.data.split import sort_events
from embrecall.errors import NotFittedError
from embrecall.models.channel import Candidates, UserQuery, take_top

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
        self.neighbours_ = sp.csr_matrix((sim[kept], (rows[kept], cols[kept])), shape=(n, n))
        self.item_ids_ = np.asarray(catalog, dtype=object)
        self._position = pd.Index(self.item_ids_, dtype=object)
        return self

    def similar(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most similar items to one item (the inverted list), best first."""
        nb = self._fitted()
        pos = self._position.get_indexer([item_id])[0]
        if pos < 0:
            return []
        row = nb.getrow(pos)
        top = np.argsort(-row.data, kind="stable")[:k]
        return [(self.item_ids_[row.indices[t]], float(row.data[t])) for t in top]  # type: ignore[index]

    def _fitted(self) -> sp.csr_matrix:
        if self.neighbours_ is None:
            raise NotFittedError("ItemCF is not fitted yet. Call 'fit' with training events first.")
        return self.neighbours_

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        nb = self._fitted()
        out = []
        for i, q in enumerate(queries):
            recent = pd.Index(list(q.history)[::-1][: self.cfg.history], dtype=object)
            pos = self._position.get_indexer(recent)
            weights = self.cfg.decay ** np.arange(len(recent))
            known = pos >= 0
            scores = (sp.csr_matrix((weights[known], (np.zeros(known.sum(), int), pos[known])),
                                    shape=(1, nb.shape[0])) @ nb).tocoo()
            ex = exclude[i] if exclude is not None else ()
            order = np.argsort(-scores.data, kind="stable")[: k + len(ex)]
            out.append(take_top(self.item_ids_[scores.col[order]], scores.data[order], k, ex, self.name))
        return out

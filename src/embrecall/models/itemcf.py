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


PAIR_BUDGET = 20_000_000  # co-occurring pairs counted at a time (about 16 bytes each while counted)


def _blocks(load: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive index ranges whose summed ``load`` stays about ``budget`` (at least one index each)."""
    ends = np.searchsorted(np.cumsum(load), np.arange(budget, load.sum() + budget, budget), side="right")
    bounds = np.unique(np.r_[0, np.clip(ends, 1, len(load)), len(load)])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _top_per_row(block: sp.csr_matrix, n_rows: np.ndarray, n_cols: np.ndarray, alpha: float,
                 keep: int) -> sp.csr_matrix:
    """``c_ij / (n_i**alpha * n_j**(1 - alpha))`` of a block's counts, each row cut to its ``keep`` best."""
    co = block.tocoo()
    sim = (co.data / (n_rows[co.row] ** alpha * n_cols[co.col] ** (1.0 - alpha))).astype(np.float32)
    order = np.lexsort((-sim, co.row))
    rows, cols, sim = co.row[order], co.col[order], sim[order]
    starts = np.searchsorted(rows, np.arange(block.shape[0]))
    kept = np.arange(len(rows)) - starts[rows] < keep
    return sp.csr_matrix((sim[kept], (rows[kept], cols[kept])), shape=block.shape)


class ItemCF:
    name = "itemcf"

    def __init__(self, cfg: ItemCFConfig | None = None):
        self.cfg = cfg or ItemCFConfig()
        self.item_ids_: np.ndarray | None = None
        self.neighbours_: sp.csr_matrix | None = None  # row i: the kept neighbours of item i and their sims

    def fit(self, events: pd.DataFrame) -> "ItemCF":
        """Count co-occurrences a block of items at a time (rows of the item x item matrix whose
        pairs add up to about ``PAIR_BUDGET``), in float32, keeping each block's top neighbours
        before the next: memory follows the budget, not the log's number of pairs."""
        c = self.cfg
        ev = sort_events(events[["user_id", "item_id", "timestamp"]])
        codes, catalog = pd.factorize(ev["item_id"])
        codes = codes.astype(np.int32)
        user = pd.factorize(ev["user_id"])[0].astype(np.int32)  # sorted by user: a user's events are adjacent
        del ev
        n = len(catalog)
        counts = np.bincount(codes, minlength=n).astype(np.float64)
        blocks = []
        for lo, hi in _blocks(counts * 2 * c.window, PAIR_BUDGET):
            block = self._block(codes, user, lo, hi, n)
            blocks.append(_top_per_row(block, counts[lo:hi], counts, c.alpha, c.neighbours))
        self._set(np.asarray(catalog, dtype=object), sp.vstack(blocks, format="csr") if blocks
                  else sp.csr_matrix((0, 0), dtype=np.float32))
        return self

    def _block(self, codes: np.ndarray, user: np.ndarray, lo: int, hi: int, n: int) -> sp.csr_matrix:
        """Rows ``lo..hi`` of the co-occurrence matrix: every pair up to ``window`` steps apart in a
        user's history whose first item is in the block, weighted ``pair_decay**(d - 1)``."""
        rows, cols, weights = [], [], []
        for d in range(1, self.cfg.window + 1):
            at = np.flatnonzero(user[d:] == user[:-d])
            a, b = codes[at], codes[at + d]
            for x, y in ((a, b), (b, a)):
                mine = (x >= lo) & (x < hi) & (x != y)
                rows.append(x[mine] - lo)
                cols.append(y[mine])
                weights.append(np.full(int(mine.sum()), self.cfg.pair_decay ** (d - 1), dtype=np.float32))
        return sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(hi - lo, n), dtype=np.float32)  # duplicate pairs are summed

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

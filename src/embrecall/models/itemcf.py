"""The ItemCF channel: items that users interact with close together are similar.

Co-occurrence counts pairs up to ``window`` steps apart in each user's time-ordered history
(a pair d steps apart counts ``pair_decay**(d-1)``), normalised by popularity:
``sim(i, j) = c_ij / (n_i**alpha * n_j**(1 - alpha))`` (alpha = 0.5 is cosine).  Only the top
``neighbours`` of each item are kept, as inverted lists (``models.neighbours`` scores users from
them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embrecall.config import ItemCFConfig
from embrecall.data.log import EventLog
from embrecall.models.neighbours import Neighbours

__all__ = ["ItemCF"]


PAIR_BUDGET = 20_000_000  # co-occurring pairs counted at a time (about 16 bytes each while counted)


def _blocks(load: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive index ranges whose summed ``load`` stays about ``budget`` (at least one index each)."""
    ends = np.searchsorted(np.cumsum(load), np.arange(budget, load.sum() + budget, budget), side="right")
    bounds = np.unique(np.r_[0, np.clip(ends, 1, len(load)), len(load)])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _top_per_row(
    block: sp.csr_matrix, n_rows: np.ndarray, n_cols: np.ndarray, alpha: float, keep: int
) -> sp.csr_matrix:
    """``c_ij / (n_i**alpha * n_j**(1 - alpha))`` of a block's counts, each row cut to its ``keep`` best."""
    co = block.tocoo()
    sim = (co.data / (n_rows[co.row] ** alpha * n_cols[co.col] ** (1.0 - alpha))).astype(np.float32)
    order = np.lexsort((-sim, co.row))
    rows, cols, sim = co.row[order], co.col[order], sim[order]
    starts = np.searchsorted(rows, np.arange(block.shape[0]))
    kept = np.arange(len(rows)) - starts[rows] < keep
    return sp.csr_matrix((sim[kept], (rows[kept], cols[kept])), shape=block.shape)


class ItemCF(Neighbours):
    name = "itemcf"

    def __init__(self, cfg: ItemCFConfig | None = None):
        super().__init__(cfg or ItemCFConfig())
        self.cfg: ItemCFConfig

    def fit(self, log: EventLog, items: pd.DataFrame | None = None) -> ItemCF:
        """Count co-occurrences a block of items at a time (rows of the item x item matrix whose
        pairs add up to about ``PAIR_BUDGET``), in float32, summed over the log's parts (each
        holds whole users), keeping each block's top neighbours before the next: memory follows
        the budget and the events' codes (8 bytes each), not the log's number of pairs."""
        c = self.cfg
        item_counts = log.item_counts()
        catalog = item_counts.index
        n = len(catalog)
        counts = item_counts.to_numpy(np.float64)
        coded = [
            (
                catalog.get_indexer(ev["item_id"]).astype(np.int32),  # sorted by user: a user's events adjacent
                pd.factorize(ev["user_id"])[0].astype(np.int32),
            )
            for ev in log.parts(["user_id", "item_id"])
        ]
        blocks = []
        for lo, hi in _blocks(counts * 2 * c.window, PAIR_BUDGET):
            block = sum(
                (self._block(codes, user, lo, hi, n) for codes, user in coded),
                sp.csr_matrix((hi - lo, n), dtype=np.float32),
            )
            blocks.append(_top_per_row(block, counts[lo:hi], counts, c.alpha, c.neighbours))
        self._set(
            catalog.to_numpy(dtype=object),
            sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=np.float32),
        )
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
        return sp.csr_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
            shape=(hi - lo, n),
            dtype=np.float32,
        )  # duplicate pairs are summed

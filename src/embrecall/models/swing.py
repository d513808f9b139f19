"""The Swing channel (Alibaba's item-to-item recall beside ItemCF): two items are similar when
users who took both have little else in common, since a pair of near-identical users says little:

    sim(i, j) = sum over users u != v who both took i and j of  w_u * w_v / (alpha + |I_u & I_v|),
    w_u = (|I_u| + 5) ** -0.35

(I_u: u's items).  Each user keeps its last ``max_items`` distinct items and each item its last
``max_users`` users (by time), which bounds the work to about items x max_users^2 x the items those
users share, and lets a log of any size be counted part by part.  A user's candidates are scored
from the kept neighbour lists as ItemCF's are (``models.neighbours``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embrecall.config import SwingConfig
from embrecall.data.log import EventLog
from embrecall.models.neighbours import Neighbours

__all__ = ["Swing"]


def _last_per(key: np.ndarray, time: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the ``keep`` latest rows of each ``key`` value."""
    order = np.lexsort((-time, key))
    first = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    return order[rank < keep]


class Swing(Neighbours):
    name = "swing"

    def __init__(self, cfg: SwingConfig | None = None):
        super().__init__(cfg or SwingConfig())
        self.cfg: SwingConfig

    def _taken(self, log: EventLog, catalog: pd.Index) -> sp.csr_matrix:
        """(users, items) 0/1: each item's last ``max_users`` users, among each user's last
        ``max_items`` distinct items; kept bounded as the parts are read."""
        c = self.cfg
        users = items = times = np.zeros(0, np.int64)
        offset = 0
        for ev in log.parts(
            ["user_id", "item_id", "timestamp"]
        ):  # a part holds whole users: its codes, shifted, are the log's
            u = pd.factorize(ev["user_id"])[0].astype(np.int64) + offset
            offset = int(u.max()) + 1 if len(u) else offset
            i = catalog.get_indexer(ev["item_id"]).astype(np.int64)
            t = ev["timestamp"].to_numpy(np.int64)
            last = pd.DataFrame({"u": u, "i": i, "t": t}).drop_duplicates(["u", "i"], keep="last")  # sorted by time
            mine = _last_per(last["u"].to_numpy(), last["t"].to_numpy(), c.max_items)
            users, items = np.r_[users, last["u"].to_numpy()[mine]], np.r_[items, last["i"].to_numpy()[mine]]
            times = np.r_[times, last["t"].to_numpy()[mine]]
            kept = _last_per(items, times, c.max_users)
            users, items, times = users[kept], items[kept], times[kept]
        codes = np.unique(users, return_inverse=True)[1]
        return sp.csr_matrix(
            (np.ones(len(codes), np.float32), (codes, items)),
            shape=(int(codes.max()) + 1 if len(codes) else 0, len(catalog)),
        )

    def fit(self, log: EventLog, items: pd.DataFrame | None = None) -> Swing:
        c = self.cfg
        catalog = log.item_counts().index
        taken = self._taken(log, catalog)
        weight = (np.asarray(taken.sum(axis=1)).ravel() + 5.0) ** -0.35
        by_item = taken.T.tocsr()
        rows, cols, sims = [], [], []
        for i in range(len(catalog)):
            who = by_item.indices[by_item.indptr[i] : by_item.indptr[i + 1]]
            if len(who) < 2:
                continue
            theirs = taken[who]
            shared = np.unique(theirs.indices)  # the items these users took: the only candidates j
            a = theirs[:, shared].toarray()  # (m, c)
            pair = np.outer(weight[who], weight[who]) / (c.alpha + a @ a.T)  # (m, m): w_u w_v / (alpha + |I_u & I_v|)
            np.fill_diagonal(pair, 0.0)
            sim = ((pair @ a) * a).sum(axis=0)  # sum over u != v of pair[u, v] a[u, j] a[v, j]
            sim[shared == i] = 0.0
            top = np.argsort(-sim, kind="stable")[: c.neighbours]
            top = top[sim[top] > 0]
            rows.append(np.full(len(top), i))
            cols.append(shared[top])
            sims.append(sim[top].astype(np.float32))
        n = len(catalog)
        neighbours = sp.csr_matrix(
            (
                np.concatenate(sims) if sims else np.zeros(0, np.float32),
                (np.concatenate(rows) if rows else [], np.concatenate(cols) if cols else []),
            ),
            shape=(n, n),
            dtype=np.float32,
        )
        self._set(catalog.to_numpy(dtype=object), neighbours)
        return self

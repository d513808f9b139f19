"""Channels that keep, per item, an inverted list of its most similar items (ItemCF, Swing):
a user's candidates are scored by summing the lists of the last ``history`` items, the item p
steps back weighted ``decay**p``.  How the similarities are counted is each subclass's ``fit``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from embrecall.config import Config
from embrecall.errors import NotFittedError
from embrecall.index.protocol import fetch_depth
from embrecall.models.channel import Candidates, Listed, UserQuery, recent_first, take_top

__all__ = ["Neighbours"]


class Neighbours(Listed):
    """``cfg``: the channel's settings (``channels.<name>``), with ``history`` and ``decay``."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.item_ids_: np.ndarray | None = None
        self.neighbours_: sp.csr_matrix | None = None  # row i: the kept neighbours of item i and their sims

    def _set(self, item_ids: np.ndarray, neighbours: sp.csr_matrix) -> None:
        self.item_ids_, self.neighbours_ = item_ids, neighbours
        self._position = {item: i for i, item in enumerate(item_ids)}  # per-request lookups: no pandas

    def save(self, folder: Path) -> list[str]:
        """The inverted lists as CSR arrays (safetensors) and the item ids (Parquet), named after the channel."""
        nb = self._fitted()
        save_numpy(
            {
                "indptr": nb.indptr.astype(np.int64),
                "indices": nb.indices.astype(np.int64),
                "sims": nb.data.astype(np.float32),
            },
            str(folder / f"{self.name}.safetensors"),
        )
        pd.DataFrame({"item_id": self.item_ids_}).to_parquet(folder / f"{self.name}_items.parquet", index=False)
        return [f"{self.name}.safetensors", f"{self.name}_items.parquet"]

    @classmethod
    def load(cls, folder: Path, cfg: Config) -> Self:
        arrays = load_numpy(str(folder / f"{cls.name}.safetensors"))
        item_ids = pd.read_parquet(folder / f"{cls.name}_items.parquet")["item_id"].to_numpy(dtype=object)
        n = len(item_ids)
        model = cls(getattr(cfg.channels, cls.name))
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
            raise NotFittedError(f"{type(self).__name__} is not fitted yet. Call 'fit' with training events first.")
        return self.neighbours_

    def _scores(self, q: UserQuery) -> sp.coo_matrix:
        """(1, n) summed neighbour lists of the user's recent items, weighted by recency."""
        nb = self._fitted()
        recent = recent_first(q.history, self.cfg.history)
        pos = np.fromiter((self._position.get(i, -1) for i in recent), dtype=np.int64, count=len(recent))
        weights = self.cfg.decay ** np.arange(len(recent))
        known = pos >= 0
        return (
            sp.csr_matrix((weights[known], (np.zeros(known.sum(), int), pos[known])), shape=(1, nb.shape[0])) @ nb
        ).tocoo()

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

    def ranked(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        out = []
        item_ids = self.item_ids_ if self.item_ids_ is not None else np.zeros(0, dtype=object)
        for i, q in enumerate(queries):
            scores = self._scores(q)  # refuses an unfitted channel
            ex = exclude[i] if exclude is not None else ()
            order = np.argsort(-scores.data, kind="stable")[: fetch_depth(k, len(ex))]
            out.append(take_top(item_ids[scores.col[order]], scores.data[order], k, ex, self.name))
        return out

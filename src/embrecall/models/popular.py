"""The popularity channel: the most interacted items, the same for everyone (the baseline to beat)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.config import Config
from embrecall.data.log import EventLog
from embrecall.errors import NotFittedError
from embrecall.index.protocol import fetch_depth
from embrecall.models.channel import Candidates, Listed, UserQuery, take_top

__all__ = ["Popular"]


class Popular(Listed):
    """Items ranked by interaction count; ties keep the order in which items first appear."""

    name = "popular"

    def __init__(self) -> None:
        self.item_ids_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None

    def fit(self, log: EventLog, items: pd.DataFrame | None = None) -> Popular:
        """The log's events per item (its catalog order: the most first, ties as the log keeps them)."""
        counts = log.item_counts()
        self.item_ids_ = counts.index.to_numpy(dtype=object)
        self.counts_ = counts.to_numpy().astype(np.float32)
        return self

    def save(self, folder: Path) -> list[str]:
        """The ranked items and their counts (Parquet)."""
        self._fitted()
        pd.DataFrame({"item_id": self.item_ids_, "count": self.counts_}).to_parquet(
            folder / "popular.parquet", index=False
        )
        return ["popular.parquet"]

    @classmethod
    def load(cls, folder: Path, cfg: Config) -> Popular:
        table = pd.read_parquet(folder / "popular.parquet")
        model = cls()
        model.item_ids_ = table["item_id"].astype(str).to_numpy(dtype=object)
        model.counts_ = table["count"].to_numpy(dtype=np.float32)
        return model

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.item_ids_ is None or self.counts_ is None:
            raise NotFittedError("Popular is not fitted yet. Call 'fit' with training events first.")
        return self.item_ids_, self.counts_

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each item's interaction count, the same for every user (-inf for an item never seen)."""
        item_ids, counts = self._fitted()
        table = pd.Series(counts, index=pd.Index(item_ids, dtype=object))
        return [table.reindex(list(wanted)).fillna(-np.inf).to_numpy(np.float32) for wanted in items]

    def ranked(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        item_ids, counts = self._fitted()
        out = []
        for i, _ in enumerate(queries):
            ex = exclude[i] if exclude is not None else ()
            n = min(len(item_ids), fetch_depth(k, len(ex)))
            out.append(take_top(item_ids[:n], counts[:n], k, ex, self.name))
        return out

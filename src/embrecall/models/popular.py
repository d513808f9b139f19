"""The popularity channel: the most interacted items, the same for everyone (the baseline to beat)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from embrecall.errors import NotFittedError
from embrecall.models.channel import Candidates, UserQuery, take_top

__all__ = ["Popular"]


class Popular:
    """Items ranked by interaction count; ties keep the order in which items first appear."""

    name = "popular"

    def __init__(self) -> None:
        self.item_ids_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None

    def fit(self, events: pd.DataFrame) -> "Popular":
        counts = events["item_id"].value_counts(sort=False)  # first-appearance order
        order = np.argsort(-counts.to_numpy(), kind="stable")
        self.item_ids_ = counts.index.to_numpy(dtype=object)[order]
        self.counts_ = counts.to_numpy()[order].astype(np.float32)
        return self

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        if self.item_ids_ is None or self.counts_ is None:
            raise NotFittedError("Popular is not fitted yet. Call 'fit' with training events first.")
        out = []
        for i, _ in enumerate(queries):
            ex = exclude[i] if exclude is not None else ()
            n = min(len(self.item_ids_), k + len(ex))
            out.append(take_top(self.item_ids_[:n], self.counts_[:n], k, ex, self.name))
        return out

"""Training examples built as serving will see them: one per event, the user's history holding
only the events before it (most recent first), the event's own context, the user's profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from embrecall.config import HistoryFeature
from embrecall.data.split import sort_events
from embrecall.features import Encoders

__all__ = ["Examples"]


class Examples:
    """All training examples of one fit, with the item tower inputs of the whole catalog."""

    def __init__(self, events: pd.DataFrame, encoders: Encoders, users: pd.DataFrame | None,
                 items: pd.DataFrame | None):
        ev = sort_events(events)
        catalog = encoders.catalog_
        self.item_idx = catalog.get_indexer(ev["item_id"]).astype(np.int64)  # type: ignore[union-attr]
        self.seq = self.item_idx + 1  # history ids
        user = ev["user_id"].to_numpy()
        new_user = np.r_[True, user[1:] != user[:-1]]
        self.user_start = np.maximum.accumulate(np.where(new_user, np.arange(len(ev)), 0))
        self.history_len = encoders.history_len()
        self.user_inputs = encoders.encode_users(pd.Index(user, dtype=object), users, ev, history=None)
        self.history_features = [(f.name, f.max_len) for f in encoders.spec.user if isinstance(f, HistoryFeature)]
        self.item_inputs = {k: torch.from_numpy(v) for k, v in encoders.encode_items(items).items()}
        counts = np.bincount(self.item_idx, minlength=encoders.n_items).astype(np.float64)
        self.log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / len(ev))).float()  # (n_items,)
        self.item_counts = counts

    def __len__(self) -> int:
        return len(self.item_idx)

    def history(self, rows: np.ndarray) -> np.ndarray:
        """(B, L) item_idx + 1 of the events before each row, same user only, most recent first."""
        back = rows[:, None] - 1 - np.arange(self.history_len)[None, :]  # (B, L)
        valid = back >= self.user_start[rows][:, None]
        return np.where(valid, self.seq[np.maximum(back, 0)], 0)

    def user_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(v[rows]) for k, v in self.user_inputs.items()}
        if self.history_features:
            hist = self.history(rows)
            for name, max_len in self.history_features:
                batch[name] = torch.from_numpy(np.ascontiguousarray(hist[:, :max_len]))
        return batch

    def item_batch(self, item_idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(item_idx)
        return {k: v[idx] for k, v in self.item_inputs.items()}

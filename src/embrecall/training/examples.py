"""Training examples built as serving will see them: one per event, the user's history holding
only the events before it (most recent first), the event's own context, the user's profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from embrecall.config import ITEM_HISTORY, SequenceFeature
from embrecall.data.split import sort_events
from embrecall.errors import DataError
from embrecall.features import Encoders
from embrecall.training.negatives import ExposureSampler

__all__ = ["Catalog", "Examples", "user_bounds", "walk_units"]


def user_bounds(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of rows sorted by user: each row's user's first row, and one past its last."""
    new_user = np.r_[True, users[1:] != users[:-1]]
    start = np.maximum.accumulate(np.where(new_user, np.arange(len(users)), 0))
    bounds = np.r_[np.flatnonzero(new_user)[1:], len(users)]
    return start, bounds[np.cumsum(new_user) - 1]


def walk_units(
    user_start: np.ndarray, user_end: np.ndarray, timestamp: np.ndarray, window: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """What an epoch walks and when each unit ends: every event row, or (``window``: a sequence
    feature's ``max_len``) the first row of each user's runs of ``window`` consecutive targets
    (SASRec-style training) and its last target's time."""
    rows = np.arange(len(timestamp))
    if window is None:
        return rows, timestamp
    starts = np.flatnonzero((rows - user_start) % window == 0)
    last = np.minimum(starts + window - 1, user_end[starts] - 1)
    return starts, timestamp[last]


def item_groups(items: pd.DataFrame | None, column: str, catalog: pd.Index) -> np.ndarray:
    """(n_items,) group code of each catalog item (first value of a multi-valued column), -1 if none."""
    if items is None or column not in items.columns:
        raise DataError(
            f"train.negatives.hard_column '{column}' is not an item attribute; the item table has "
            f"{[] if items is None else list(items.columns)}",
            column=column,
        )
    values = items[column].reindex(catalog).astype(object).where(lambda v: v.notna(), None)
    first = values.map(lambda v: None if v in (None, "") else str(v).split("|")[0])
    codes, _ = pd.factorize(first)
    return codes.astype(np.int64)


class Catalog:
    """The item side of a fit: tower inputs of every catalog item, its training events and its
    hard-negative group (``group_column``), shared by all examples (a sharded log's shards each
    bring their own examples, never their own counts)."""

    def __init__(
        self, encoders: Encoders, items: pd.DataFrame | None, counts: np.ndarray, group_column: str | None = None
    ):
        self.item_inputs = {k: torch.from_numpy(v) for k, v in encoders.encode_items(items).items()}
        self.item_counts = np.zeros(encoders.n_items)
        self.item_counts[: len(counts)] = counts
        self.events = max(float(counts.sum()), 1.0)
        self.log_q = torch.from_numpy(np.log(np.maximum(self.item_counts, 1.0) / self.events)).float()  # (n_items,)
        self.groups = item_groups(items, group_column, encoders.catalog) if group_column else None
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> Catalog:
        """The item inputs and logQ moved to where training runs (``train.device``)."""
        self.device = device
        self.item_inputs = {k: v.to(device) for k, v in self.item_inputs.items()}
        self.log_q = self.log_q.to(device)
        return self

    def item_batch(self, item_idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(item_idx).to(self.device)
        return {k: v[idx] for k, v in self.item_inputs.items()}


class Examples:
    """Training examples of a log (or of one shard of it), with the item side of the whole catalog."""

    def __init__(
        self,
        events: pd.DataFrame,
        encoders: Encoders,
        users: pd.DataFrame | None,
        items: pd.DataFrame | None,
        exposures: pd.DataFrame | None = None,
        group_column: str | None = None,
        catalog: Catalog | None = None,
    ):
        ev = sort_events(events)
        index = encoders.catalog
        self.item_idx = index.get_indexer(ev["item_id"]).astype(np.int64)
        self.seq = self.item_idx + 1  # history ids
        user = ev["user_id"].to_numpy()
        self.user_start, self.user_end = user_bounds(user)
        self.history_len = encoders.history_len()
        self.timestamp = ev["timestamp"].to_numpy()
        self.user_inputs = encoders.encode_users(pd.Index(user, dtype=object), users, ev, history=None)
        self.history_features = [(f.name, f.max_len) for f in encoders.spec.user if isinstance(f, ITEM_HISTORY)]
        self.sequence = next(((f.name, f.max_len) for f in encoders.spec.user if isinstance(f, SequenceFeature)), None)
        self.catalog = catalog or Catalog(
            encoders, items, np.bincount(self.item_idx, minlength=encoders.n_items), group_column
        )
        self.user_code, user_index = pd.factorize(ev["user_id"])
        self.exposure = self._exposure(ev, exposures, pd.Index(user_index, dtype=object), index)

    @staticmethod
    def _exposure(
        ev: pd.DataFrame, exposures: pd.DataFrame | None, users: pd.Index, catalog: pd.Index
    ) -> ExposureSampler | None:
        """Items each training user was shown before their last training event and never clicked."""
        if exposures is None or len(exposures) == 0:
            return None
        last = ev.groupby("user_id", sort=False)["timestamp"].max()
        shown = exposures[exposures["timestamp"].to_numpy() <= last.reindex(exposures["user_id"]).to_numpy()]
        clicked = pd.MultiIndex.from_frame(ev[["user_id", "item_id"]])
        shown = shown[~pd.MultiIndex.from_frame(shown[["user_id", "item_id"]]).isin(clicked)]
        u = users.get_indexer(shown["user_id"])
        i = catalog.get_indexer(shown["item_id"])
        keep = (u >= 0) & (i >= 0)
        pairs = pd.DataFrame({"u": u[keep], "i": i[keep]}).drop_duplicates().sort_values(["u", "i"])
        indptr = np.r_[0, np.cumsum(np.bincount(pairs["u"].to_numpy(), minlength=len(users)))]
        return ExposureSampler(indptr.astype(np.int64), pairs["i"].to_numpy(np.int64))

    def log_inclusion(self, item_idx: np.ndarray, draws: int) -> torch.Tensor:
        """Log of each item's chance to be among ``draws`` positives drawn by training frequency
        (the logQ correction when every distinct positive of a batch is one candidate)."""
        q = self.catalog.item_counts[item_idx] / self.catalog.events
        return torch.from_numpy(np.log(-np.expm1(draws * np.log1p(-np.minimum(q, 1.0 - 1e-12))))).float()

    def __len__(self) -> int:
        return len(self.item_idx)

    def history(self, rows: np.ndarray, length: int | None = None) -> np.ndarray:
        """(B, L) item_idx + 1 of the events before each row, same user only, most recent first
        (L: ``length``, default the longest history feature)."""
        back = rows[:, None] - 1 - np.arange(length or self.history_len)[None, :]  # (B, L)
        valid = back >= self.user_start[rows][:, None]
        return np.where(valid, self.seq[np.maximum(back, 0)], 0)

    def user_batch(self, rows: np.ndarray, skip: str | None = None) -> dict[str, torch.Tensor]:
        """User tower inputs of event rows (``skip``: a history feature the caller fills itself)."""
        batch = {k: torch.from_numpy(v[rows]) for k, v in self.user_inputs.items()}
        wanted = [(name, n) for name, n in self.history_features if name != skip]
        if wanted:
            hist = self.history(rows, max(n for _, n in wanted))
            for name, max_len in wanted:
                batch[name] = torch.from_numpy(np.ascontiguousarray(hist[:, :max_len]))
        return batch

    def units(self, windowed: bool) -> tuple[np.ndarray, np.ndarray]:
        """What an epoch walks (event rows, or window starts) and when each one ends (``walk_units``)."""
        window = None
        if windowed:
            if self.sequence is None:
                raise ValueError("windows need a sequence feature in the user tower")
            window = self.sequence[1]
        return walk_units(self.user_start, self.user_end, self.timestamp, window)

    def window_batch(self, starts: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor, np.ndarray]:
        """User inputs, state positions and target rows of the windows starting at ``starts``.

        The sequence input holds, per window, the items before its last target (most recent first,
        none before the window's first target's history item); the state of the position after
        each target's previous item is that target's user vector.  Returns ``(inputs, at, rows)``
        for ``Tower.forward(inputs, at)``: N target rows and their flat positions in (W * L).
        """
        name, L = self.sequence  # type: ignore[misc]
        n = np.minimum(starts + L, self.user_end[starts]) - starts  # (W,) targets per window
        j = np.arange(L)[None, :]
        valid = j < n[:, None]  # (W, L): window position j has a target; input column j has an item in view
        back = (starts + n)[:, None] - 2 - j  # (W, L) row of each input, most recent first
        ids = np.where(valid & (back >= self.user_start[starts][:, None]), self.seq[np.maximum(back, 0)], 0)
        rows = (starts[:, None] + j)[valid]
        at = (np.arange(len(starts))[:, None] * L + L - n[:, None] + j)[valid]
        batch = self.user_batch(rows, skip=name)
        batch[name] = torch.from_numpy(ids)
        return batch, torch.from_numpy(at), rows

"""Train / validation / test splits of BENCHMARK.md: temporal leave-last-out, and a global time cut-off."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from embrecall.config import SplitConfig
from embrecall.data.dataset import Dataset
from embrecall.data.timestamps import parse_timestamps
from embrecall.errors import ConfigError

__all__ = ["Split", "leave_last_out", "time_split", "cold_item_split", "split_dataset", "sort_events"]


@dataclass
class Split:
    """Events of each part, each sorted by user then time (ties in file order).

    ``train``: what a model is fitted on while hyper-parameters are chosen.
    ``valid``: one held-out target event per user, predicted from ``train``.
    ``train_full``: what the reported model is fitted on (``train`` + validation events).
    ``test``: one held-out target event per user, predicted from ``train_full``; never trained on.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    train_full: pd.DataFrame
    test: pd.DataFrame
    # A split of some users of a larger log (``Shards.sample_split``): the whole log's events per
    # item of ``train`` and ``train_full``, most first, so the catalog is the log's, not the sample's.
    item_counts: dict[str, pd.Series] | None = field(default=None, repr=False)

    def ranked_items(self, history: str) -> pd.Index:
        """The items of ``history`` (``train`` or ``train_full``), the most frequent first."""
        if self.item_counts is not None:
            return self.item_counts[history].index
        return getattr(self, history)["item_id"].value_counts().index

    def validation_view(self) -> Split:
        """The split as a tuner must see it: fitted on ``train`` only, its "test" targets the
        validation ones, so that nothing chosen with it has looked at a test event."""
        counts = None if self.item_counts is None else {**self.item_counts, "train_full": self.item_counts["train"]}
        return Split(train=self.train, valid=self.valid, train_full=self.train, test=self.valid, item_counts=counts)

    def sample_validation(self, users: int, seed: int) -> Split:
        """The split with the validation targets of ``users`` users drawn at random (fixed by
        ``seed``): per-epoch validation costs that many users, not the whole log's."""
        if len(self.valid) <= users:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self.valid), users, replace=False))
        return Split(
            train=self.train,
            valid=self.valid.iloc[rows].reset_index(drop=True),
            train_full=self.train_full,
            test=self.test,
            item_counts=self.item_counts,
        )

    def summary(self) -> str:
        return (
            f"train {len(self.train):,} events, validation {len(self.valid):,} users, "
            f"train+validation {len(self.train_full):,} events, test {len(self.test):,} users"
        )


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sort by user then timestamp, keeping file order among equal timestamps (a stable sort)."""
    users = pd.factorize(events["user_id"], sort=True)[0]  # codes in id order: integers sort fast, strings slowly
    order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy(), users))
    return events.iloc[order].reset_index(drop=True)


def leave_last_out(events: pd.DataFrame) -> Split:
    """Per user with >= 3 events: last -> test, the one before -> validation, the rest -> train."""
    ordered = sort_events(events)
    users = ordered["user_id"]
    size = users.map(users.value_counts()).to_numpy()
    rank = ordered.groupby("user_id", sort=False).cumcount().to_numpy()
    eligible = size >= 3
    is_test = eligible & (rank == size - 1)
    is_valid = eligible & (rank == size - 2)
    return Split(
        train=ordered[~is_test & ~is_valid].reset_index(drop=True),
        valid=ordered[is_valid].reset_index(drop=True),
        train_full=ordered[~is_test].reset_index(drop=True),
        test=ordered[is_test].reset_index(drop=True),
    )


def _first_per_user(events: pd.DataFrame, known_users: pd.Series) -> pd.DataFrame:
    first = events.drop_duplicates("user_id", keep="first")
    return first[first["user_id"].isin(known_users)].reset_index(drop=True)


def time_split(events: pd.DataFrame, valid_start: int, test_start: int) -> Split:
    """Global cut-offs: events before ``valid_start`` train; each user's first event in
    [valid_start, test_start) is its validation target, its first event from ``test_start`` on its
    test target (only users with earlier history get a target)."""
    if valid_start >= test_start:
        raise ConfigError(f"split.valid_start ({valid_start}) must be before split.test_start ({test_start})")
    ordered = sort_events(events)
    ts = ordered["timestamp"].to_numpy()
    train = ordered[ts < valid_start].reset_index(drop=True)
    train_full = ordered[ts < test_start].reset_index(drop=True)
    valid = _first_per_user(ordered[(ts >= valid_start) & (ts < test_start)], train["user_id"])
    test = _first_per_user(ordered[ts >= test_start], train_full["user_id"])
    return Split(train=train, valid=valid, train_full=train_full, test=test)


def _cutoff(value: str, field: str) -> int:
    return int(parse_timestamps(pd.Series([value]), "auto", file="config", column=field, first_line=1)[0])


def split_dataset(data: Dataset, cfg: SplitConfig) -> Split:
    """Split ``data`` as the config says."""
    if cfg.kind == "leave_last_out":
        return leave_last_out(data.events)
    return time_split(
        data.events,
        _cutoff(str(cfg.valid_start), "split.valid_start"),
        _cutoff(str(cfg.test_start), "split.test_start"),
    )


def cold_item_split(events: pd.DataFrame, test_start: int) -> Split:
    """For cold-item evaluation: train on events before ``test_start``; the targets are each
    user's first interaction with every item that has no event before ``test_start`` (users
    with earlier history only).  There is no validation part."""
    ordered = sort_events(events)
    ts = ordered["timestamp"].to_numpy()
    before = ordered[ts < test_start].reset_index(drop=True)
    after = ordered[ts >= test_start]
    cold = after[~after["item_id"].isin(before["item_id"]) & after["user_id"].isin(before["user_id"])]
    test = cold.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)
    return Split(train=before, valid=test.iloc[:0], train_full=before, test=test)

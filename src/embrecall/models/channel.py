"""The one question every recall channel answers: top-k items for this user context, excluding these.

Evaluation, channel merging and serving only ever talk to channels through ``recommend``,
so a two-tower model, popularity, item2vec or ItemCF are interchangeable there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["History", "user_histories", "recent_first", "UserQuery", "Candidates", "Channel", "StoredChannel",
           "Scorer", "take_top", "fetch_depth"]

History = tuple[str, ...]
"""A user's items, most recent last: what training examples, evaluation queries, the bundle's
user table, user events and the serving cache key all hold (``recent_first`` reads it backwards)."""


def user_histories(events: pd.DataFrame) -> dict[str, History]:
    """Every user's ``History`` in ``events`` (by timestamp, file order among equal ones)."""
    order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy()))
    ordered = events.iloc[order]
    return {str(u): tuple(items) for u, items in ordered.groupby("user_id", sort=True)["item_id"]}


def recent_first(history: History, n: int) -> list[str]:
    """The last ``n`` items of a history, the most recent first (how every channel weighs them)."""
    return list(history[-n:])[::-1] if n > 0 else []


@dataclass(frozen=True)
class UserQuery:
    """What is known about a user at request time.

    ``history``: the user's items, most recent last (a ``History``).
    ``context``: event-level values such as ``timestamp`` (unix seconds) or ``city``.
    """

    user_id: str
    history: History = ()
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Candidates:
    """One user's recalled items, best first, with scores and the channel that found each item
    (merged results mix channels; scores are comparable only within one channel)."""

    item_ids: list[str]
    scores: np.ndarray
    channels: list[str]


class Channel(Protocol):
    name: str

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        """Top-``k`` items for each query, best first, never one of that query's ``exclude`` items.

        Fewer than ``k`` come back only when fewer than ``k`` eligible items exist.
        """
        ...


class StoredChannel(Channel, Protocol):
    """A channel a bundle carries into the service: it writes its own files and reads them back."""

    def save(self, folder: Path) -> list[str]:
        """Write the channel into ``folder``; returns the file names written (the manifest lists them)."""
        ...

    @classmethod
    def load(cls, folder: Path, cfg: Any) -> "StoredChannel":
        """Read back what ``save`` wrote; ``cfg`` is the bundle's whole ``Config``."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """A channel that can score any item for a query (what AUC against sampled negatives needs)."""

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each query's scores of its items, higher ranking first; an item the channel does not know
        scores -inf."""
        ...


def fetch_depth(k: int, excluded: int, filtered: bool = False) -> int:
    """How many items to ask a list for so that ``k`` survive: everything excluded may be among
    them, and a filter may drop most of the rest (callers that still come up short ask again
    for four times as many)."""
    return (4 * k if filtered else k) + excluded


def take_top(item_ids: np.ndarray, scores: np.ndarray, k: int, exclude: Collection[str], channel: str) -> Candidates:
    """Keep the first ``k`` of a best-first list whose ids are not excluded (None ids are padding)."""
    keep_ids: list[str] = []
    keep_scores: list[float] = []
    for item, score in zip(item_ids, scores):
        if item is None or item in exclude:
            continue
        keep_ids.append(item)
        keep_scores.append(float(score))
        if len(keep_ids) == k:
            break
    return Candidates(keep_ids, np.asarray(keep_scores, dtype=np.float32), [channel] * len(keep_ids))
